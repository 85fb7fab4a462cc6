//! Crash safety of `certfleet batch run` (issue 5, acceptance 4): killed with SIGKILL at
//! five random moments and resumed each time, every name set is finalized exactly once and
//! each kill costs at most one extra new order.

use std::time::{Duration, Instant};

use certfleet_testenv::{CaProxy, CaProxyOptions, PebbleOptions, certfleet_command};

use crate::batch::{BATCH_TIMEOUT, batch_run, report, write_config, write_list};
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
    let proxy = CaProxy::start(&env.pebble, CaProxyOptions::default())
        .await
        .expect("proxy");
    let key = env.generate_key("account.pem", "es256").await;
    env.run_at(
        &proxy.directory_url(),
        &["account", "register", "--key", &key, "--agree-tos"],
        COMMAND_TIMEOUT,
    )
    .await
    .assert_ok();
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
    let seed = std::env::var("CERTFLEET_E2E_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("kill seed {seed}");
    let mut rng = Rng(seed);
    let state = env.state_dir();
    let kills = 5;
    for kill in 0..kills {
        let mut cmd = tokio::process::Command::from(certfleet_command());
        cmd.arg("--state-dir")
            .arg(&state)
            .args(["--directory", &proxy.directory_url(), "--ca-root"])
            .arg(env.pebble.tls_root_pem_path())
            .args(["--config", &config, "-q", "batch", "run", &file])
            .args(["--concurrency", "8"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("certfleet starts");
        // Kill once the run is busy: after some orders reached the proxy, plus a random
        // moment up to 3 s later (the kills fall anywhere from ordering to writing bundles).
        let orders_before = proxy.stats().new_orders;
        let busy_by = Instant::now() + Duration::from_secs(30);
        while proxy.stats().new_orders == orders_before && Instant::now() < busy_by {
            if child.try_wait().expect("wait").is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.below(3000))).await;
        if child.try_wait().expect("wait").is_none() {
            child.start_kill().expect("SIGKILL");
        }
        let status = tokio::time::timeout(COMMAND_TIMEOUT, child.wait())
            .await
            .expect("killed run ends")
            .expect("status");
        eprintln!(
            "kill {kill}: {status}, proxy {:?} orders",
            proxy.stats().new_orders
        );
    }
    let run = batch_run(&env, &proxy.directory_url(), &config, &file, &[]).await;
    run.assert_ok();
    assert!(run.elapsed < BATCH_TIMEOUT);
    let certs = report(&env.path("report.json"));
    assert_eq!(certs.len(), n);
    assert!(certs.iter().all(|c| c["state"] == "issued"), "all issued");
    let stats = proxy.stats();
    assert_eq!(
        stats.finalizations.len(),
        n,
        "every name set finalized: {stats:?}"
    );
    let twice: Vec<_> = stats
        .finalizations
        .iter()
        .filter(|(_, c)| **c != 1)
        .collect();
    assert!(twice.is_empty(), "finalized more than once: {twice:?}");
    assert!(
        stats.new_orders <= n as u64 + kills,
        "at most one extra order per kill: {} orders for {n} certificates",
        stats.new_orders
    );
    // Whole bundles only: no staging directories, links or pending keys left, each
    // directory complete and consistent.
    let root = env.issuing_root_file(0).await;
    let bundles = crate::bundles::check_bundles(&state.join("certs"), &root);
    assert_eq!(bundles.len(), n, "one complete directory per certificate");
}
