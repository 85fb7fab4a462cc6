//! The `cloudflare` plugin against the local Cloudflare v4 fake: 100 records across 3 zones
//! with another value on a shared name surviving (acceptance 2), issuance through the CLI
//! with Pebble accepting every challenge (the fake serves no DNS), `plugin check` with a bad
//! token (acceptance 3), and bad input: wrong token, unknown zone, 429 then success, 500
//! forever, malformed answers, no token in any output (acceptance 4).

use std::time::{Duration, Instant};

use certfleet_testenv::PebbleOptions;
use certfleet_testenv::cloudflare_fake::{CloudflareFake, Fault};
use serde_json::json;

use crate::common::{Env, check_issued};
use crate::dns_api_support::{
    call, dns01_without_check, instance, issue_through, metrics, plugin_error, spread,
};
use crate::dns_env::assert_not_in_output;

const TOKEN: &str = "cf-test-token-6b1d0e9f2a";
const WRONG: &str = "cf-wrong-token-0aa7c3d5e1";
const ZONES: [&str; 3] = ["cf-one.test", "cf-two.test", "cf-three.test"];

#[tokio::test]
async fn cloudflare_presents_100_records_across_3_zones_and_keeps_other_values() {
    let fake = CloudflareFake::start(TOKEN, &ZONES).expect("fake");
    let inst = instance(
        "cloudflare",
        json!({"base_url": fake.base_url(), "api_token": TOKEN}),
    )
    .await
    .expect("create");
    let records = spread(100, &ZONES);
    let shared = records[0].fqdn.clone();
    fake.add_txt(&shared, "\"someone-elses-value\"");

    let started = Instant::now();
    call(&inst, "present", &records).await.expect("present");
    let present = started.elapsed();
    for r in &records {
        assert!(
            fake.txt(&r.fqdn).contains(&r.value),
            "{} lacks {}",
            r.fqdn,
            r.value
        );
    }
    assert_eq!(fake.txt(&shared).len(), 2, "ours and the other value");
    let m = metrics(&inst).await;
    assert_eq!(m["change_requests"], 3, "one batch per zone: {m}");
    // 1 zone listing + per zone 1 record listing + 1 batch.
    assert_eq!(m["http_requests"], 7, "{m}");
    let batches = fake
        .requests()
        .iter()
        .filter(|r| r.ends_with("/dns_records/batch"))
        .count();
    assert_eq!(batches, 3);

    let started = Instant::now();
    call(&inst, "cleanup", &records).await.expect("cleanup");
    let cleanup = started.elapsed();
    assert_eq!(fake.txt(&shared), ["someone-elses-value"]);
    assert_eq!(
        fake.record_count("cf-one.test"),
        1,
        "only the other value is left"
    );
    assert_eq!(
        fake.record_count("cf-two.test") + fake.record_count("cf-three.test"),
        0
    );
    let m = metrics(&inst).await;
    assert_eq!(m["change_requests"], 6, "{m}");
    assert_eq!(
        m["http_requests"], 13,
        "no zone listing the second time: {m}"
    );
    eprintln!(
        "cloudflare fake: 100 records / 3 zones: present {present:?}, cleanup {cleanup:?}, {m}"
    );
}

#[tokio::test]
async fn cloudflare_wrong_token_and_unknown_zone_are_clear_errors_without_the_token() {
    let fake = CloudflareFake::start(TOKEN, &ZONES).expect("fake");
    let bad = instance(
        "cloudflare",
        json!({"base_url": fake.base_url(), "api_token": WRONG}),
    )
    .await
    .expect("create");
    let (kind, message) = plugin_error(call(&bad, "present", &spread(2, &ZONES)).await);
    assert_eq!(kind, "auth");
    assert!(
        message.contains("HTTP 403: the API token was rejected")
            && message.contains("10000 Authentication error"),
        "{message}"
    );
    assert!(!message.contains(WRONG), "{message}");

    let good = instance(
        "cloudflare",
        json!({"base_url": fake.base_url(), "api_token": TOKEN}),
    )
    .await
    .expect("create");
    let (kind, message) =
        plugin_error(call(&good, "present", &spread(1, &["elsewhere.test"])).await);
    assert_eq!(kind, "not_found");
    assert!(
        message.contains(
            "zone not found for _acme-challenge.h000.elsewhere.test.: none of the 3 zones"
        ),
        "{message}"
    );

    let (kind, message) = plugin_error(
        instance("cloudflare", json!({"base_url": fake.base_url()}))
            .await
            .map(|_| json!({})),
    );
    assert_eq!(kind, "config");
    assert!(message.contains("api_token: missing"), "{message}");
    let (kind, message) = plugin_error(
        instance("cloudflare", json!({"api_token": TOKEN, "zone": "x"}))
            .await
            .map(|_| json!({})),
    );
    assert_eq!(kind, "config");
    assert!(message.contains("unknown field `zone`"), "{message}");
}

