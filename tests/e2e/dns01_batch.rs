//! Batches and propagation (acceptance 2 and the propagation timeout of acceptance 4):
//! 200 names of one zone presented with at most two UPDATE messages and verified on both
//! authoritative servers; a lagging secondary named in the timeout error.

use certfleet_testenv::{BindOptions, SecondaryMode};

use crate::common::check_issued;
use crate::dns_env::DnsEnv;

#[tokio::test]
async fn two_hundred_names_in_one_zone_take_at_most_two_updates_and_reach_both_servers() {
    let options = BindOptions {
        secondary: Some(SecondaryMode::Notified),
        ..BindOptions::default()
    };
    let Some(d) = DnsEnv::start(options).await else {
        return;
    };
    let config = d.config(
        "certfleet.toml",
        &[&d.dns01_section(60), &d.rfc2136_with_key_file("acme-key")],
    );
    let owned: Vec<String> = (0..200).map(|i| format!("n{i:03}.example.test")).collect();
    let names: Vec<&str> = owned.iter().map(String::as_str).collect();
    let before = d.bind.stats(d.bind.primary()).await.expect("stats");
    let run = d.issue(&config, "rfc2136", &names, "out", &[]).await;
    run.assert_ok();
    let root = d.env.issuing_root_file(0).await;
    check_issued(&d.env.path("out"), &names, &root);

    // BIND's own count: present and cleanup, at most two UPDATE messages each.
    let after = d.bind.stats(d.bind.primary()).await.expect("stats");
    let updates = after.updates - before.updates;
    assert!(
        (2..=4).contains(&updates),
        "{updates} UPDATE messages for present + cleanup of 200 records\n{run}"
    );
    // The plugin's count agrees.
    let cost = run
        .stderr
        .lines()
        .find(|l| l.contains("dns-01 provider cost"))
        .unwrap_or_else(|| panic!("no cost line:\n{run}"));
    assert!(
        cost.contains(&format!("update_messages={updates}")),
        "plugin and BIND disagree ({updates} at BIND): {cost}"
    );
    // Every record was verified on both servers before Pebble was told to look.
    let secondary = d.bind.secondary().expect("secondary");
    assert!(
        run.stderr.contains("visible on every authoritative server")
            && run.stderr.contains("checks=400"),
        "200 names x 2 servers checked:\n{run}"
    );
    assert!(
        d.bind.stats(secondary).await.expect("stats").queries >= 200,
        "the secondary was asked"
    );
    // Serial-aware: the secondary is asked its SOA serial until it caught up, then each
    // TXT once; the check's own count is per check, not a running total.
    let visible = run
        .stderr
        .lines()
        .find(|l| l.contains("visible on every authoritative server"))
        .unwrap_or_else(|| panic!("no propagation line:\n{run}"));
    let queries: u64 = visible
        .split("queries=")
        .nth(1)
        .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no queries= in {visible}"));
    assert!(
        (400..=400 + 40).contains(&queries),
        "200 records on 2 servers: one TXT query each plus a few SOA queries, got {queries}: \
         {visible}"
    );
    d.assert_no_txt(d.bind.primary(), &names);
}

#[tokio::test]
async fn propagation_timeout_names_the_lagging_server_and_cleans_up() {
    let options = BindOptions {
        secondary: Some(SecondaryMode::Lagging),
        ..BindOptions::default()
    };
    let Some(d) = DnsEnv::start(options).await else {
        return;
    };
    let config = d.config(
        "certfleet.toml",
        &[&d.dns01_section(3), &d.rfc2136_with_key_file("acme-key")],
    );
    let names = ["lag.example.test"];
    let run = d.issue(&config, "rfc2136", &names, "out", &[]).await;
    run.assert_exit_1();
    let secondary = d.bind.secondary().expect("secondary");
    assert!(
        run.stderr
            .contains(&format!("ns2.example.test. ({secondary}) lags"))
            && run.stderr.contains("NXDOMAIN with no TXT")
            && run.stderr.contains("records not visible after"),
        "the error names the lagging server and what it answered:\n{run}"
    );
    assert!(
        !run.stderr.contains(&format!("({}) lags", d.bind.primary())),
        "the primary is not lagging:\n{run}"
    );
    // Nothing was asked of the CA, and the record was removed again.
    d.assert_no_txt(d.bind.primary(), &names);
    assert!(!d.env.path("out").join("cert.pem").exists());
}
