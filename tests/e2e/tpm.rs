//! Keys in a TPM (swtpm): account and certificate keys created in the TPM and used by the
//! real `certfleet` binary against Pebble, rollover from a file key, and a TPM that is not
//! running.

use certfleet_testenv::{PebbleOptions, Swtpm, read_cert, spki_matches_jwk};

use crate::common::{Env, Run, check_issued};
use crate::hsm::{assert_no_private_keys, run_with_env};

struct TpmEnv {
    env: Env,
    tpm: Swtpm,
}

impl TpmEnv {
    async fn start() -> Option<TpmEnv> {
        if !certfleet_testenv::require_swtpm() {
            return None;
        }
        let env = Env::start(PebbleOptions::default()).await?;
        let tpm = Swtpm::start().expect("swtpm starts");
        Some(TpmEnv { env, tpm })
    }

    async fn run(&self, args: &[&str]) -> Run {
        run_with_env(&self.env, args, &[]).await
    }

    /// `key generate --backend tpm` into a key file under the test's temp dir.
    async fn generate(&self, file: &str, alg: &str) -> String {
        let out = self.env.path(file).to_string_lossy().into_owned();
        let tcti = self.tpm.tcti();
        let run = self
            .run(&[
                "key",
                "generate",
                "--backend",
                "tpm",
                "--alg",
                alg,
                "--tcti",
                &tcti,
                "--out",
                &out,
            ])
            .await;
        run.assert_ok();
        let key_ref = run.last_line();
        assert!(key_ref.starts_with("tpm:file="), "{run}");
        assert!(key_ref.contains(&tcti), "{run}");
        key_ref
    }
}

#[tokio::test]
async fn tpm_account_and_certificate_keys_issue_and_revoke() {
    let Some(t) = TpmEnv::start().await else {
        return;
    };
    let account = t.generate("keys/acct.tpmkey", "es256").await;
    t.run(&["account", "register", "--key", &account, "--agree-tos"])
        .await
        .assert_ok();
    let cert_key = t.generate("keys/web.tpmkey", "es256").await;
    let names = ["tpm.certfleet.test"];
    t.env
        .issue_standalone(&names, "out", &["--key", &cert_key])
        .await
        .assert_ok();
    let out = t.env.path("out");
    let root = t.env.issuing_root_file(0).await;
    let (leaf, meta) = check_issued(&out, &names, &root);
    assert_eq!(meta["key_ref"], cert_key.as_str());
    assert!(!out.join("privkey.pem").exists());
    let shown = t.run(&["key", "show", &cert_key]).await;
    shown.assert_ok();
    assert!(
        spki_matches_jwk(&leaf.spki_der, &shown.json()["jwk"]).expect("compare"),
        "leaf key != TPM key"
    );
    assert_no_private_keys(&[&t.env.state_dir(), &out]);
    // The key files hold only the TPM-wrapped blob and the public area.
    for file in ["keys/acct.tpmkey", "keys/web.tpmkey"] {
        let text = std::fs::read_to_string(t.env.path(file)).expect("key file");
        assert!(!text.contains("PRIVATE KEY"), "{text}");
        assert!(text.contains("certfleet-tpm-key/1"), "{text}");
    }

    let cert = out.join("cert.pem").to_string_lossy().into_owned();
    t.run(&["revoke", "--cert", &cert, "--cert-key", &cert_key])
        .await
        .assert_ok();
    let serial = read_cert(&out.join("cert.pem")).expect("cert").serial_hex;
    let status = t.env.pebble.cert_status(&serial).await.expect("status");
    assert_eq!(status["Status"], "Revoked", "{status}");
}

#[tokio::test]
async fn tpm_rollover_from_a_file_key_retires_the_file_key() {
    let Some(t) = TpmEnv::start().await else {
        return;
    };
    let file_key = t.env.register_account().await;
    let url = t.env.account_url().await;
    let tpm_key = t.generate("acct.tpmkey", "es256").await;
    t.run(&["account", "rollover", "--new-key", &tpm_key])
        .await
        .assert_ok();
    let refused = t.run(&["account", "find", "--key", &file_key]).await;
    refused.assert_exit_1();
    assert!(!refused.stdout.contains(&url), "{refused}");
    let shown = t.run(&["account", "show"]).await;
    shown.assert_ok();
    assert_eq!(shown.json()["key_ref"], tpm_key.as_str());
}

#[tokio::test]
async fn tpm_not_running_is_a_clear_error_naming_the_key_and_tcti() {
    let Some(mut t) = TpmEnv::start().await else {
        return;
    };
    let key = t.generate("acct.tpmkey", "es256").await;
    t.tpm.kill();
    let run = t
        .run(&["account", "register", "--key", &key, "--agree-tos"])
        .await;
    run.assert_exit_1();
    assert!(
        run.stderr.contains("cannot reach the TPM through TCTI"),
        "{run}"
    );
    assert!(run.stderr.contains(&key), "names the key: {run}");
    assert!(
        !run.stderr.contains("ERROR:tcti"),
        "TSS library noise on stderr: {run}"
    );
    let lines = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .count();
    assert_eq!(lines, 1, "one error line: {run}");
}
