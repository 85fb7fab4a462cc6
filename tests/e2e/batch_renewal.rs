//! Renewal of batch certificates (issue 5, acceptance 5 and "a batch's certificates"): with
//! the CA's ARI windows in the past for 10 of 50 certificates, exactly those 10 are renewed,
//! each new order carrying `replaces` — by `renew --all` and by running the batch again.
//! Without the CA's windows (404s, or renewalInfo down) both decide by lifetime, warn about
//! three certificates and count the rest, and stop asking a renewalInfo that keeps failing.

use std::collections::BTreeSet;

use certfleet_testenv::{CaProxy, CaProxyOptions, PebbleOptions};
use serde_json::Value;
use time::{Duration, OffsetDateTime};

use crate::batch::{batch_run, report, write_config, write_list};
use crate::common::{COMMAND_TIMEOUT, Env};

/// A batch of 50 issued behind the CA double (windows 30 days ahead), then the windows of
/// the first 10 moved into the past. Returns the proxy, config, batch file and the CertIDs
/// now due.
async fn issued_batch_with_ten_due(env: &Env) -> (CaProxy, String, String, BTreeSet<String>) {
    let now = OffsetDateTime::now_utc();
    let options = CaProxyOptions {
        default_renewal_window: Some((now + Duration::days(30), now + Duration::days(31))),
        ..CaProxyOptions::default()
    };
    let proxy = CaProxy::start(&env.pebble, options).await.expect("proxy");
    env.register_at(&proxy.directory_url(), "account.pem").await;
    let config = write_config(env, "[batch]\nrate_limits = \"none\"\n");
    let names: Vec<String> = (0..50).map(|i| format!("r{i}.ari.test")).collect();
    let file = write_list(env, "ari.txt", &names);
    batch_run(env, &proxy.directory_url(), &config, &file, &[])
        .await
        .assert_ok();
    let mut due = BTreeSet::new();
    for c in report(&env.path("report.json")).iter().take(10) {
        let id = meta(c)["ari_cert_id"]
            .as_str()
            .expect("ari_cert_id")
            .to_owned();
        proxy.set_renewal_window(&id, now - Duration::hours(2), now - Duration::hours(1));
        due.insert(id);
    }
    (proxy, config, file, due)
}

/// `renew --all` through the CA double.
async fn renew_all(env: &Env, proxy: &CaProxy, config: &str) -> crate::common::Run {
    env.run_at(
        &proxy.directory_url(),
        &["--config", config, "renew", "--all"],
        COMMAND_TIMEOUT,
    )
    .await
}

fn meta(cert: &Value) -> Value {
    let dir = std::path::Path::new(cert["cert_dir"].as_str().expect("cert_dir"));
    serde_json::from_slice(&std::fs::read(dir.join("meta.json")).expect("meta")).expect("json")
}

/// Acceptance 5: `renew --all` renews exactly the 10 due, each order with `replaces`.
#[tokio::test]
async fn renew_all_follows_ari_windows_for_batch_certificates() {
    let Some(env) = Env::start(PebbleOptions::default().nonce_reject(0)).await else {
        return;
    };
    let (proxy, config, _file, due) = issued_batch_with_ten_due(&env).await;
    let run = renew_all(&env, &proxy, &config).await;
    run.assert_ok();
    assert!(run.stdout.contains("renewed 10, not due 40"), "{run}");
    let stats = proxy.stats();
    let replaced: BTreeSet<String> = stats.replaces.iter().cloned().collect();
    assert_eq!(
        replaced, due,
        "each renewal names the certificate it replaces"
    );
    assert_eq!(stats.replaces.len(), 10, "one order each: {stats:?}");
}

/// Running the same batch again renews exactly the 10 due (with `replaces`), reports the
/// other 40 as up to date with their old serials, and exits 0; a third run orders nothing.
#[tokio::test]
async fn running_a_batch_again_renews_exactly_its_due_certificates() {
    let Some(env) = Env::start(PebbleOptions::default().nonce_reject(0)).await else {
        return;
    };
    let (proxy, config, file, due) = issued_batch_with_ten_due(&env).await;
    let before: Vec<Value> = report(&env.path("report.json"));
    let old_ids: Vec<String> = before
        .iter()
        .map(|c| meta(c)["ari_cert_id"].as_str().expect("id").to_owned())
        .collect();
    let orders_before = proxy.stats().new_orders;
    let run = batch_run(&env, &proxy.directory_url(), &config, &file, &[]).await;
    run.assert_ok();
    let after = report(&env.path("report.json"));
    assert_eq!(after.len(), 50);
    let stats = proxy.stats();
    assert_eq!(stats.new_orders - orders_before, 10, "{stats:?}");
    let replaced: BTreeSet<String> = stats.replaces.iter().cloned().collect();
    assert_eq!(
        replaced, due,
        "each renewal names the certificate it replaces"
    );
    for ((old, new), old_id) in before.iter().zip(&after).zip(&old_ids) {
        assert_eq!(old["names"], new["names"], "same order of jobs");
        assert_eq!(new["state"], "issued", "{new}");
        let was_due = due.contains(old_id);
        assert_eq!(new["up_to_date"], !was_due, "{new}");
        assert_eq!(
            old["serial"] != new["serial"],
            was_due,
            "only the due certificates are new: {old} -> {new}"
        );
    }
    let again = batch_run(&env, &proxy.directory_url(), &config, &file, &[]).await;
    again.assert_ok();
    assert_eq!(
        proxy.stats().new_orders - orders_before,
        10,
        "nothing is due on the third run"
    );
    let last = report(&env.path("report.json"));
    assert!(last.iter().all(|c| c["up_to_date"] == true), "{last:?}");
}

