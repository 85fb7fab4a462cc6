//! Bad DNS-01 input, each with a clear error (acceptance 4), and TSIG secrets kept out of
//! logs and errors (acceptance 5).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use certfleet_testenv::{BindOptions, BindZone, PebbleOptions, plugin_dir, plugin_path};

use crate::common::{Env, Run, certfleet};
use crate::dns_env::{DnsEnv, assert_not_in_output, bind_tools_present};

/// A private directory, and certfleet run in it with `config` (no CA needed).
struct Local {
    dir: tempfile::TempDir,
}

impl Local {
    fn new() -> Local {
        Local {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    async fn run(&self, config: &str, args: &[&str]) -> Run {
        let path = self.path("certfleet.toml");
        std::fs::write(
            &path,
            format!(
                "[dns01]\nplugin_dirs = [\"{}\"]\n{config}",
                plugin_dir().display()
            ),
        )
        .expect("config");
        let mut full: Vec<std::ffi::OsString> = vec![
            "--state-dir".into(),
            self.path("state").into(),
            "--config".into(),
            path.into(),
        ];
        full.extend(args.iter().map(Into::into));
        certfleet(full).await
    }

    async fn issue(&self, config: &str, plugin: &str) -> Run {
        self.run(
            config,
            &[
                "issue",
                "--name",
                "a.example.test",
                "--challenge",
                "dns-01",
                "--dns-plugin",
                plugin,
            ],
        )
        .await
    }
}

#[track_caller]
fn assert_error(run: &Run, parts: &[&str]) {
    run.assert_exit_1();
    for p in parts {
        assert!(run.stderr.contains(p), "stderr lacks {p:?}:\n{run}");
    }
}

#[tokio::test]
async fn missing_plugin_names_the_places_searched() {
    let l = Local::new();
    let run = l.issue("", "route66").await;
    assert_error(
        &run,
        &[
            "DNS plugin \"route66\" not found",
            "libcertfleet_plugin_route66.so",
        ],
    );
}

#[tokio::test]
async fn files_that_are_not_plugins_are_refused() {
    let l = Local::new();
    let garbage = l.path("libcertfleet_plugin_garbage.so");
    std::fs::write(&garbage, b"#!/bin/sh\necho not ELF\n").expect("write");
    std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let cfg = format!("[plugins.garbage]\npath = \"{}\"\n", garbage.display());
    let run = l.issue(&cfg, "garbage").await;
    assert_error(
        &run,
        &[
            "is not a certfleet plugin",
            "cannot load it as a shared library",
        ],
    );

    // A real shared library without the entry symbol: the C library this test runs with.
    let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
    let libc = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.contains("/libc.so"))
        .expect("libc is mapped");
    let run = l.issue("", libc).await;
    assert_error(
        &run,
        &[
            "is not a certfleet plugin",
            "exports no `certfleet_plugin_entry`",
        ],
    );
}

#[tokio::test]
async fn abi_version_mismatch_names_both_versions() {
    let l = Local::new();
    let run = l.issue("", "test-abi-mismatch").await;
    assert_error(
        &run,
        &[
            "built for plugin ABI version 2",
            "this certfleet speaks version 1",
        ],
    );
}

/// Copies the exec plugin to `copy`, lets `prepare` change its owner or mode, and issues
/// with `[plugins.exec] path` pointing at it.
async fn issue_with_plugin_copy(l: &Local, copy: &Path, prepare: impl FnOnce(&Path)) -> Run {
    std::fs::copy(plugin_path("exec"), copy).expect("copy");
    prepare(copy);
    let cfg = format!(
        "[plugins.exec]\npath = \"{}\"\ncommand = \"/bin/true\"\n",
        copy.display()
    );
    l.issue(&cfg, "exec").await
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[tokio::test]
async fn plugin_writable_by_others_is_refused() {
    let l = Local::new();
    let copy = l.path("libcertfleet_plugin_exec.so");
    let run = issue_with_plugin_copy(&l, &copy, |p| chmod(p, 0o666)).await;
    assert_error(
        &run,
        &[
            "has mode 0666",
            "writable by group or others",
            "refusing to load",
        ],
    );
}

#[tokio::test]
async fn plugin_owned_by_another_user_is_refused() {
    let l = Local::new();
    let copy = l.path("libcertfleet_plugin_exec.so");
    let run = issue_with_plugin_copy(&l, &copy, |p| {
        std::os::unix::fs::chown(p, Some(65534), None).expect("chown to nobody (run as root)");
    })
    .await;
    assert_error(
        &run,
        &[
            &format!("refusing to load {}", copy.display()),
            "owned by uid 65534 (nobody)",
        ],
    );
}

#[tokio::test]
async fn plugin_in_a_world_writable_directory_is_refused() {
    let l = Local::new();
    let dir = l.path("anyone-can-write");
    std::fs::create_dir(&dir).expect("mkdir");
    chmod(&dir, 0o777);
    let copy = dir.join("libcertfleet_plugin_exec.so");
    let run = issue_with_plugin_copy(&l, &copy, |p| chmod(p, 0o755)).await;
    assert_error(
        &run,
        &[
            &format!("directory {} has mode 0777", dir.display()),
            "refusing to load",
        ],
    );
}

#[tokio::test]
async fn panic_in_create_is_caught_and_reported() {
    let l = Local::new();
    let cfg = "[plugins.test-panics]\npanic_in = \"create\"\n";
    let run = l.run(cfg, &["plugin", "check", "test-panics"]).await;
    // Exit 1 with a message, not an abort (134).
    assert_error(
        &run,
        &[
            "the plugin panicked (the host caught it)",
            "deliberate panic in create",
        ],
    );
}

#[tokio::test]
async fn unknown_tsig_algorithm_is_a_clear_configuration_error() {
    let l = Local::new();
    let cfg = "[plugins.rfc2136]\nserver = \"127.0.0.1:53\"\nkey_name = \"k\"\nalgorithm = \"hmac-sha999\"\n\
               secret_env = \"HOME\"\n";
    let run = l.run(cfg, &["plugin", "check", "rfc2136"]).await;
    assert_error(
        &run,
        &[
            "configuration",
            "unknown TSIG algorithm \"hmac-sha999\"",
            "hmac-sha256",
        ],
    );
}

#[tokio::test]
async fn panic_in_present_fails_the_order_and_the_host_survives() {
    if !bind_tools_present() {
        return;
    }
    let Some(env) = Env::start(PebbleOptions::default()).await else {
        return;
    };
    env.register_account().await;
    let config = env.path("certfleet.toml");
    std::fs::write(
        &config,
        format!(
            "[dns01]\nplugin_dirs = [\"{}\"]\n[dns01.propagation]\ncheck = false\n[plugins.test-panics]\npanic_in = \"present\"\n",
            plugin_dir().display()
        ),
    )
    .expect("config");
    let config_s = config.to_string_lossy().into_owned();
    let run = env
        .run(&[
            "--config",
            &config_s,
            "issue",
            "--name",
            "p.test",
            "--challenge",
            "dns-01",
            "--dns-plugin",
            "test-panics",
        ])
        .await;
    assert_error(
        &run,
        &[
            "the plugin panicked (the host caught it)",
            "deliberate panic in present",
        ],
    );
}

#[tokio::test]
async fn wrong_tsig_secret_is_rejected_clearly_and_no_secret_is_shown() {
    let Some(d) = DnsEnv::start(BindOptions::default()).await else {
        return;
    };
    let real = d.bind.key_secret("acme-key").expect("secret");
    let wrong = "d3JvbmctYnV0LXdlbGwtZm9ybWVkLXNlY3JldC0xMjM0NTY=";
    let plugin = |secret_file: &str| {
        format!(
            "[plugins.rfc2136]\nserver = \"{}\"\nzone = \"example.test\"\nkey_file = \"{secret_file}\"\n",
            d.bind.primary()
        )
    };
    // `plugin check` with the right key: the server accepts a signed no-op UPDATE.
    let right_cfg = d.config(
        "right.toml",
        &[
            &d.dns01_section(5),
            &plugin(
                &d.bind
                    .key_file("acme-key")
                    .expect("key")
                    .display()
                    .to_string(),
            ),
        ],
    );
    let right_s = right_cfg.to_string_lossy().into_owned();
    let check = d
        .env
        .run(&["--config", &right_s, "plugin", "check", "rfc2136"])
        .await;
    check.assert_ok();
    assert!(
        check.stdout.contains("the server accepted the TSIG key"),
        "{check}"
    );

    let bad_key = d.env.path("wrong.key");
    std::fs::write(
        &bad_key,
        format!("key \"acme-key\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{wrong}\";\n}};\n"),
    )
    .expect("key");
    let cfg = d.config(
        "wrong.toml",
        &[&d.dns01_section(5), &plugin(&bad_key.display().to_string())],
    );
    let run = d
        .issue(&cfg, "rfc2136", &["tsig.example.test"], "out", &["-vv"])
        .await;
    assert_error(
        &run,
        &[
            "TSIG rejected: check key name, secret, clock",
            "key acme-key",
        ],
    );
    assert_not_in_output(&run, wrong, "TSIG secret");
    assert_not_in_output(&run, &real, "TSIG secret");
    let cfg_s = cfg.to_string_lossy().into_owned();
    let check = d
        .env
        .run(&["--config", &cfg_s, "plugin", "check", "rfc2136"])
        .await;
    assert_error(&check, &["1 of 3 checks failed"]);
    assert!(
        check.stdout.contains("FAIL") && check.stdout.contains("TSIG rejected"),
        "{check}"
    );
    assert_not_in_output(&check, wrong, "TSIG secret");
}

#[tokio::test]
async fn update_refused_by_policy_and_zone_not_found_are_explained() {
    let options = BindOptions {
        zones: vec![
            BindZone::new("example.test")
                .update_policy("grant acme-key. name _acme-challenge.other.example.test. TXT;"),
        ],
        ..BindOptions::default()
    };
    let Some(d) = DnsEnv::start(options).await else {
        return;
    };
    let config = d.config(
        "certfleet.toml",
        &[&d.dns01_section(5), &d.rfc2136_with_key_file("acme-key")],
    );
    let run = d
        .issue(&config, "rfc2136", &["denied.example.test"], "out", &[])
        .await;
    assert_error(
        &run,
        &[
            "REFUSED by the server's update policy",
            "key acme-key may not change",
        ],
    );

    let run = d
        .issue(&config, "rfc2136", &["www.nowhere.test"], "out", &[])
        .await;
    assert_error(
        &run,
        &[
            "no zone found for _acme-challenge.www.nowhere.test.",
            "REFUSED",
        ],
    );
}
