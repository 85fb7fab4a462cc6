//! Crash safety of `certfleet batch run` (issue 5, issue 13 acceptance 4): killed with
//! SIGKILL at five random moments and resumed each time, every name set is ordered and
//! finalized exactly once, counted at the CA (Pebble's own log), not in our store.

use std::time::{Duration, Instant};

use certfleet_testenv::{CaProxy, CaProxyOptions, PebbleOptions, certfleet_command};

use crate::batch::{BATCH_TIMEOUT, report, write_config, write_list};
use crate::common::{COMMAND_TIMEOUT, Env};

/// A small deterministic generator (xorshift), seeded from the clock and printed, so a
/// failing run can be repeated with `CERTFLEET_E2E_KILL_SEED`.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

#[tokio::test]
async fn sigkilled_batch_resumes_without_ordering_or_finalizing_twice() {
    let Some(env) = Env::start(PebbleOptions::default().nonce_reject(0)).await else {
        return;
    };

    let config = write_config(
        &env,
        "[batch]\nrate_limits = \"none\"\nretry_backoff_secs = 1\n",
    );
    // Issue 13, acceptance 4: 300 certificates (fewer with CERTFLEET_E2E_CRASH_SIZE).
    let n: usize = std::env::var("CERTFLEET_E2E_CRASH_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let names: Vec<String> = (0..n)
        .map(|i| format!("k{i}.crash{}.test", i % 3))
        .collect();
    let file = write_list(&env, "crash.txt", &names);
    let seed = crate::common::seed("CERTFLEET_E2E_KILL_SEED", "kill");
    let mut rng = Rng(seed);
    // A CA that reorders what it may: the lost-order search reads shuffled list pages.
    let options = CaProxyOptions {
        reorder: Some(seed),
        ..CaProxyOptions::default()
    };
    let proxy = CaProxy::start(&env.pebble, options).await.expect("proxy");
    env.register_at(&proxy.directory_url(), "account.pem").await;
    let state = env.state_dir();
    let kills = 5;
    let start_run = |run: usize| {
        let log = std::fs::File::create(run_log(&env, run)).expect("run log");
        let mut cmd = tokio::process::Command::from(certfleet_command());
        cmd.arg("--state-dir")
            .arg(&state)
            .args(["--directory", &proxy.directory_url(), "--ca-root"])
            .arg(env.pebble.tls_root_pem_path())
            .args(["--config", &config, "batch", "run", &file])
            .args(["--concurrency", "8", "--report"])
            .arg(env.path("report.json"))
            .env("CERTFLEET_LOG", "info,certfleet_batch=debug")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        cmd.spawn().expect("certfleet starts")
    };
    for kill in 0..kills {
        let mut child = start_run(kill);
        // Kill once the run is busy and the CA holds its share of the orders (kill k after
        // k/6 of them, so later kills hit an account whose orders list spans many pages),
        // plus a random moment up to 1.5 s later (anywhere from ordering to writing bundles).
        let orders_before = proxy.stats().new_orders;
        let share = kill * n / (kills + 1);
        let busy_by = Instant::now() + Duration::from_secs(60);
        while (proxy.stats().new_orders == orders_before || ca_orders(&env) < share)
            && Instant::now() < busy_by
        {
            if child.try_wait().expect("wait").is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.below(1500))).await;
        if child.try_wait().expect("wait").is_none() {
            child.start_kill().expect("SIGKILL");
        }
        let status = tokio::time::timeout(COMMAND_TIMEOUT, child.wait())
            .await
            .expect("killed run ends")
            .expect("status");
        eprintln!(
            "kill {kill}: {status}; CA {} orders, proxy {} orders; store {}",
            ca_orders(&env),
            proxy.stats().new_orders,
            store_states(&state)
        );
    }
    let mut last = start_run(kills);
    let status = tokio::time::timeout(BATCH_TIMEOUT, last.wait())
        .await
        .expect("the final run ends in time")
        .expect("status");
    assert!(
        status.success(),
        "final run: {status}\n{}",
        order_lines(&env, kills + 1)
    );
    let certs = report(&env.path("report.json"));
    assert_eq!(certs.len(), n);
    assert!(certs.iter().all(|c| c["state"] == "issued"), "all issued");
    let stats = proxy.stats();
    stats.assert_finalized_once(n, 0);
    // A job stopped between newOrder and storing the URL continues the order the CA
    // already holds (found in the account's orders list), so no kill costs an order.
    // Counted where the orders are made: the proxy misses an order whose response it
    // never relayed because the client was killed.
    let at_ca = ca_orders(&env);
    eprintln!(
        "final: CA {at_ca} orders, proxy {} orders; reordered {:?}",
        stats.new_orders, stats.reordered
    );
    assert_eq!(
        at_ca,
        n,
        "one order per certificate at the CA across {kills} kills (proxy saw {}); \
         what the runs logged about orders:\n{}",
        stats.new_orders,
        order_lines(&env, kills + 1)
    );
    // Whole bundles only: no staging directories, links or pending keys left, each
    // directory complete and consistent.
    let root = env.issuing_root_file(0).await;
    let bundles = crate::bundles::check_bundles(&state.join("certs"), &root);
    assert_eq!(bundles.len(), n, "one complete directory per certificate");
}

/// Where run `run` (0-based; the last is the uninterrupted one) logs.
fn run_log(env: &Env, run: usize) -> std::path::PathBuf {
    env.path(&format!("run-{run}.log"))
}

/// What the first `runs` runs logged about orders and retries, for a failure message.
fn order_lines(env: &Env, runs: usize) -> String {
    let mut out = String::new();
    for run in 0..runs {
        let log = std::fs::read_to_string(run_log(env, run)).unwrap_or_default();
        for line in log.lines().filter(|l| {
            ["order", "retrying", "invalid", "giving up", "WARN", "ERROR"]
                .iter()
                .any(|w| l.contains(w))
                && !l.contains("order created")
        }) {
            out.push_str(&format!("run {run}: {line}\n"));
        }
    }
    out
}

/// Orders Pebble created: one `Added order` line of its log each (this test's own Pebble).
fn ca_orders(env: &Env) -> usize {
    let log = env.pebble.work_dir().join("pebble.log");
    std::fs::read_to_string(&log)
        .unwrap_or_else(|e| panic!("reading {}: {e}", log.display()))
        .lines()
        .filter(|l| l.contains("Added order"))
        .count()
}

/// The store's jobs per status, and how many of them hold no order URL (read-only).
fn store_states(state: &std::path::Path) -> String {
    let db = state.join("batch.db");
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return format!("({} not readable)", db.display());
    };
    let rows = conn
        .prepare(
            "SELECT status, SUM(order_url IS NULL), COUNT(*) FROM jobs GROUP BY status ORDER BY status",
        )
        .and_then(|mut q| {
            q.query_map([], |r| {
                Ok(format!(
                    "{}={} ({} without order)",
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(1)?
                ))
            })?
            .collect::<Result<Vec<_>, _>>()
        });
    match rows {
        Ok(r) => r.join(", "),
        Err(e) => format!("(store not readable: {e})"),
    }
}
