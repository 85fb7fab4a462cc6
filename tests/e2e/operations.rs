//! Running certfleet on a server: deploy hooks, `certificates`, `delete`, renewal against
//! the recorded CA with a new key after a revocation, locks, quiet runs and log lines.

use std::time::{Duration, Instant};

use certfleet_testenv::{PebbleOptions, read_cert};
use serde_json::Value;

use crate::common::{COMMAND_TIMEOUT, Env};

/// A directory no CA answers at: renewals must not use it.
const NOWHERE: &str = "https://127.0.0.1:9/directory";

/// A hook that appends the variables it got to `log`, one line per run.
fn recording_hook(log: &std::path::Path) -> String {
    format!(
        "printf '%s|%s|%s|%s|%s|%s|%s\\n' \"$CERTFLEET_EVENT\" \"$RENEWED_LINEAGE\" \"$RENEWED_DOMAINS\" \"$CERTFLEET_SERIAL\" \"$CERTFLEET_NOT_AFTER\" \"$CERTFLEET_FULLCHAIN_PATH\" \"$CERTFLEET_KEY_PATH\" >> {}",
        log.display()
    )
}

fn hook_lines(log: &std::path::Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split('|').map(str::to_owned).collect())
        .collect()
}

#[tokio::test]
async fn hooks_certificates_revoked_renewal_with_new_key_quiet_runs_and_delete() {
    let Some(env) = Env::start(PebbleOptions::default()).await else {
        return;
    };
    env.register_account().await;
    let log = env.path("hook.log");
    let hook = recording_hook(&log);
    let name = "ops-a.certfleet.test";
    let run = env
        .issue_standalone(
            &[name, "ops-b.certfleet.test"],
            "out",
            &["--deploy-hook", &hook],
        )
        .await;
    run.assert_ok();
    // Log lines carry RFC 3339 timestamps to the millisecond.
    let first_log = run.stderr.lines().next().unwrap_or("");
    let stamp = first_log.split_whitespace().next().unwrap_or("");
    assert!(
        stamp.len() == 24 && stamp.ends_with('Z') && stamp.as_bytes()[19] == b'.',
        "log line without an RFC 3339 millisecond timestamp: {first_log:?}\n{run}"
    );
    let out = env.path("out");
    let leaf = read_cert(&out.join("cert.pem")).expect("cert");
    let lines = hook_lines(&log);
    assert_eq!(lines.len(), 1, "one hook run after issue: {lines:?}");
    let l = &lines[0];
    assert_eq!(l[0], "issued");
    assert_eq!(l[1], out.display().to_string());
    assert_eq!(l[2], format!("{name} ops-b.certfleet.test"));
    assert_eq!(
        crate::common::normalize_serial(&l[3]),
        crate::common::normalize_serial(&leaf.serial_hex)
    );
    assert!(
        l[4].ends_with('Z') && l[4].len() == 20,
        "notAfter {:?}",
        l[4]
    );
    assert_eq!(l[5], out.join("fullchain.pem").display().to_string());
    assert_eq!(l[6], out.join("privkey.pem").display().to_string());

    let listed = env.run(&["certificates", "--json"]).await;
    listed.assert_ok();
    let v = listed.json();
    assert_eq!(v[0]["names"][0], name, "{v}");
    assert_eq!(v[0]["status"], "valid", "{v}");
    assert!(
        v[0]["renewal_time"].is_string()
            && v[0]["key"]
                .as_str()
                .is_some_and(|k| k.starts_with("ec-p256")),
        "{v}"
    );

    // Nothing due: exit 0, and nothing at all on stdout with -q (cron mails nothing).
    let quiet = env
        .run_at(NOWHERE, &["renew", "--all", "-q"], COMMAND_TIMEOUT)
        .await;
    quiet.assert_ok();
    assert_eq!(quiet.stdout, "", "renew -q printed:\n{quiet}");

    let cert_s = out.join("cert.pem").display().to_string();
    env.run(&["revoke", "--cert", &cert_s, "--reason", "keyCompromise"])
        .await
        .assert_ok();
    let v = env.run(&["certificates", "--json"]).await.json();
    assert_eq!(v[0]["status"], "revoked (keyCompromise)", "{v}");

    // Renewed at the CA it came from (the directory given here answers nothing), with a
    // new key although --reuse-key asks otherwise: the old one was compromised.
    let renew = env
        .run_at(NOWHERE, &["renew", "--all", "--reuse-key"], COMMAND_TIMEOUT)
        .await;
    renew.assert_ok();
    assert!(renew.stderr.contains("keyCompromise"), "{renew}");
    let renewed = read_cert(&out.join("cert.pem")).expect("renewed cert");
    assert_ne!(renewed.serial_hex, leaf.serial_hex, "{renew}");
    assert_ne!(
        renewed.spki_der, leaf.spki_der,
        "a new key after keyCompromise:\n{renew}"
    );
    let lines = hook_lines(&log);
    assert_eq!(
        lines.len(),
        2,
        "the recorded hook ran for the renewal: {lines:?}"
    );
    assert_eq!(lines[1][0], "renewed");
    let v = env.run(&["certificates", "--json"]).await.json();
    assert_eq!(v[0]["status"], "valid", "{v}");

    env.run(&["delete", "--name", name]).await.assert_ok();
    assert!(!out.exists(), "delete left {}", out.display());
    let v = env.run(&["certificates", "--json"]).await.json();
    assert_eq!(v, Value::Array(Vec::new()));
    env.run_at(NOWHERE, &["renew", "--all"], COMMAND_TIMEOUT)
        .await
        .assert_ok();
}

