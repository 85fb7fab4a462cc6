//! Acceptance 5 at the store level: an unreachable database (bounded retries, a clear error
//! naming host:port), a wrong password (clear, no password in it), a schema from a newer
//! certfleet (refused naming both versions); the password never shows in locations or
//! errors.

mod common;

use std::time::{Duration, Instant};

use certfleet_store::{StateStore, StoreError};
use certfleet_store_postgres::{PgOptions, PgStore, SCHEMA_VERSION};
use certfleet_testenv::postgres::{PG_PASSWORD, PG_USER};

#[tokio::test]
async fn unreachable_database_gives_up_after_bounded_retries() {
    // Nothing listens on a port just found free.
    let port = certfleet_testenv::free_tcp_port().expect("port");
    let url = format!("postgres://fleet:topsecret@127.0.0.1:{port}/certs?sslmode=disable");
    let options = PgOptions {
        connect_attempts: Some(3),
        ..PgOptions::default()
    };
    let started = Instant::now();
    let err = PgStore::open(&url, &options)
        .await
        .expect_err("nothing listens there");
    let took = started.elapsed();
    let msg = format!(
        "{err}: {}",
        std::error::Error::source(&err)
            .map(|s| s.to_string())
            .unwrap_or_default()
    );
    assert!(matches!(err, StoreError::Database { .. }), "{msg}");
    assert!(
        msg.contains(&format!("127.0.0.1:{port}")),
        "names host:port: {msg}"
    );
    assert!(msg.contains("after 3 attempts"), "bounded retries: {msg}");
    assert!(!msg.contains("topsecret"), "no password: {msg}");
    // Backoff 0.2 s + 0.4 s between the three attempts; a refused connection is quick.
    assert!(took >= Duration::from_millis(550), "backed off: {took:?}");
    assert!(took < Duration::from_secs(10), "bounded: {took:?}");
}

#[tokio::test]
async fn wrong_password_newer_schema_and_redaction() {
    let Some(cluster) = common::Cluster::start().await else {
        return;
    };
    let url = cluster.fresh_db();
    let db = common::db_name(&url).to_owned();

    // Wrong password: refused at once (no retries), clearly, without the password.
    let wrong = format!(
        "postgres://{PG_USER}:not-the-password@127.0.0.1:{}/{db}?sslmode=disable",
        cluster.pg.port()
    );
    let started = Instant::now();
    let err = PgStore::open(&wrong, &PgOptions::default())
        .await
        .expect_err("wrong password");
    let msg = format!(
        "{err}: {}",
        std::error::Error::source(&err)
            .map(|s| s.to_string())
            .unwrap_or_default()
    );
    assert!(msg.contains("password authentication failed"), "{msg}");
    assert!(
        msg.contains(&format!("refused user \"{PG_USER}\"")),
        "{msg}"
    );
    assert!(!msg.contains("not-the-password"), "{msg}");
    assert!(msg.contains(":***@"), "location redacted: {msg}");
    assert!(started.elapsed() < Duration::from_secs(5), "not retried");

    // The right password: location never shows it.
    let store = cluster.open(&url).await;
    let location = store.location();
    assert!(location.contains(":***@127.0.0.1:"), "{location}");
    assert!(!location.contains(PG_PASSWORD), "{location}");
    assert!(!format!("{store:?}").contains(PG_PASSWORD));

    // The password from a file instead of the URL.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("pgpass");
    std::fs::write(&file, format!("{PG_PASSWORD}\n")).expect("write");
    let options = PgOptions {
        password_file: Some(file),
        ..PgOptions::default()
    };
    if std::env::var_os("PGPASSWORD").is_none() {
        PgStore::open(&cluster.pg.url_without_password(&db), &options)
            .await
            .expect("password from the file");
    }

    // A schema from a newer certfleet is refused, naming both versions.
    store
        .force_schema_version(SCHEMA_VERSION + 41)
        .await
        .expect("force");
    let err = PgStore::open(&url, &PgOptions::default())
        .await
        .expect_err("newer schema");
    match &err {
        StoreError::SchemaTooNew {
            found, supported, ..
        } => {
            assert_eq!((*found, *supported), (SCHEMA_VERSION + 41, SCHEMA_VERSION));
        }
        other => panic!("expected SchemaTooNew, got {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("schema version {}", SCHEMA_VERSION + 41))
            && msg.contains(&format!("version {SCHEMA_VERSION} that this certfleet")),
        "{msg}"
    );
    assert!(!msg.contains(PG_PASSWORD), "{msg}");

    // A database that does not exist: the server's answer, not a retry loop.
    let missing = cluster.pg.url("no_such_db");
    let err = PgStore::open(&missing, &PgOptions::default())
        .await
        .expect_err("missing database");
    let msg = format!(
        "{err}: {}",
        std::error::Error::source(&err)
            .map(|s| s.to_string())
            .unwrap_or_default()
    );
    assert!(msg.contains("no_such_db"), "{msg}");
    assert!(!msg.contains(PG_PASSWORD), "{msg}");
}
