//! `certfleet batch`: many certificates by dns-01 through a plugin against Pebble
//! (issue 5, acceptance 1), and bad input / a locked store (acceptance 7).

use std::path::{Path, PathBuf};
use std::time::Duration;

use certfleet_testenv::{PebbleOptions, plugin_dir};
use serde_json::Value;

use crate::common::{Env, Run, check_issued};

/// Longest a whole batch run may take in these tests.
pub const BATCH_TIMEOUT: Duration = Duration::from_secs(600);

/// Writes a config using the challtestsrv plugin (Pebble resolves through challtestsrv, so
/// records are visible at once: no propagation check), plus `extra` TOML.
pub fn write_config(env: &Env, extra: &str) -> String {
    let config = env.path("certfleet.toml");
    std::fs::write(
        &config,
        format!(
            "[dns01]\nplugin = \"challtestsrv\"\nplugin_dirs = [\"{}\"]\n\
             [dns01.propagation]\ncheck = false\n\
             [plugins.challtestsrv]\nurl = \"{}\"\n\
             [network]\npoll_initial_millis = 100\npoll_max_interval_secs = 1\n{extra}",
            plugin_dir().display(),
            env.pebble.challtestsrv_url()
        ),
    )
    .expect("config");
    config.to_string_lossy().into_owned()
}

/// A plain-list batch file of `names` (one certificate each).
pub fn write_list(env: &Env, file: &str, names: &[String]) -> String {
    let path = env.path(file);
    std::fs::write(&path, names.join("\n") + "\n").expect("batch file");
    path.to_string_lossy().into_owned()
}

/// The report's certificates.
#[track_caller]
pub fn report(path: &Path) -> Vec<Value> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("report {}: {e}", path.display()));
    let v: Value = serde_json::from_str(&text).expect("report is JSON");
    v["certificates"].as_array().expect("certificates").clone()
}

/// Runs `batch run` against `directory` with the config and extra flags.
pub async fn batch_run(
    env: &Env,
    directory: &str,
    config: &str,
    file: &str,
    extra: &[&str],
) -> Run {
    batch_run_within(env, directory, config, file, extra, BATCH_TIMEOUT).await
}

/// [`batch_run`] killed after `limit`.
pub async fn batch_run_within(
    env: &Env,
    directory: &str,
    config: &str,
    file: &str,
    extra: &[&str],
    limit: Duration,
) -> Run {
    let report = env.path("report.json").to_string_lossy().into_owned();
    let mut args = vec![
        "--config", config, "batch", "run", file, "--report", &report,
    ];
    args.extend(extra);
    env.run_at(directory, &args, limit).await
}

fn cert_dir(env: &Env, name: &str) -> PathBuf {
    env.state_dir().join("certs").join(name)
}

fn count() -> usize {
    std::env::var("CERTFLEET_E2E_BATCH_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

#[tokio::test]
async fn batch_issues_a_thousand_dns01_certificates_through_a_plugin() {
    let Some(env) = Env::start(PebbleOptions::default().nonce_reject(0)).await else {
        return;
    };
    env.register_account().await;
    let config = write_config(&env, "");
    let n = count();
    let names: Vec<String> = (0..n)
        .map(|i| format!("host{i}.batch{}.test", i % 7))
        .collect();
    let file = write_list(&env, "batch.txt", &names);
    let run = batch_run(
        &env,
        &env.pebble.directory_url(),
        &config,
        &file,
        &["--rate-limits", "none"],
    )
    .await;
    run.assert_ok();
    eprintln!("{n} certificates in {:?}", run.elapsed);
    let certs = report(&env.path("report.json"));
    assert_eq!(certs.len(), n, "the report lists every certificate");
    assert!(
        certs
            .iter()
            .all(|c| c["state"] == "issued" && c["serial"].is_string()),
        "every certificate issued: {:?}",
        certs.iter().find(|c| c["state"] != "issued")
    );
    let root = env.issuing_root_file(0).await;
    for name in &names {
        check_issued(&cert_dir(&env, name), &[name.as_str()], &root);
    }
    // The status command reads the store afterwards (and during a run: it takes no lock).
    let status = env.run(&["batch", "status"]).await;
    status.assert_ok();
    assert_eq!(
        status.json()["batches"][0]["states"]["issued"],
        n as u64,
        "{status}"
    );
}

#[tokio::test]
async fn batch_file_with_bad_lines_reports_each_and_issues_nothing() {
    let Some(env) = Env::start(PebbleOptions::default()).await else {
        return;
    };
    env.register_account().await;
    let config = write_config(&env, "");
    let mut lines: Vec<String> = (0..100).map(|i| format!("ok{i}.bad.test")).collect();
    lines[9] = "bad..name.test".to_owned();
    lines[49] = "-leading.bad.test".to_owned();
    lines[89] = "x.bad.test,*.*.bad.test".to_owned();
    let file = write_list(&env, "bad.txt", &lines);
    let run = batch_run(&env, &env.pebble.directory_url(), &config, &file, &[]).await;
    run.assert_exit_1();
    for line in [10, 50, 90] {
        assert!(
            run.stderr.contains(&format!("line {line}")),
            "line {line} is reported:\n{run}"
        );
    }
    assert!(
        !env.state_dir().join("certs").exists(),
        "nothing issued:\n{run}"
    );
}

#[tokio::test]
async fn a_locked_store_names_the_run_holding_it() {
    let Some(env) = Env::start(PebbleOptions::default()).await else {
        return;
    };
    env.register_account().await;
    let config = write_config(&env, "");
    // Hold the run lock the way a running batch does.
    let store = certfleet_store_sqlite::SqliteStore::open(&env.state_dir())
        .await
        .expect("store");
    let holder =
        certfleet_batch::RunHolder::this_process(time::OffsetDateTime::now_utc(), "e2e-host");
    let guard = certfleet_batch::StateStore::begin_run(&store, &holder)
        .await
        .expect("lock");
    let file = write_list(&env, "one.txt", &["one.locked.test".to_owned()]);
    let run = batch_run(&env, &env.pebble.directory_url(), &config, &file, &[]).await;
    run.assert_exit_1();
    assert!(
        run.stderr.contains("in use by another run")
            && run.stderr.contains(&format!("pid {}", std::process::id())),
        "the holder is named:\n{run}"
    );
    drop(guard);
}
