//! TLS to PostgreSQL (issue 14, acceptance 5): a private cluster with `ssl = on` and a
//! certificate for 127.0.0.1 from a fresh CA. `verify-full` with that root works (the
//! session is encrypted); a wrong root fails at once and says why; `verify-ca` accepts a
//! certificate for another name where `verify-full` refuses it; `require` encrypts.

mod common;

use std::time::{Duration, Instant};

use certfleet_store::StateStore;
use certfleet_store_postgres::{PgOptions, PgStore};
use certfleet_testenv::postgres::new_ca;

fn with(url: &str, params: &str) -> String {
    url.replace("sslmode=disable", params)
}

#[tokio::test]
async fn verify_full_works_and_a_wrong_root_fails_clearly() {
    let Some(cluster) = common::Cluster::start().await else {
        return;
    };
    let root = cluster.pg.enable_tls(&["127.0.0.1"]).expect("TLS on");
    let url = cluster.fresh_db();
    assert!(url.contains("sslmode=disable"), "{url}");
    let full = with(
        &url,
        &format!("sslmode=verify-full&sslrootcert={}", root.display()),
    );
    let store = PgStore::open(&full, &PgOptions::default())
        .await
        .expect("verify-full with the right root");
    assert!(store.location().contains("sslmode=verify-full"));
    assert!(store.batches().await.expect("a query over TLS").is_empty());
    let db = common::db_name(&url).to_owned();
    let encrypted = cluster
        .pg
        .psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE s.ssl AND a.datname = '{db}' AND a.application_name = 'certfleet'"
            ),
        )
        .expect("psql");
    assert_ne!(encrypted, "0", "the store's sessions are encrypted");

    // A root that did not sign the server's certificate: refused at once, clearly.
    let (other, _) = new_ca("some other CA").expect("CA");
    let wrong = cluster.pg.dir().join("wrong-root.pem");
    std::fs::write(&wrong, other).expect("write");
    let started = Instant::now();
    let err = PgStore::open(
        &with(
            &url,
            &format!("sslmode=verify-full&sslrootcert={}", wrong.display()),
        ),
        &PgOptions::default(),
    )
    .await
    .expect_err("wrong root");
    let msg = chain(&err);
    assert!(msg.contains("TLS to PostgreSQL"), "{msg}");
    assert!(msg.contains("UnknownIssuer"), "names the cause: {msg}");
    assert!(msg.contains("sslrootcert"), "names what to check: {msg}");
    assert!(started.elapsed() < Duration::from_secs(5), "no retries");
    // A missing root file is named.
    let err = PgStore::open(
        &with(
            &url,
            "sslmode=verify-full&sslrootcert=/nonexistent/root.pem",
        ),
        &PgOptions::default(),
    )
    .await
    .expect_err("missing root");
    let msg = chain(&err);
    assert!(msg.contains("/nonexistent/root.pem"), "{msg}");
    // `require` encrypts without checking the server.
    PgStore::open(&with(&url, "sslmode=require"), &PgOptions::default())
        .await
        .expect("require");
}

#[tokio::test]
async fn verify_ca_ignores_the_name_verify_full_does_not() {
    let Some(cluster) = common::Cluster::start().await else {
        return;
    };
    let root = cluster.pg.enable_tls(&["db.example"]).expect("TLS on");
    let url = cluster.fresh_db();
    // The server still takes plain connections (pg_hba's `host`): sslmode=disable works.
    cluster.open(&url).await;
    PgStore::open(
        &with(
            &url,
            &format!("sslmode=verify-ca&sslrootcert={}", root.display()),
        ),
        &PgOptions::default(),
    )
    .await
    .expect("verify-ca: the chain is trusted");
    let err = PgStore::open(
        &with(
            &url,
            &format!("sslmode=verify-full&sslrootcert={}", root.display()),
        ),
        &PgOptions::default(),
    )
    .await
    .expect_err("verify-full: the certificate names db.example, not 127.0.0.1");
    let msg = chain(&err);
    assert!(msg.contains("not valid for name"), "{msg}");
}