#[tokio::test]
async fn two_forced_renewals_at_once_one_renews_the_other_names_the_holder() {
    let Some(env) = Env::start(PebbleOptions::default()).await else {
        return;
    };
    env.register_account().await;
    let name = "ops-lock.certfleet.test";
    env.issue_standalone(&[name], "out", &[]).await.assert_ok();
    // The first renewal's hook holds it (and so its lock) until released.
    let started = env.path("hook-started");
    let release = env.path("release");
    let hook = format!(
        "touch {s}; i=0; while [ ! -e {r} ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done",
        s = started.display(),
        r = release.display()
    );
    let first = {
        let env = &env;
        let hook = hook.clone();
        async move {
            env.run(&["renew", "--name", name, "--force", "--deploy-hook", &hook])
                .await
        }
    };
    let second = async {
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        while !started.exists() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(started.exists(), "the first renewal never reached its hook");
        let run = env.run(&["renew", "--name", name, "--force"]).await;
        std::fs::write(&release, b"").expect("release");
        run
    };
    let (a, b) = tokio::join!(first, second);
    a.assert_ok();
    b.assert_exit_1();
    assert!(
        b.stderr.contains("is locked by another certfleet run (pid")
            && b.stderr.contains("renew --name"),
        "{b}"
    );
    // JSON logs: one object per line with a timestamp.
    let json = env.run(&["--log-format", "json", "renew", "--all"]).await;
    json.assert_ok();
    let line = json.stderr.lines().next().expect("a log line");
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert!(
        v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{v}"
    );
    assert!(v["message"].is_string(), "{v}");

    // `account register` again with another contact updates it; `account show` still
    // works after deactivation.
    let key = env.path("account.pem").display().to_string();
    env.run(&[
        "account",
        "register",
        "--key",
        &key,
        "--contact",
        "mailto:new@certfleet.test",
        "--agree-tos",
    ])
    .await
    .assert_ok();
    let shown = env.run(&["account", "show"]).await.json();
    assert_eq!(shown["contact"][0], "mailto:new@certfleet.test", "{shown}");
    env.run(&["account", "deactivate", "--yes"])
        .await
        .assert_ok();
    let shown = env.run(&["account", "show"]).await;
    shown.assert_ok();
    assert_eq!(shown.json()["status"], "deactivated", "{shown}");
}
