//! Revocation, signed by the account key and by the certificate key.

use certfleet_testenv::{PebbleOptions, read_cert};

use crate::common::Env;

#[tokio::test]
async fn revoke_with_account_key_and_reason_key_compromise_marks_cert_revoked() {
    let Some(env) = Env::start(PebbleOptions::default()).await else {
        return;
    };
    env.register_account().await;
    env.issue_standalone(&["revoke-a.certfleet.test"], "out", &[])
        .await
        .assert_ok();
    let cert = env.path("out").join("cert.pem");
    let serial = read_cert(&cert).expect("cert.pem").serial_hex;
    let before = env.pebble.cert_status(&serial).await.expect("status");
    assert_eq!(before["Status"], "Valid", "{before}");

    let cert_s = cert.to_string_lossy().into_owned();
    env.run(&["revoke", "--cert", &cert_s, "--reason", "keyCompromise"])
        .await
        .assert_ok();

    let after = env.pebble.cert_status(&serial).await.expect("status");
    assert_eq!(after["Status"], "Revoked", "{after}");
    assert_eq!(
        after["Reason"], 1,
        "keyCompromise is reason code 1: {after}"
    );
}

#[tokio::test]
async fn revoke_with_certificate_key_marks_cert_revoked() {
    let Some(env) = Env::start(PebbleOptions::default()).await else {
        return;
    };
    env.register_account().await;
    let cert_key = env.generate_key("cert-key.pem", "es256").await;
    env.issue_standalone(&["revoke-b.certfleet.test"], "out", &["--key", &cert_key])
        .await
        .assert_ok();
    let cert = env.path("out").join("cert.pem");
    let serial = read_cert(&cert).expect("cert.pem").serial_hex;

    let cert_s = cert.to_string_lossy().into_owned();
    env.run(&["revoke", "--cert", &cert_s, "--cert-key", &cert_key])
        .await
        .assert_ok();

    let after = env.pebble.cert_status(&serial).await.expect("status");
    assert_eq!(after["Status"], "Revoked", "{after}");
}
