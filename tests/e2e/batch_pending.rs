//! Waiting is not working (issue 19, acceptance 4): orders whose challenges are presented
//! and which wait for the CA hold no work slot, and under the `letsencrypt` preset the
//! authorizations pending at once never exceed Let's Encrypt's 300 per account, as the CA
//! double counts them (it also refuses like Let's Encrypt beyond 300).

use std::time::Duration;

use certfleet_testenv::{CaProxy, CaProxyOptions, PebbleOptions, ProxyLimits};

use crate::batch::{batch_run, report, write_config};
use crate::batch_limits::register;
use crate::common::Env;

/// Let's Encrypt's pending-authorization limit per account.
const LE_PENDING: u64 = 300;

#[tokio::test]
async fn letsencrypt_preset_keeps_pending_authorizations_within_300_and_waiting_orders_hold_no_slot()
 {
    // Always-valid: the CA's time is the order-poll delay below, not DNS lookups.
    let pebble = PebbleOptions {
        always_valid: true,
        ..PebbleOptions::default()
    };
    let Some(env) = Env::start(pebble.nonce_reject(0)).await else {
        return;
    };
    let options = CaProxyOptions {
        limits: ProxyLimits {
            pending_authorizations_per_account: Some(LE_PENDING),
            ..ProxyLimits::default()
        },
        // A CA whose validation takes a while: orders stay pending (in the client's and
        // the double's view) for at least this long.
        order_poll_delay: Duration::from_secs(2),
        ..CaProxyOptions::default()
    };
    let proxy = CaProxy::start(&env.pebble, options).await.expect("proxy");
    register(&env, &proxy).await;
    // The preset's other limits allow the batch: 120 orders (< 300 per 3 h), 12
    // certificates per registered domain (< 50 per week), distinct name sets; 360
    // authorizations in all.
    let config = write_config(&env, "[batch]\nrate_limits = \"letsencrypt\"\n");
    let certs = 120;
    let lines: Vec<String> = (0..certs)
        .map(|i| {
            let d = format!("d{}.test", i % 10);
            format!("a{i}.{d} b{i}.{d} c{i}.{d}")
        })
        .collect();
    let file = env.path("pending.txt");
    std::fs::write(&file, lines.join("\n") + "\n").expect("batch file");
    // 8 work slots: if waiting orders held theirs, at most 8 orders (24 authorizations)
    // could be pending at once.
    let concurrency = 8;
    let run = batch_run(
        &env,
        &proxy.directory_url(),
        &config,
        &file.to_string_lossy(),
        &["--concurrency", &concurrency.to_string()],
    )
    .await;
    run.assert_ok();
    let stats = proxy.stats();
    let certs_list = report(&env.path("report.json"));
    let not_issued: Vec<_> = certs_list
        .iter()
        .filter(|c| c["state"] != "issued")
        .collect();
    assert!(
        certs_list.len() == certs && not_issued.is_empty(),
        "all {certs} issued: {not_issued:?}"
    );
    assert!(
        stats.max_pending_authorizations <= LE_PENDING,
        "pending authorizations reached {} (Let's Encrypt allows {LE_PENDING}): {stats:?}",
        stats.max_pending_authorizations
    );
    assert_eq!(
        stats.rate_limited_total(),
        0,
        "the CA double refused nothing: {stats:?}"
    );
    let slot_bound = 3 * concurrency as u64;
    assert!(
        stats.max_pending_authorizations > 2 * slot_bound,
        "waiting orders must not hold work slots: at most {} authorizations were pending at \
         once with {concurrency} slots (3 names per order)",
        stats.max_pending_authorizations
    );
    eprintln!(
        "max pending authorizations {}, run {:?}",
        stats.max_pending_authorizations, run.elapsed
    );
}
