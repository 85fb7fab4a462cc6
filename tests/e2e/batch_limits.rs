//! `certfleet batch` behind the CA proxy (issue 5): the governor configured like the CA's
//! limits provokes no 429 and finishes close to the minimum (acceptance 2); without the
//! governor the CA's 429s pause only their scope and everything is issued (acceptance 3);
//! injected 503s with `Retry-After` do not stop the batch (acceptance 6); a CA bucket that
//! holds fewer tokens than the governor's (another client on the account) costs one
//! refusal per missing token, not one per paced order; a first order that reaches the CA
//! late (the CA's count starts then) costs none.

use std::time::Duration;

use certfleet_batch::batch_file::{BatchFile, ParseOptions};
use certfleet_batch::plan;
use certfleet_testenv::{
    CaProxy, CaProxyOptions, LimitSpec, PebbleOptions, ProxyLimits, ProxyStats,
};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::batch::{batch_run, report, write_config, write_list};
use crate::common::{Env, Run};

fn proxy_limits() -> ProxyLimits {
    ProxyLimits {
        new_orders_per_account: Some(LimitSpec::new(20, Duration::from_secs(60))),
        certificates_per_registered_domain: Some(LimitSpec::new(3, Duration::from_secs(60))),
        ..ProxyLimits::default()
    }
}

/// The governor's limits alike, as a config section.
const GOVERNOR_LIMITS: &str = "[batch]\nrate_limits = \"none\"\nretry_backoff_secs = 1\n\
     [batch.limits]\nnew_orders_per_account = { capacity = 20, period = \"60s\" }\n\
     certificates_per_registered_domain = { capacity = 3, period = \"60s\" }\n";

async fn start(options: CaProxyOptions) -> Option<(Env, CaProxy)> {
    let env = Env::start(PebbleOptions::default().nonce_reject(0)).await?;
    let proxy = CaProxy::start(&env.pebble, options).await.expect("proxy");
    Some((env, proxy))
}

/// Registers an account at the CA double (shared with the bundle tests).
pub(crate) async fn register(env: &Env, proxy: &CaProxy) {
    env.register_at(&proxy.directory_url(), "account.pem").await;
}

#[track_caller]
fn assert_all_issued(env: &Env, n: usize) {
    let certs = report(&env.path("report.json"));
    assert_eq!(certs.len(), n, "report lists every certificate");
    let bad: Vec<_> = certs.iter().filter(|c| c["state"] != "issued").collect();
    assert!(bad.is_empty(), "not issued: {bad:?}");
}

/// Issues `n` certificates `h<i>.<label>.test` with the governor's new-order limit at
/// `(capacity, period)`, asserting every one issued; the CA double's counts after.
async fn run_paced(
    env: &Env,
    proxy: &CaProxy,
    (capacity, period): (u32, &str),
    label: &str,
    n: usize,
) -> (ProxyStats, Run) {
    let config = write_config(
        env,
        &format!(
            "[batch]\nrate_limits = \"none\"\nretry_backoff_secs = 1\n\
             [batch.limits]\nnew_orders_per_account = {{ capacity = {capacity}, period = \"{period}\" }}\n"
        ),
    );
    let names: Vec<String> = (0..n).map(|i| format!("h{i}.{label}.test")).collect();
    let file = write_list(env, &format!("{label}.txt"), &names);
    let run = batch_run(env, &proxy.directory_url(), &config, &file, &[]).await;
    run.assert_ok();
    assert_all_issued(env, n);
    (proxy.stats(), run)
}