#[tokio::test]
async fn cloudflare_retries_429_then_succeeds_and_bounds_500_forever() {
    let fake = CloudflareFake::start(TOKEN, &ZONES).expect("fake");
    let inst = instance(
        "cloudflare",
        json!({"base_url": fake.base_url(), "api_token": TOKEN, "max_attempts": 3, "max_retry_secs": 20}),
    )
    .await
    .expect("create");
    let records = spread(3, &ZONES);

    fake.inject(Fault::RateLimited, 2);
    let started = Instant::now();
    call(&inst, "present", &records)
        .await
        .expect("present after two 429s");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "Retry-After: 1 was honoured twice"
    );
    assert_eq!(metrics(&inst).await["http_retries"], 2);
    for r in &records {
        assert_eq!(fake.txt(&r.fqdn), std::slice::from_ref(&r.value));
    }

    fake.inject(Fault::ServerError, u32::MAX);
    let started = Instant::now();
    let (kind, message) = plugin_error(call(&inst, "cleanup", &records).await);
    let took = started.elapsed();
    assert_eq!(kind, "provider");
    assert!(
        message.contains("HTTP 500 (after 3 attempts in"),
        "{message}"
    );
    assert!(message.contains("10001 Internal server error"), "{message}");
    assert!(took < Duration::from_secs(15), "bounded: {took:?}");
    fake.heal();
    // Nothing was removed by the failed cleanup; a retry of it removes everything.
    assert_eq!(
        fake.txt(&records[0].fqdn),
        std::slice::from_ref(&records[0].value)
    );
    call(&inst, "cleanup", &records)
        .await
        .expect("cleanup after healing");
    assert!(fake.txt(&records[0].fqdn).is_empty());

    fake.inject(Fault::Malformed, 1);
    let (kind, message) = plugin_error(call(&inst, "present", &records).await);
    assert_eq!(kind, "provider");
    assert!(
        message.contains("malformed answer (HTTP 200)") && message.contains("502 Bad Gateway"),
        "{message}"
    );
}

#[tokio::test]
async fn cloudflare_issues_through_the_cli_and_plugin_check_reports_bad_tokens() {
    let Some(env) = Env::start(PebbleOptions::default().always_valid(true)).await else {
        return;
    };
    env.register_account().await;
    let fake = CloudflareFake::start(TOKEN, &ZONES).expect("fake");
    let token_file = env.path("cf.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token file");
    let config = format!(
        "{}[plugins.cloudflare]\nbase_url = \"{}\"\napi_token_file = \"{}\"\n",
        dns01_without_check(),
        fake.base_url(),
        token_file.display()
    );
    let names = ["www.cf-two.test", "*.www.cf-two.test"];
    let (c, run) = issue_through(&env, &config, &names, "cloudflare").await;
    run.assert_ok();
    assert_not_in_output(&run, TOKEN, "Cloudflare API token");
    assert!(
        run.stderr.contains("change_requests=2"),
        "one batch in, one out:\n{run}"
    );
    check_issued(&env.path("out"), &names, &env.issuing_root_file(0).await);
    assert!(
        fake.txt("_acme-challenge.www.cf-two.test").is_empty(),
        "cleaned up"
    );
    let posts = fake
        .requests()
        .iter()
        .filter(|r| r.starts_with("POST") && r.ends_with("/batch"))
        .count();
    assert_eq!(posts, 2);

    let check = env
        .run(&["--config", &c, "plugin", "check", "cloudflare"])
        .await;
    check.assert_ok();
    assert!(
        check.stdout.contains("the API token is valid and active")
            && check.stdout.contains("3 zones visible"),
        "{check}"
    );

    std::fs::write(&token_file, WRONG).expect("token file");
    let check = env
        .run(&["--config", &c, "-vv", "plugin", "check", "cloudflare"])
        .await;
    check.assert_exit_1();
    assert!(
        check.stdout.contains("FAIL  Cloudflare API")
            && check.stdout.contains("the API token was rejected"),
        "{check}"
    );
    assert_not_in_output(&check, WRONG, "wrong Cloudflare API token");
}