/// `n` certificates issued behind the CA double, whose renewalInfo answers a 404 for each
/// (no window for these CertIDs). Returns the proxy, config and batch file.
async fn issued_batch_without_windows(env: &Env, n: usize) -> (CaProxy, String, String) {
    let proxy = CaProxy::start(&env.pebble, CaProxyOptions::default())
        .await
        .expect("proxy");
    env.register_at(&proxy.directory_url(), "account.pem").await;
    let config = write_config(env, "[batch]\nrate_limits = \"none\"\n");
    let names: Vec<String> = (0..n).map(|i| format!("u{i}.noari.test")).collect();
    let file = write_list(env, "noari.txt", &names);
    batch_run(env, &proxy.directory_url(), &config, &file, &[])
        .await
        .assert_ok();
    (proxy, config, file)
}

/// How many renewalInfo requests the proxy has seen.
fn ari_requests(proxy: &CaProxy) -> u64 {
    proxy
        .stats()
        .requests
        .get("renewal-info")
        .copied()
        .unwrap_or(0)
}

/// renewalInfo answers nothing usable for these certificates (404 each): running the batch
/// again and `renew --all` decide by lifetime (nothing is due, no order), name three
/// certificates in their warnings and count the rest in one line, not a line each.
#[tokio::test]
async fn unavailable_renewal_info_is_warned_for_three_certificates_and_counted_for_the_rest() {
    let Some(env) = Env::start(PebbleOptions::default().nonce_reject(0)).await else {
        return;
    };
    let (proxy, config, file) = issued_batch_without_windows(&env, 12).await;
    let orders = proxy.stats().new_orders;
    let asked = ari_requests(&proxy);
    let again = batch_run(&env, &proxy.directory_url(), &config, &file, &[]).await;
    let renew = renew_all(&env, &proxy, &config).await;
    for run in [&again, &renew] {
        run.assert_ok();
        let named = run
            .stderr
            .lines()
            .filter(|l| l.contains(".noari.test: renewal info unavailable ("))
            .count();
        assert_eq!(named, 3, "three certificates named:\n{run}");
        assert!(
            run.stderr
                .contains("renewal info unavailable for 9 more certificates (not named above)"),
            "the rest counted in one line:\n{run}"
        );
        assert!(
            !run.stderr.contains("times in a row"),
            "a 404 is no outage:\n{run}"
        );
    }
    assert!(renew.stdout.contains("renewed 0, not due 12"), "{renew}");
    assert_eq!(
        ari_requests(&proxy) - asked,
        24,
        "each certificate asked for, twice"
    );
    assert_eq!(
        proxy.stats().new_orders,
        orders,
        "decided by lifetime: nothing due"
    );
}

/// renewalInfo down (503 for every request): `renew --all` stops asking after five
/// failures in a row and decides the rest by lifetime; a batch's renewal check (16 lookups
/// in flight) asks for fewer than all of its 40 certificates. Nothing is ordered.
#[tokio::test]
async fn renewal_info_down_is_asked_five_times_in_a_row_then_not_for_the_rest() {
    let Some(env) = Env::start(PebbleOptions::default().nonce_reject(0)).await else {
        return;
    };
    let n = 40;
    let (proxy, config, file) = issued_batch_without_windows(&env, n).await;
    proxy.set_renewal_info_down(true);
    let orders = proxy.stats().new_orders;
    let asked = ari_requests(&proxy);
    let renew = renew_all(&env, &proxy, &config).await;
    renew.assert_ok();
    assert_eq!(
        ari_requests(&proxy) - asked,
        5,
        "five outages, then no request:\n{renew}"
    );
    assert!(
        renew.stderr.contains("renewalInfo failed 5 times in a row"),
        "{renew}"
    );
    assert!(
        renew.stderr.contains(&format!(
            "{} certificates were decided by their lifetime without asking",
            n - 5
        )),
        "{renew}"
    );
    assert!(
        renew.stdout.contains(&format!("renewed 0, not due {n}")),
        "{renew}"
    );
    let asked = ari_requests(&proxy);
    let again = batch_run(&env, &proxy.directory_url(), &config, &file, &[]).await;
    again.assert_ok();
    let batch_asked = ari_requests(&proxy) - asked;
    assert!(
        (5..n as u64).contains(&batch_asked),
        "the batch asked {batch_asked} times for {n} certificates:\n{again}"
    );
    assert!(
        again.stderr.contains("renewalInfo failed 5 times in a row"),
        "{again}"
    );
    assert_eq!(
        proxy.stats().new_orders,
        orders,
        "decided by lifetime: nothing due"
    );
}