#[tokio::test]
async fn governed_batch_provokes_no_429_and_finishes_near_the_minimum() {
    let options = CaProxyOptions {
        limits: proxy_limits(),
        ..CaProxyOptions::default()
    };
    let Some((env, proxy)) = start(options).await else {
        return;
    };
    register(&env, &proxy).await;
    let config = write_config(&env, GOVERNOR_LIMITS);
    // 30 certificates over 6 registered domains, 5 each: both limits bind.
    let names: Vec<String> = (0..30).map(|i| format!("h{i}.d{}.test", i % 6)).collect();
    let file = write_list(&env, "governed.txt", &names);
    let batch = BatchFile::parse_list(&(names.join("\n") + "\n"), "list", &ParseOptions::default())
        .expect("valid");
    let limits = certfleet_batch::Limits {
        new_orders_per_account: Some(
            certfleet_batch::gcra::Limit::new("orders", 20, Duration::from_secs(60))
                .expect("limit"),
        ),
        certificates_per_registered_domain: Some(
            certfleet_batch::gcra::Limit::new("domain", 3, Duration::from_secs(60)).expect("limit"),
        ),
        ..certfleet_batch::Limits::default()
    };
    let minimum = plan::plan(&batch.certs, &limits, OffsetDateTime::now_utc()).duration();
    let run = batch_run(&env, &proxy.directory_url(), &config, &file, &[]).await;
    run.assert_ok();
    let stats = proxy.stats();
    assert_eq!(
        stats.rate_limited_total(),
        0,
        "no 429 at the proxy: {stats:?}"
    );
    assert_all_issued(&env, names.len());
    eprintln!("minimum {minimum:?}, run {:?}", run.elapsed);
    assert!(
        run.elapsed.as_secs_f64() <= 1.25 * minimum.as_secs_f64() + 3.0,
        "run took {:?}, the limits allow {minimum:?}",
        run.elapsed
    );
}

#[tokio::test]
async fn ungoverned_batch_pauses_only_the_limited_domain_and_issues_everything() {
    let options = CaProxyOptions {
        limits: proxy_limits(),
        ..CaProxyOptions::default()
    };
    let Some((env, proxy)) = start(options).await else {
        return;
    };
    register(&env, &proxy).await;
    let config = write_config(
        &env,
        "[batch]\nrate_limits = \"none\"\nretry_backoff_secs = 1\n",
    );
    // hot.test needs 5 certificates (3 per minute allowed); 4 other domains need 3 each.
    let mut names: Vec<String> = (0..5).map(|i| format!("h{i}.hot.test")).collect();
    names.extend((0..12).map(|i| format!("h{i}.cool{}.test", i % 4)));
    let file = write_list(&env, "ungoverned.txt", &names);
    let started = OffsetDateTime::now_utc();
    // Few orders at once, so hot.test's later orders meet certificates already issued (the
    // CA checks at new-order time and spends at issuance). Orders waiting for validation
    // hold no work slot, so the pending-authorization bound is what keeps them few (one
    // order waiting, one being finalized).
    let run = batch_run(
        &env,
        &proxy.directory_url(),
        &config,
        &file,
        &["--concurrency", "1", "--pending-authorizations", "1"],
    )
    .await;
    run.assert_ok();
    let stats = proxy.stats();
    assert!(stats.rate_limited_total() > 0, "the CA limited: {stats:?}");
    assert!(
        stats
            .rate_limited
            .keys()
            .all(|k| k == "certificates-per-registered-domain"),
        "only the per-domain limit was hit: {stats:?}"
    );
    assert_all_issued(&env, names.len());
    // The cool domains were not held up by hot.test's pause, and hot.test's last
    // certificates waited for its Retry-After (a third of a minute per token).
    let certs = report(&env.path("report.json"));
    let issued_at = |name: &str| -> OffsetDateTime {
        let c = certs
            .iter()
            .find(|c| c["names"][0] == name)
            .expect("in report");
        let dir = c["cert_dir"].as_str().expect("cert_dir");
        let meta: serde_json::Value = serde_json::from_slice(
            &std::fs::read(std::path::Path::new(dir).join("meta.json")).expect("meta"),
        )
        .expect("meta json");
        OffsetDateTime::parse(meta["issued_at"].as_str().expect("issued_at"), &Rfc3339)
            .expect("time")
    };
    let last_cool = names[5..].iter().map(|n| issued_at(n)).max().expect("cool");
    let last_hot = names[..5].iter().map(|n| issued_at(n)).max().expect("hot");
    assert!(
        last_cool < last_hot,
        "other domains kept issuing during the pause"
    );
    assert!(
        last_hot - started >= time::Duration::seconds(15),
        "Retry-After honoured: hot.test finished after {}",
        last_hot - started
    );
    assert!(!run.stderr.contains(" failed"), "nothing failed:\n{run}");
}