/// The error's text with its source (what the CLI shows).
fn chain(err: &certfleet_store::StoreError) -> String {
    format!(
        "{err}: {}",
        std::error::Error::source(err)
            .map(|s| s.to_string())
            .unwrap_or_default()
    )
}

/// A server that requires client certificates (`hostssl … clientcert=verify-full` and
/// `ssl_ca_file`): `sslcert`/`sslkey` from its CA work (the server sees the certificate);
/// no certificate, one from another CA, or one for another user fail at once, naming the
/// options to fix.
#[tokio::test]
async fn client_certificates_work_and_a_missing_or_wrong_one_fails_clearly() {
    use certfleet_testenv::postgres::{PG_USER, untrusted_client_cert};

    let Some(cluster) = common::Cluster::start().await else {
        return;
    };
    let root = cluster.pg.enable_tls(&["127.0.0.1"]).expect("TLS on");
    let url = cluster.fresh_db();
    let db = common::db_name(&url).to_owned();
    let client_ca = cluster.pg.require_client_certs(&db).expect("client certs");
    let verify = format!("sslmode=verify-full&sslrootcert={}", root.display());
    let with_cert = |cert: &std::path::Path, key: &std::path::Path| {
        with(
            &url,
            &format!(
                "{verify}&sslcert={}&sslkey={}",
                cert.display(),
                key.display()
            ),
        )
    };

    let (cert, key) = client_ca.issue(PG_USER, "good").expect("client cert");
    let store = PgStore::open(&with_cert(&cert, &key), &PgOptions::default())
        .await
        .expect("a client certificate from the trusted CA");
    assert!(store.batches().await.expect("a query").is_empty());
    let presented = cluster
        .pg
        .psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.datname = '{db}' AND s.client_dn = '/CN={PG_USER}'"
            ),
        )
        .expect("psql");
    assert_ne!(presented, "0", "the server saw the client certificate");

    // No client certificate: refused by pg_hba.conf, said so, naming the options.
    let started = Instant::now();
    let err = PgStore::open(&with(&url, &verify), &PgOptions::default())
        .await
        .expect_err("no client certificate");
    let msg = chain(&err);
    assert!(msg.contains("requires a client certificate"), "{msg}");
    assert!(msg.contains("no sslcert"), "{msg}");
    assert!(msg.contains("set sslcert and sslkey"), "{msg}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no retries: {msg}"
    );

    // A certificate from a CA the server does not trust: the handshake is refused.
    let (other, other_key) = untrusted_client_cert(cluster.pg.dir(), PG_USER).expect("cert");
    let started = Instant::now();
    let err = PgStore::open(&with_cert(&other, &other_key), &PgOptions::default())
        .await
        .expect_err("untrusted client certificate");
    let msg = chain(&err);
    assert!(msg.contains("client certificate"), "{msg}");
    assert!(
        msg.contains(&format!("sslcert={}", other.display())),
        "{msg}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no retries: {msg}"
    );

    // Trusted, but for another user: `clientcert=verify-full` compares the CN; the server
    // only says the password failed, so the error names both causes.
    let (someone, someone_key) = client_ca.issue("someone-else", "other-user").expect("cert");
    let err = PgStore::open(&with_cert(&someone, &someone_key), &PgOptions::default())
        .await
        .expect_err("certificate for another user");
    let msg = chain(&err);
    assert!(
        msg.contains(&format!("sslcert={}", someone.display())),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("{PG_USER:?}")),
        "names the user: {msg}"
    );
    assert!(msg.contains("CN"), "names the check: {msg}");

    // A key that is not the certificate's, and a certificate without its key.
    let err = PgStore::open(&with_cert(&cert, &other_key), &PgOptions::default())
        .await
        .expect_err("key of another certificate");
    let msg = chain(&err);
    assert!(
        msg.contains(&format!("sslkey={}", other_key.display()))
            && msg.contains(&format!("sslcert={}", cert.display())),
        "names both files: {msg}"
    );
    let err = PgStore::open(
        &with(&url, &format!("{verify}&sslcert={}", cert.display())),
        &PgOptions::default(),
    )
    .await
    .expect_err("sslcert without sslkey");
    assert!(
        chain(&err).contains("sslcert and sslkey go together"),
        "{err}"
    );
}
