//! The install path (README "Install"): `cargo xtask dist` artifacts unpacked into a
//! temporary root; the installed binary finds the shipped plugins (and no test plugin), and
//! the systemd service's ExecStart line, run as systemd would (no systemd here), renews a
//! due certificate and runs its deploy hook.

use std::path::Path;
use std::process::Command;

use certfleet_testenv::{PebbleOptions, profile_dir, read_cert, run_output};
use serde_json::Value;

use crate::common::Env;

/// `cargo xtask dist --no-build` from the binaries of this test's cargo profile.
fn build_dist(out: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let from = profile_dir().expect("profile dir");
    let text = run_output(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .args([
                "run",
                "-q",
                "-p",
                "xtask",
                "--",
                "dist",
                "--no-build",
                "--from",
            ])
            .arg(&from)
            .arg("--out")
            .arg(out),
    )
    .unwrap_or_else(|e| panic!("cargo xtask dist: {e:#}"));
    // dpkg-deb says what it builds on stdout too: take the lines that are paths.
    let printed = |suffix: &str| {
        text.lines()
            .find(|l| l.starts_with('/') && l.ends_with(suffix))
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| panic!("no *{suffix} path printed by xtask dist:\n{text}"))
    };
    (printed(".tar.gz"), printed(".deb"))
}

#[tokio::test]
async fn installed_tarball_renews_a_due_certificate_through_the_service_line_and_runs_the_hook() {
    let Some(env) = Env::start(PebbleOptions::default()).await else {
        return;
    };
    let (tarball, deb) = build_dist(&env.path("dist"));
    let listing = run_output(Command::new("dpkg-deb").arg("-c").arg(&deb)).expect("dpkg-deb -c");
    assert!(
        listing.contains("./usr/lib/certfleet/plugins/libcertfleet_plugin_rfc2136.so")
            && listing.contains("./lib/systemd/system/certfleet-renew.timer"),
        "{listing}"
    );
    let root = env.path("root");
    std::fs::create_dir_all(&root).expect("root");
    run_output(
        Command::new("tar")
            .arg("-xzf")
            .arg(&tarball)
            .arg("-C")
            .arg(&root),
    )
    .expect("unpack");
    let bin = root.join("usr/bin/certfleet");
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/certfleet-renew.service"))
        .expect("service unit");
    let timer = std::fs::read_to_string(root.join("lib/systemd/system/certfleet-renew.timer"))
        .expect("timer unit");
    assert!(timer.contains("Persistent=true") && timer.contains("RandomizedDelaySec="));

    // The installed binary finds the shipped plugins beside it, and no test plugin.
    let listed = run_output(
        Command::new(&bin)
            .args(["--state-dir"])
            .arg(env.state_dir())
            .args(["plugin", "list"]),
    )
    .expect("plugin list");
    let plugins: Value = serde_json::from_str(&listed).expect("plugin list JSON");
    let mine: Vec<&str> = plugins
        .as_array()
        .expect("array")
        .iter()
        .filter(|p| {
            p["path"]
                .as_str()
                .is_some_and(|s| s.starts_with(&*root.to_string_lossy()))
        })
        .filter_map(|p| p["plugin"].as_str())
        .collect();
    for want in ["cloudflare", "exec", "powerdns", "rfc2136", "route53"] {
        assert!(mine.contains(&want), "{want} not found: {listed}");
    }
    assert!(
        !listed.contains("test_panics") && !listed.contains("challtestsrv"),
        "{listed}"
    );

    // A certificate with a deploy hook, made due by revoking it.
    env.register_account().await;
    let log = env.path("hook.log");
    let hook = format!(
        "echo \"$CERTFLEET_EVENT $RENEWED_DOMAINS $RENEWED_LINEAGE\" >> {}",
        log.display()
    );
    env.issue_standalone(
        &["install.certfleet.test"],
        "out",
        &["--deploy-hook", &hook],
    )
    .await
    .assert_ok();
    let out = env.path("out");
    let before = read_cert(&out.join("cert.pem")).expect("cert");
    let cert_s = out.join("cert.pem").display().to_string();
    env.run(&["revoke", "--cert", &cert_s, "--reason", "superseded"])
        .await
        .assert_ok();

    // ExecStart as systemd runs it: the unit's Environment, then /etc/default/certfleet
    // (here: the test's state directory and Pebble's TLS root), a clean environment.
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/bin/certfleet"), "{exec}");
    let output = tokio::process::Command::new(&bin)
        .args(words)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("CERTFLEET_STATE_DIR", env.state_dir())
        .env("CERTFLEET_CA_ROOTS", env.pebble.tls_root_pem_path())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(crate::common::COMMAND_TIMEOUT, output)
        .await
        .expect("the service line finished in time")
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{exec}: {}\n{stderr}",
        output.status
    );
    assert!(
        output.stdout.is_empty(),
        "-q printed: {:?}",
        String::from_utf8_lossy(&output.stdout)
    );
    let after = read_cert(&out.join("cert.pem")).expect("renewed cert");
    assert_ne!(after.serial_hex, before.serial_hex, "{stderr}");
    let hooks = std::fs::read_to_string(&log).expect("hook log");
    let lines: Vec<&str> = hooks.lines().collect();
    assert_eq!(
        lines,
        [
            format!("issued install.certfleet.test {}", out.display()),
            format!("renewed install.certfleet.test {}", out.display()),
        ],
        "{stderr}"
    );
}
