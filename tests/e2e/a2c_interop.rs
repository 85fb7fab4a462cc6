//! The core end-to-end subset against acme2certifier (issue 17, acceptance 4), the second,
//! independent ACME server: register (ES256, ES384, RS256), http-01, dns-01 with a
//! wildcard through the rfc2136 plugin, renew, revoke by the account key, rollover,
//! deactivate, a 20-certificate batch, and EAB with HS256 and HS512 (64-byte key).
//! One server per test; the flows run one after another on it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::a2c_env::A2cEnv;
use crate::common::check_issued;

#[tokio::test]
async fn a2c_core_flows_register_issue_renew_revoke_rollover_deactivate_batch() {
    let Some(env) = A2cEnv::start(|_| {}).await else {
        return;
    };
    let cfg = env.config();
    let root = env.a2c.issuing_root_pem_path();
    for alg in ["es384", "rs256"] {
        let key = env.register(alg, alg).await;
        let shown = env.run(alg, &["account", "show"]).await;
        shown.assert_ok();
        assert_eq!(shown.json()["key_ref"], key.as_str(), "{shown}");
        assert_eq!(shown.json()["status"], "valid", "{shown}");
    }
    env.register("main", "es256").await;

    // dns-01, apex + wildcard, through the rfc2136 plugin into BIND.
    let out = env.path("wild").to_string_lossy().into_owned();
    let names = ["corp.test", "*.corp.test"];
    let run = env
        .run(
            "main",
            &[
                "--config",
                &cfg,
                "issue",
                "--challenge",
                "dns-01",
                "--dns-plugin",
                "rfc2136",
                "--name",
                names[0],
                "--name",
                names[1],
                "--out",
                &out,
            ],
        )
        .await;
    run.assert_ok();
    check_issued(&env.path("wild"), &names, &root);

    // http-01 on the port acme2certifier fetches from (port 80 in production).
    let listen = format!("127.0.0.1:{}", env.http01_port);
    let out_http = env.path("www").to_string_lossy().into_owned();
    env.run(
        "main",
        &[
            "issue",
            "--challenge",
            "http-01",
            "--http-listen",
            &listen,
            "--name",
            "www.corp.test",
            "--out",
            &out_http,
        ],
    )
    .await
    .assert_ok();
    let (first, _) = check_issued(&env.path("www"), &["www.corp.test"], &root);

    let renew = env
        .run(
            "main",
            &[
                "--config",
                &cfg,
                "renew",
                "--name",
                "www.corp.test",
                "--force",
            ],
        )
        .await;
    renew.assert_ok();
    assert!(renew.stdout.contains("renewed 1"), "{renew}");
    let (renewed, _) = check_issued(&env.path("www"), &["www.corp.test"], &root);
    assert_ne!(first.serial_hex, renewed.serial_hex, "a new certificate");

    // Revocation signed by the certificate key: refused by acme2certifier 0.46.3 (RFC 8555
    // §7.6 allows it); certfleet says to revoke with the issuing account.
    let cert = env.path("www/cert.pem").to_string_lossy().into_owned();
    let cert_key = env.path("www/privkey.pem").to_string_lossy().into_owned();
    let by_key = env
        .run(
            "main",
            &["revoke", "--cert", &cert, "--cert-key", &cert_key],
        )
        .await;
    by_key.assert_exit_1();
    assert!(
        by_key
            .stderr
            .contains("revoke with the account that issued")
            && by_key.stderr.contains("accountDoesNotExist"),
        "{by_key}"
    );
    let revoked = env.run("main", &["revoke", "--cert", &cert]).await;
    revoked.assert_ok();

    // A 20-certificate batch (http-01), one server, one account.
    let list: String = (0..20).map(|i| format!("b{i}.corp.test\n")).collect();
    let list_path = env.path("batch.txt");
    std::fs::write(&list_path, list).expect("batch file");
    let batch_out = env.path("batch-out").to_string_lossy().into_owned();
    let batch = env
        .run(
            "main",
            &[
                "batch",
                "run",
                &list_path.to_string_lossy(),
                "--challenge",
                "http-01",
                "--http-listen",
                &listen,
                "--out",
                &batch_out,
                "--rate-limits",
                "none",
            ],
        )
        .await;
    batch.assert_ok();
    for i in 0..20 {
        let name = format!("b{i}.corp.test");
        check_issued(&env.path(&format!("batch-out/{name}")), &[&name], &root);
    }

    // Rollover to a new file key, then deactivate.
    let new_key = env.path("rolled.pem").to_string_lossy().into_owned();
    let generated = env
        .run(
            "main",
            &["key", "generate", "--alg", "es256", "--out", &new_key],
        )
        .await;
    generated.assert_ok();
    let new_ref = generated.last_line();
    env.run("main", &["account", "rollover", "--new-key", &new_ref])
        .await
        .assert_ok();
    let shown = env.run("main", &["account", "show"]).await;
    shown.assert_ok();
    assert_eq!(shown.json()["key_ref"], new_ref.as_str(), "{shown}");
    let deactivated = env.run("main", &["account", "deactivate", "--yes"]).await;
    deactivated.assert_ok();
    assert!(
        deactivated
            .stderr
            .contains("dns-persist-01 records naming this account"),
        "{deactivated}"
    );
    let after = env
        .run(
            "main",
            &[
                "issue",
                "--challenge",
                "http-01",
                "--http-listen",
                &listen,
                "--name",
                "late.corp.test",
                "--out",
                &env.path("late").to_string_lossy(),
            ],
        )
        .await;
    after.assert_exit_1();
}

#[tokio::test]
async fn a2c_external_account_binding_hs256_and_hs512_with_a_64_byte_key() {
    let k256 = URL_SAFE_NO_PAD.encode([7u8; 32]);
    let k512 = URL_SAFE_NO_PAD.encode([9u8; 64]);
    let eab = vec![
        ("kid-256".to_owned(), k256.clone()),
        ("kid-512".to_owned(), k512.clone()),
    ];
    let Some(env) = A2cEnv::start(|o| o.eab = eab).await else {
        return;
    };
    for (state, kid, key, alg) in [
        ("hs256", "kid-256", &k256, "HS256"),
        ("hs512", "kid-512", &k512, "HS512"),
    ] {
        let path = env
            .path(&format!("{state}.pem"))
            .to_string_lossy()
            .into_owned();
        let generated = env
            .run(
                state,
                &["key", "generate", "--alg", "es256", "--out", &path],
            )
            .await;
        generated.assert_ok();
        let key_ref = generated.last_line();
        let without = env
            .run(
                state,
                &["account", "register", "--key", &key_ref, "--agree-tos"],
            )
            .await;
        without.assert_exit_1();
        let run = env
            .run(
                state,
                &[
                    "-vv",
                    "account",
                    "register",
                    "--key",
                    &key_ref,
                    "--agree-tos",
                    "--eab-kid",
                    kid,
                    "--eab-hmac-key",
                    key,
                    "--eab-alg",
                    alg,
                ],
            )
            .await;
        run.assert_ok();
        assert!(!run.stdout.contains(key.as_str()) && !run.stderr.contains(key.as_str()));
        // -vv: the signed newAccount request, header and payload, signatures left out.
        assert!(
            run.stderr.contains("signed request (signature omitted)")
                && run.stderr.contains(r#""alg":"ES256""#)
                && run.stderr.contains("externalAccountBinding")
                && run.stderr.contains("<omitted>"),
            "{run}"
        );
    }
}
