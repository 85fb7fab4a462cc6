//! Batches that explain themselves (issue 15, acceptance 5 and 6): the rate-limit preset
//! follows the directory and is printed; under the Let's Encrypt preset the first deferral
//! names the limit, its scope and the time, `--max-wait` exits with a report, and a later
//! run under looser limits re-evaluates the stored deferrals; SIGTERM and SIGINT stop a
//! batch with its report and a non-zero exit, and a rerun finishes it.

use std::time::{Duration, Instant};

use certfleet_testenv::{CaProxy, CaProxyOptions, PebbleOptions, certfleet_command};
use serde_json::Value;

use crate::batch::{batch_run, report, write_config, write_list};
use crate::common::Env;

fn states(certs: &[Value]) -> (usize, usize) {
    let issued = certs.iter().filter(|c| c["state"] == "issued").count();
    let deferred = certs.iter().filter(|c| c["state"] == "deferred").count();
    (issued, deferred)
}

#[tokio::test]
async fn preset_follows_the_directory_max_wait_reports_and_deferrals_are_reevaluated() {
    let Some(env) = Env::start(PebbleOptions::default().nonce_reject(0)).await else {
        return;
    };
    env.register_account().await;
    let config = write_config(&env, "[batch]\nretry_backoff_secs = 1\n");
    let directory = env.pebble.directory_url();
    // A fresh 120-name batch under one domain with default options: the `none` preset,
    // chosen by the (Pebble) directory URL, issues all of it in one run.
    let fresh: Vec<String> = (0..120).map(|i| format!("f{i}.fresh.test")).collect();
    let fresh = write_list(&env, "fresh.txt", &fresh);
    let started = Instant::now();
    let run = batch_run(&env, &directory, &config, &fresh, &[]).await;
    eprintln!("default run: {:?}", started.elapsed());
    run.assert_ok();
    assert!(
        run.stderr
            .contains("rate-limit preset: none (from the directory URL)"),
        "{run}"
    );
    assert_eq!(states(&report(&env.path("report.json"))), (120, 0));

    let names: Vec<String> = (0..120).map(|i| format!("n{i}.ops.test")).collect();
    let file = write_list(&env, "ops.txt", &names);

    // Under Let's Encrypt's limits: 50 certificates per registered domain, then nothing is
    // due for hours, so --max-wait 1m ends the run with a report.
    let started = Instant::now();
    let run = batch_run(
        &env,
        &directory,
        &config,
        &file,
        &["--rate-limits", "letsencrypt", "--max-wait", "1m"],
    )
    .await;
    eprintln!("letsencrypt run: {:?}", started.elapsed());
    assert_eq!(run.code(), Some(75), "--max-wait exits 75:\n{run}");
    assert!(
        run.stderr
            .contains("rate-limit preset: letsencrypt (from --rate-limits)"),
        "{run}"
    );
    assert!(
        run.stderr.contains("use --rate-limits none"),
        "hint for a non-LE CA:\n{run}"
    );
    let info: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("rate limit certificates_per_registered_domain (50 per 7d)"))
        .collect();
    assert_eq!(info.len(), 1, "one INFO line for the limit:\n{run}");
    assert!(
        info[0].contains(" INFO ")
            && info[0].contains("reached for domain:ops.test: deferring orders until 20"),
        "{}",
        info[0]
    );
    assert!(
        run.stderr.contains("nothing is due within --max-wait 1m: 50 of 120 certificates issued, 70 deferred, the next due at 20"),
        "{run}"
    );
    let certs = report(&env.path("report.json"));
    assert_eq!(certs.len(), 120);
    assert_eq!(states(&certs), (50, 70), "50 issued, 70 deferred");
    for c in certs.iter().filter(|c| c["state"] == "deferred") {
        let until = c["deferred_until"].as_str().expect("deferred_until");
        let until =
            time::OffsetDateTime::parse(until, &time::format_description::well_known::Rfc3339)
                .expect("RFC 3339");
        assert!(
            until > time::OffsetDateTime::now_utc() + Duration::from_secs(3600),
            "deferred for hours: {c}"
        );
    }

    // Default options against Pebble: the `none` preset, chosen by the directory, and the
    // stored deferrals are decided again under it, so the batch finishes now.
    let run = batch_run(&env, &directory, &config, &file, &[]).await;
    run.assert_ok();
    assert!(
        run.stderr
            .contains("rate-limit preset: none (from the directory URL)"),
        "{run}"
    );
    assert!(run.stderr.contains("reevaluated=70"), "{run}");
    let certs = report(&env.path("report.json"));
    assert_eq!(states(&certs), (120, 0), "all 120 issued");
}

