//! Batches in the enterprise DNS lab (issue 19): the deletes of finished orders ride with
//! the next adds in one UPDATE (BIND's own log shows one message deleting and adding), and
//! names below a known zone cut cost the plugin no discovery query.

use std::collections::BTreeMap;

use certfleet_testenv::dns_lab::{LabPrimary, LabSecondary, PRIMARY, SECONDARY};

use crate::batch::{batch_run, report, write_list};
use crate::dns01_lab::{assert_clean_on, config, outside_as, start};

/// UPDATE messages in BIND's `update` log: each message's RR lines share the client
/// (`@pointer addr#port`, a fresh port per message). Per message: (adds, deletes).
fn update_messages(log: &str) -> BTreeMap<String, (usize, usize)> {
    let mut per: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for line in log.lines().filter(|l| l.contains(" an RR at ")) {
        let Some(client) = line
            .split("client ")
            .nth(1)
            .and_then(|r| r.split(": updating zone").next())
        else {
            continue;
        };
        let e = per.entry(client.to_owned()).or_default();
        if line.contains("adding an RR") {
            e.0 += 1;
        } else if line.contains("deleting an RR") {
            e.1 += 1;
        }
    }
    per
}

/// The number after `key` in each line containing `marker`, summed.
fn sum_field(log: &str, marker: &str, key: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains(marker))
        .filter_map(|l| {
            l.split(key)
                .nth(1)?
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

#[tokio::test]
async fn batch_deletes_ride_with_the_next_adds_in_one_update_and_names_cost_the_plugin_no_query() {
    if outside_as(
        "dns01_lab_batch",
        LabPrimary::Bind,
        "batch_deletes_ride_with_the_next_adds_in_one_update_and_names_cost_the_plugin_no_query",
    ) {
        return;
    }
    let (lab, env) = start(LabPrimary::Bind, LabSecondary::Current).await;
    let path = config(&env, &lab, 60, "");
    let text = std::fs::read_to_string(&path)
        .expect("config")
        .replace("[dns01]\n", "[dns01]\nplugin = \"rfc2136\"\n")
        + "[batch]\ngather_millis = 100\n";
    std::fs::write(&path, text).expect("config");
    // One order worked on at a time, at most 8 waiting for DNS or the CA, and short
    // rounds: a new order (an add) can only start once an earlier one is decided (its
    // delete follows), so from the ninth order on deletes and adds meet in the same rounds
    // whatever the speed of the machine.
    const N: usize = 60;
    let names: Vec<String> = (0..N).map(|i| format!("r{i:02}.acme.corp.test")).collect();
    let file = write_list(&env, "batch.txt", &names);
    let mark = lab.primary_log().len();
    let run = batch_run(
        &env,
        &env.pebble.directory_url(),
        &path.to_string_lossy(),
        &file,
        &[
            "--rate-limits",
            "none",
            "--concurrency",
            "1",
            "--pending-authorizations",
            "8",
        ],
    )
    .await;
    run.assert_ok();
    let certs = report(&env.path("report.json"));
    assert!(
        certs.len() == N && certs.iter().all(|c| c["state"] == "issued"),
        "every certificate issued:\n{run}"
    );
    let log = lab.primary_log()[mark..].to_owned();
    let messages = update_messages(&log);
    let (adds, deletes) = messages
        .values()
        .fold((0, 0), |(a, d), (ma, md)| (a + ma, d + md));
    assert!(
        adds >= N && deletes == adds,
        "{adds} adds, {deletes} deletes"
    );
    assert!(
        messages.values().any(|(a, d)| *a > 0 && *d > 0),
        "no UPDATE carried both a delete and an add: {messages:?}\n{run}"
    );
    // The plugin asks no query per name: placement is proven by the UPDATE's
    // prerequisites (discovery only for the first name: CNAME + SOA + the primary's
    // address), and the host checks propagation (no read-back). (Queries per record of the
    // whole batch, checker included, are measured by `cargo xtask bench dns --lab`: these
    // rounds are kept small on purpose, so per-round SOA queries dominate here.)
    let plugin = sum_field(&run.stderr, "dns-01 provider cost", "dns_queries=");
    assert!(
        plugin <= 10,
        "the plugin asked {plugin} queries for {adds} records\n{run}"
    );
    assert_clean_on(&lab, &[PRIMARY, SECONDARY]).await;
}