#[tokio::test]
async fn injected_503s_with_retry_after_do_not_stop_the_batch() {
    let options = CaProxyOptions {
        unavailable_rate: 0.1,
        unavailable_retry_after: Duration::from_secs(1),
        ..CaProxyOptions::default()
    };
    let Some((env, proxy)) = start(options).await else {
        return;
    };
    // Register without injected failures, then turn them on for the batch.
    proxy.set_unavailable_rate(0.0);
    register(&env, &proxy).await;
    proxy.set_unavailable_rate(0.1);
    let config = write_config(
        &env,
        "[batch]\nrate_limits = \"none\"\nretry_backoff_secs = 1\n",
    );
    let names: Vec<String> = (0..100)
        .map(|i| format!("h{i}.flaky{}.test", i % 5))
        .collect();
    let file = write_list(&env, "flaky.txt", &names);
    let run = batch_run(&env, &proxy.directory_url(), &config, &file, &[]).await;
    run.assert_ok();
    let stats = proxy.stats();
    assert!(
        stats.injected_unavailable > 0,
        "503s were injected: {stats:?}"
    );
    assert_all_issued(&env, names.len());
}

/// Another client spent two of the account's new-order tokens (here: a batch run without
/// the governor), so the CA's bucket holds two tokens fewer than the governor's. The
/// burst meets those two refusals; the refused tokens stay spent, which realigns the
/// governor with the CA, and the orders paced after the burst meet none (refunding them
/// would keep the governor two tokens up: a refusal for nearly every paced order).
#[tokio::test]
async fn a_bucket_another_client_spent_realigns_after_its_refusals() {
    let limit = LimitSpec::new(5, Duration::from_secs(25));
    let options = CaProxyOptions {
        limits: ProxyLimits {
            new_orders_per_account: Some(limit),
            ..ProxyLimits::default()
        },
        ..CaProxyOptions::default()
    };
    let Some((env, proxy)) = start(options).await else {
        return;
    };
    register(&env, &proxy).await;
    let ungoverned = write_config(
        &env,
        "[batch]\nrate_limits = \"none\"\nretry_backoff_secs = 1\n",
    );
    let elsewhere = write_list(
        &env,
        "elsewhere.txt",
        &["a.elsewhere.test".into(), "b.elsewhere.test".into()],
    );
    batch_run(&env, &proxy.directory_url(), &ungoverned, &elsewhere, &[])
        .await
        .assert_ok();
    assert_eq!(proxy.stats().new_orders, 2);
    // Five in the burst (three fit at the CA), then one every 5 s.
    let (stats, run) = run_paced(&env, &proxy, (5, "25s"), "paced", 8).await;
    assert_eq!(stats.new_orders, 10, "one order per certificate: {stats:?}");
    // The CA refills a token every 5 s: the two it lacked are still missing when the
    // second run starts (on a slow machine one of them may be back by then).
    let refused = stats.rate_limited_total();
    assert!(
        (1..=2).contains(&refused),
        "the burst met the tokens spent elsewhere, the paced orders nothing: {stats:?}\n{run}"
    );
}

/// The first new order reaches the CA 1.5 s after its grant (a slow first connection), so
/// the CA's bucket, full until then, counts from that arrival and frees each later token
/// 1.5 s after ours. The governor keeps the slowest newOrder answer from its boundaries:
/// the orders paced after the burst arrive after the CA's boundary, not at ours plus the
/// fixed 0.5 s (which met a 429 here).
#[tokio::test]
async fn a_late_first_order_moves_the_pacing_behind_the_cas_count() {
    let options = CaProxyOptions {
        limits: ProxyLimits {
            new_orders_per_account: Some(LimitSpec::new(3, Duration::from_secs(6))),
            ..ProxyLimits::default()
        },
        first_new_order_delay: Duration::from_millis(1_500),
        ..CaProxyOptions::default()
    };
    let Some((env, proxy)) = start(options).await else {
        return;
    };
    register(&env, &proxy).await;
    // Three in the burst, then one every 2 s.
    let (stats, run) = run_paced(&env, &proxy, (3, "6s"), "late", 6).await;
    assert_eq!(stats.new_orders, 6, "one order per certificate: {stats:?}");
    assert_eq!(
        stats.rate_limited_total(),
        0,
        "the paced orders arrived after the CA's boundary: {stats:?}\n{run}"
    );
}