/// Starts `batch run` on `file` as a child process (its own stderr captured).
fn spawn_batch(
    env: &Env,
    directory: &str,
    config: &str,
    file: &str,
    stderr: &std::path::Path,
) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::from(certfleet_command());
    cmd.arg("--state-dir")
        .arg(env.state_dir())
        .args(["--directory", directory, "--ca-root"])
        .arg(env.pebble.tls_root_pem_path())
        .args(["--config", config, "batch", "run", file, "--report"])
        .arg(env.path("report.json"))
        .args(["--concurrency", "8"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(stderr).expect("stderr file"))
        .kill_on_drop(true);
    cmd.spawn().expect("certfleet starts")
}

/// Waits (bounded) until the proxy saw `orders` new orders, then sends `signal`.
async fn signal_when_busy(
    child: &tokio::process::Child,
    proxy: &CaProxy,
    orders: u64,
    signal: i32,
) {
    let by = Instant::now() + Duration::from_secs(60);
    while proxy.stats().new_orders < orders && Instant::now() < by {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(proxy.stats().new_orders >= orders, "the batch got busy");
    let pid = child.id().expect("running") as libc::pid_t;
    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "signal sent");
}

#[tokio::test]
async fn sigterm_and_sigint_stop_a_batch_with_its_report_and_a_rerun_finishes() {
    let Some(env) = Env::start(PebbleOptions::default().nonce_reject(0)).await else {
        return;
    };
    let proxy = CaProxy::start(&env.pebble, CaProxyOptions::default())
        .await
        .expect("proxy");
    crate::batch_limits::register(&env, &proxy).await;
    let config = write_config(
        &env,
        "[batch]\nrate_limits = \"none\"\nretry_backoff_secs = 1\nstop_grace_secs = 20\n\
         lease_secs = 600\n",
    );
    // No grace: the jobs in flight are aborted at their last stored step and their leases
    // given up (else the rerun would wait for the 600 s leases).
    let abort_config = env.path("abort.toml");
    std::fs::write(
        &abort_config,
        std::fs::read_to_string(&config)
            .expect("config")
            .replace("stop_grace_secs = 20", "stop_grace_secs = 0"),
    )
    .expect("abort config");
    let abort_config = abort_config.to_string_lossy().into_owned();
    let n = 60;
    let names: Vec<String> = (0..n).map(|i| format!("s{i}.stop.test")).collect();
    let file = write_list(&env, "stop.txt", &names);
    let directory = proxy.directory_url();
    let report_path = env.path("report.json");
    let mut issued_before = 0;
    for (round, (signal, code, name, config)) in [
        (libc::SIGTERM, 143, "SIGTERM", &config),
        (libc::SIGINT, 130, "SIGINT", &config),
        (libc::SIGTERM, 143, "SIGTERM", &abort_config),
    ]
    .into_iter()
    .enumerate()
    {
        let _ = std::fs::remove_file(&report_path);
        let stderr = env.path(&format!("stop-{round}.log"));
        let mut child = spawn_batch(&env, &directory, config, &file, &stderr);
        let busy = proxy.stats().new_orders + 5;
        signal_when_busy(&child, &proxy, busy, signal).await;
        let signalled = Instant::now();
        let status = tokio::time::timeout(Duration::from_secs(90), child.wait())
            .await
            .expect("the stopped batch exits within the grace period")
            .expect("status");
        let log = std::fs::read_to_string(&stderr).expect("stderr");
        eprintln!("{name}: exited {status} after {:?}", signalled.elapsed());
        assert_eq!(status.code(), Some(code), "{name}: exit 128+signal:\n{log}");
        assert!(
            log.contains(&format!("batch stopped by {name}:")) && log.contains("report written to"),
            "{name}:\n{log}"
        );
        if round == 2 {
            assert!(log.contains("aborting the jobs still in flight"), "{log}");
        }
        let certs = report(&report_path);
        assert_eq!(certs.len(), n, "{name}: the report lists every certificate");
        let (issued, _) = states(&certs);
        assert!(
            issued >= issued_before && issued < n,
            "{name}: some more issued, not all: {issued} (before {issued_before})"
        );
        issued_before = issued;
    }
    let run = batch_run(&env, &directory, &config, &file, &[]).await;
    run.assert_ok();
    assert!(
        run.elapsed < Duration::from_secs(300),
        "no wait for leases: {:?}",
        run.elapsed
    );
    let certs = report(&report_path);
    assert_eq!(states(&certs), (n, 0), "the rerun finishes the batch");
    let stats = proxy.stats();
    eprintln!(
        "{} new orders for {n} certificates over 3 stops",
        stats.new_orders
    );
    stats.assert_finalized_once(n, 0);
    // Each stop costs at most one order the store did not know (an order aborted after the
    // grace period); a graceful stop within it costs none.
    assert!(
        stats.new_orders <= n as u64 + 3,
        "{} orders for {n} certificates",
        stats.new_orders
    );
}

