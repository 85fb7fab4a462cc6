//! Issuance: http-01 by the built-in server and by webroot, badNonce retries, preferred chain.

use certfleet_testenv::{PebbleOptions, StaticServer, private_key_spki_der, spki_matches_jwk};
use serde_json::Value;

use crate::common::{Env, check_issued, mode};

const THREE: [&str; 3] = [
    "www.fleet-a.certfleet.test",
    "fleet-a.certfleet.test",
    "api.fleet-a.certfleet.test",
];

#[tokio::test]
async fn issue_three_names_by_http01_standalone_writes_verifiable_cert_and_0600_key() {
    let Some(env) = Env::start(PebbleOptions::default()).await else {
        return;
    };
    env.register_account().await;
    env.issue_standalone(&THREE, "out", &[]).await.assert_ok();

    let out = env.path("out");
    let root = env.issuing_root_file(0).await;
    let (leaf, meta) = check_issued(&out, &THREE, &root);

    let privkey = out.join("privkey.pem");
    assert_eq!(mode(&privkey), 0o600, "privkey.pem mode");
    assert!(
        meta["key_ref"]
            .as_str()
            .is_some_and(|r| r.ends_with("privkey.pem")),
        "meta.key_ref names the generated privkey.pem: {meta}"
    );
    assert_eq!(
        private_key_spki_der(&privkey).expect("openssl reads privkey.pem"),
        leaf.spki_der,
        "the leaf certifies privkey.pem's public key"
    );

    assert_eq!(
        meta["account_url"].as_str(),
        Some(env.account_url().await.as_str()),
        "meta.account_url"
    );
    assert_eq!(
        meta["directory"].as_str(),
        Some(env.pebble.directory_url().as_str()),
        "meta.directory"
    );
    let status = env
        .pebble
        .cert_status(&leaf.serial_hex)
        .await
        .expect("status");
    assert_eq!(status["Status"], "Valid", "{status}");
}

#[tokio::test]
async fn issue_by_webroot_with_given_key_uses_that_key_and_serves_tokens_from_webroot() {
    let Some(env) = Env::start(PebbleOptions::default()).await else {
        return;
    };
    let account_key = env.register_account().await;
    let cert_key = env.generate_key("cert-key.pem", "es384").await;
    let webroot = env.path("webroot");
    std::fs::create_dir_all(&webroot).expect("mkdir webroot");
    let server = StaticServer::start(&webroot, env.pebble.http01_port()).expect("static server");

    let out = env.path("out");
    let out_s = out.to_string_lossy().into_owned();
    let webroot_s = webroot.to_string_lossy().into_owned();
    let mut args = vec!["issue"];
    for n in THREE {
        args.extend(["--name", n]);
    }
    args.extend([
        "--key",
        &cert_key,
        "--challenge",
        "http-01",
        "--webroot",
        &webroot_s,
        "--out",
        &out_s,
    ]);
    env.run(&args).await.assert_ok();

    let root = env.issuing_root_file(0).await;
    let (leaf, meta) = check_issued(&out, &THREE, &root);

    let show = env.run(&["key", "show", &cert_key]).await;
    show.assert_ok();
    let jwk = show.json()["jwk"].clone();
    assert!(
        spki_matches_jwk(&leaf.spki_der, &jwk).expect("comparable key"),
        "leaf key is not the --key key: {jwk}"
    );
    let account = env.run(&["key", "show", &account_key]).await;
    account.assert_ok();
    assert!(
        !spki_matches_jwk(&leaf.spki_der, &account.json()["jwk"]).expect("comparable key"),
        "the leaf must not certify the account key"
    );
    assert!(
        !out.join("privkey.pem").exists(),
        "privkey.pem must not be written with --key"
    );
    let key_ref_file = std::fs::read_to_string(out.join("key.ref")).expect("key.ref written");
    assert_eq!(key_ref_file.trim(), cert_key, "key.ref names the key");
    assert_eq!(
        meta["key_ref"].as_str(),
        Some(cert_key.as_str()),
        "meta.key_ref"
    );

    let fetched: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/.well-known/acme-challenge/") && r.status == 200)
        .collect();
    assert!(
        fetched.len() >= THREE.len(),
        "Pebble should fetch one token per name from the webroot, saw {:?}",
        server.requests()
    );
}

#[tokio::test]
async fn issue_succeeds_when_pebble_rejects_40_percent_of_nonces() {
    let Some(env) = Env::start(PebbleOptions::default().nonce_reject(40)).await else {
        return;
    };
    env.register_account().await;
    let names = ["nonce.certfleet.test", "www.nonce.certfleet.test"];
    env.issue_standalone(&names, "out", &[]).await.assert_ok();
    let root = env.issuing_root_file(0).await;
    check_issued(&env.path("out"), &names, &root);
    // Pebble confirms the setting; with 40 % of a dozen or so JWS requests rejected, the
    // chance that no badNonce retry happened is about 0.6^12 ≈ 0.2 %.
    let log = std::fs::read_to_string(env.pebble.work_dir().join("pebble.log")).expect("log");
    assert!(
        log.contains("Configured to reject 40% of good nonces"),
        "PEBBLE_WFE_NONCEREJECT=40 did not reach pebble"
    );
}

fn top_issuer_cn(chain: &std::path::Path) -> String {
    let certs = certfleet_testenv::read_certs(chain).expect("chain.pem parses");
    certs
        .last()
        .and_then(|c| c.issuer_cn.clone())
        .expect("top of chain has an issuer CN")
}

#[tokio::test]
async fn preferred_chain_selects_the_alternate_root_by_cn_and_default_differs() {
    let Some(env) = Env::start(PebbleOptions::default().alternate_roots(2)).await else {
        return;
    };
    env.register_account().await;
    let roots = env.pebble.issuing_roots().await.expect("roots");
    assert_eq!(roots.len(), 3, "PEBBLE_ALTERNATE_ROOTS=2 gives three roots");
    let cns: Vec<String> = roots
        .iter()
        .map(|pem| {
            certfleet_testenv::CertInfo::from_pem(pem)
                .expect("root parses")
                .subject_cn
                .expect("root CN")
        })
        .collect();

    let names = ["chain.certfleet.test"];
    env.issue_standalone(&names, "default", &[])
        .await
        .assert_ok();
    let default_top = top_issuer_cn(&env.path("default").join("chain.pem"));
    assert_eq!(
        default_top, cns[0],
        "without --preferred-chain: the default chain"
    );

    let wanted = &cns[2];
    env.issue_standalone(&names, "preferred", &["--preferred-chain", wanted])
        .await
        .assert_ok();
    let out = env.path("preferred");
    let top = top_issuer_cn(&out.join("chain.pem"));
    assert_eq!(
        &top, wanted,
        "--preferred-chain picks the chain to that root"
    );
    assert_ne!(top, default_top);
    let root2 = env.issuing_root_file(2).await;
    let (_, meta) = check_issued(&out, &names, &root2);
    assert!(meta.get("issuer_cn").is_some_and(Value::is_string));
}