#[tokio::test]
async fn batch_deploy_hooks_per_entry_and_the_batch_hook_run_for_changed_certificates() {
    let Some(env) = Env::start(PebbleOptions::default().nonce_reject(0)).await else {
        return;
    };
    env.register_account().await;
    let config = write_config(&env, "");
    let log = env.path("hooks.log");
    let batch_log = env.path("batch-hook.log");
    let q = |p: &std::path::Path| p.display().to_string();
    let file = env.path("hooks.toml");
    std::fs::write(
        &file,
        format!(
            "[defaults]\n\
             deploy_hook = 'echo \"default $CERTFLEET_NAMES $CERTFLEET_SERIAL $RENEWED_LINEAGE\" >> {log}'\n\
             [[cert]]\nnames = [\"a.hooks.test\", \"www.a.hooks.test\"]\n\
             [[cert]]\nnames = [\"b.hooks.test\"]\n\
             deploy_hook = 'echo \"own $CERTFLEET_NAMES\" >> {log}'\n\
             [[cert]]\nnames = [\"c.hooks.test\"]\ndeploy_hook = ''\n\
             [[cert]]\nnames = [\"d.hooks.test\"]\ndeploy_hook = 'exit 3'\n",
            log = q(&log)
        ),
    )
    .expect("batch file");
    let file = q(&file);
    let batch_hook = format!(
        "printf '%s|%s\\n' \"$CERTFLEET_CHANGED_COUNT\" \"$CERTFLEET_CHANGED_NAMES\" >> {}",
        q(&batch_log)
    );
    let directory = env.pebble.directory_url();
    let run = batch_run(
        &env,
        &directory,
        &config,
        &file,
        &["--batch-hook", &batch_hook],
    )
    .await;
    // The failing hook makes the run exit 1 but every certificate is in place.
    assert_eq!(run.code(), Some(1), "{run}");
    assert!(
        run.stderr.contains("1 of 4 hooks failed") && run.stderr.contains("d.hooks.test"),
        "{run}"
    );
    let certs = report(&env.path("report.json"));
    assert_eq!(states(&certs), (4, 0), "all issued");
    let lines = std::fs::read_to_string(&log).expect("deploy hooks ran");
    let lines: Vec<&str> = lines.lines().collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let a_dir = env.state_dir().join("certs").join("a.hooks.test");
    assert!(
        lines[0].starts_with("default a.hooks.test www.a.hooks.test ")
            && lines[0].ends_with(&format!(" {}", a_dir.display())),
        "{lines:?}"
    );
    assert_eq!(lines[1], "own b.hooks.test");
    let batch_lines = std::fs::read_to_string(&batch_log).expect("batch hook ran");
    assert_eq!(
        batch_lines,
        "4|a.hooks.test www.a.hooks.test\nb.hooks.test\nc.hooks.test\nd.hooks.test\n"
    );
    // Recorded for renewals.
    let listed = env.run(&["certificates", "--json"]).await;
    listed.assert_ok();
    let hook_of = |name: &str| {
        listed
            .json()
            .as_array()
            .expect("list")
            .iter()
            .find(|c| c["names"][0] == name)
            .map(|c| c["deploy_hook"].clone())
            .unwrap_or_else(|| panic!("{name} listed:\n{listed}"))
    };
    assert!(
        hook_of("b.hooks.test")
            .as_str()
            .is_some_and(|h| h.starts_with("echo \"own"))
    );
    assert_eq!(hook_of("c.hooks.test"), Value::Null);
    // Nothing changes on a rerun: no hook runs.
    let run = batch_run(
        &env,
        &directory,
        &config,
        &file,
        &["--batch-hook", &batch_hook],
    )
    .await;
    run.assert_ok();
    assert_eq!(
        std::fs::read_to_string(&batch_log)
            .expect("batch log")
            .lines()
            .count(),
        4,
        "the batch hook did not run again"
    );
}
