//! The `route53` plugin against moto (the AWS API emulator) with signature checking on for
//! what moto can check (every change batch's SigV4 signature, every request's access key id;
//! see `certfleet_testenv::moto`): 100 records across 3 hosted zones in one change batch per
//! zone, another TXT value on a shared name surviving (acceptance 2); a wrong secret or an
//! unknown key reported clearly by `present` and `plugin check` without the secret
//! (acceptance 3, 4); unknown zones; issuance through the CLI with Pebble accepting every
//! challenge (moto serves no DNS), asserting on the API's state.

use std::time::Instant;

use certfleet_testenv::PebbleOptions;
use certfleet_testenv::moto::{Moto, require_moto};
use serde_json::{Value, json};

use crate::common::{Env, check_issued};
use crate::dns_api_support::{
    call, dns01_without_check, instance, issue_through, metrics, plugin_error, spread,
};
use crate::dns_env::assert_not_in_output;

const ZONES: [&str; 3] = ["r53-one.test", "r53-two.test", "r53-three.test"];
const WRONG_SECRET: &str = "wrongSecretKeyDoNotPrint0123456789abcdEF";

fn config(moto: &Moto, secret: &str) -> Value {
    json!({
        "endpoint": moto.endpoint(),
        "access_key_id": moto.access_key_id(),
        "secret_access_key": secret,
        "poll_interval_millis": 50,
    })
}

async fn start(zones: &[&str]) -> Option<Moto> {
    if !require_moto() {
        return None;
    }
    let moto = Moto::start(zones).await.expect("moto starts");
    moto.enforce_auth().await.expect("auth on");
    Some(moto)
}

#[tokio::test]
async fn route53_presents_100_records_across_3_zones_in_one_batch_each() {
    let Some(moto) = start(&ZONES).await else {
        return;
    };
    let inst = instance("route53", config(&moto, moto.secret_access_key()))
        .await
        .expect("create");
    let records = spread(100, &ZONES);
    let shared = records[0].fqdn.clone();
    moto.upsert_txt(ZONES[0], &shared, &["someone-elses-value"])
        .await
        .expect("seed");

    let started = Instant::now();
    call(&inst, "present", &records)
        .await
        .unwrap_or_else(|e| panic!("present: {e}\n{}", moto.log_tail(20)));
    let present = started.elapsed();
    let m = metrics(&inst).await;
    assert_eq!(
        m["change_requests"], 3,
        "one ChangeResourceRecordSets per zone: {m}"
    );
    assert_eq!(
        m["change_polls"], 3,
        "one GetChange per change until INSYNC: {m}"
    );
    let posts = moto
        .requests()
        .iter()
        .filter(|r| r.starts_with("POST ") && r.ends_with("/rrset/"))
        .count();
    assert_eq!(posts, 3, "moto saw one ChangeResourceRecordSets per zone");
    for (i, zone) in ZONES.iter().enumerate() {
        let sets = moto.txt_sets(zone).await.expect("list");
        let ours: Vec<_> = records
            .iter()
            .enumerate()
            .filter(|(j, _)| j % 3 == i)
            .map(|(_, r)| r)
            .collect();
        for r in &ours {
            let values = sets
                .get(&r.fqdn)
                .unwrap_or_else(|| panic!("{} missing in {zone}: {sets:?}", r.fqdn));
            assert!(
                values.contains(&format!("\"{}\"", r.value)),
                "{}: {values:?}",
                r.fqdn
            );
        }
    }
    let shared_values = moto.txt_sets(ZONES[0]).await.expect("list")[&shared].clone();
    assert_eq!(shared_values.len(), 2, "{shared_values:?}");
    assert!(shared_values.contains(&"\"someone-elses-value\"".to_owned()));

    let started = Instant::now();
    call(&inst, "cleanup", &records).await.expect("cleanup");
    let cleanup = started.elapsed();
    for zone in ZONES {
        let sets = moto.txt_sets(zone).await.expect("list");
        let expect: Vec<&str> = if zone == ZONES[0] {
            vec![shared.as_str()]
        } else {
            vec![]
        };
        assert_eq!(
            sets.keys().map(String::as_str).collect::<Vec<_>>(),
            expect,
            "{zone}: {sets:?}"
        );
    }
    assert_eq!(
        moto.txt_sets(ZONES[0]).await.expect("list")[&shared],
        ["\"someone-elses-value\""]
    );
    let m = metrics(&inst).await;
    assert_eq!(m["change_requests"], 6, "{m}");
    eprintln!("route53/moto: 100 records / 3 zones: present {present:?}, cleanup {cleanup:?}, {m}");

    // Again: nothing left to remove, no change sent.
    call(&inst, "cleanup", &records)
        .await
        .expect("second cleanup");
    assert_eq!(metrics(&inst).await["change_requests"], 6);
}

#[tokio::test]
async fn route53_wrong_keys_and_unknown_zones_are_clear_errors() {
    let Some(moto) = start(&ZONES).await else {
        return;
    };
    // moto verifies the change batch's signature (the reads before it it cannot).
    let bad = instance("route53", config(&moto, WRONG_SECRET))
        .await
        .expect("create");
    let (kind, message) = plugin_error(call(&bad, "present", &spread(1, &ZONES)).await);
    assert_eq!(kind, "auth", "{message}");
    assert!(
        message.contains("POST ")
            && message.contains("/rrset/: HTTP 403")
            && message.contains("the AWS credentials from the plugin settings were rejected")
            && message.contains("SignatureDoesNotMatch"),
        "{message}"
    );
    assert!(!message.contains(WRONG_SECRET));
    assert!(
        moto.txt_sets(ZONES[0]).await.expect("list").is_empty(),
        "nothing written"
    );

    let mut unknown = config(&moto, moto.secret_access_key());
    unknown["access_key_id"] = json!("AKIANOSUCHKEY0000000");
    let inst = instance("route53", unknown).await.expect("create");
    let (kind, message) = plugin_error(call(&inst, "present", &spread(1, &ZONES)).await);
    assert_eq!(kind, "auth", "{message}");
    assert!(message.contains("InvalidClientTokenId"), "{message}");
    assert!(!message.contains(moto.secret_access_key()));

    let good = instance("route53", config(&moto, moto.secret_access_key()))
        .await
        .expect("create");
    let (kind, message) =
        plugin_error(call(&good, "present", &spread(1, &["elsewhere.test"])).await);
    assert_eq!(kind, "not_found");
    assert!(
        message.contains("zone not found for _acme-challenge.h000.elsewhere.test.: none of the 3 public hosted zones"),
        "{message}"
    );
    let mut cfg = config(&moto, moto.secret_access_key());
    cfg["hosted_zone_id"] = json!("ZNOSUCHZONE");
    let pinned = instance("route53", cfg).await.expect("create");
    let (kind, message) = plugin_error(call(&pinned, "present", &spread(1, &ZONES)).await);
    assert_eq!(kind, "not_found", "{message}");
    assert!(message.contains("NoSuchHostedZone"), "{message}");

    let (kind, message) = plugin_error(
        instance(
            "route53",
            json!({"endpoint": moto.endpoint(), "access_key_id": "AKIAX"}),
        )
        .await
        .map(|_| json!({})),
    );
    assert_eq!(kind, "config");
    assert!(
        message.contains("access_key_id is set but secret_access_key"),
        "{message}"
    );
}

#[tokio::test]
async fn route53_issues_through_the_cli_and_plugin_check_reports_bad_keys() {
    let Some(moto) = start(&ZONES).await else {
        return;
    };
    let Some(env) = Env::start(PebbleOptions::default().always_valid(true)).await else {
        return;
    };
    env.register_account().await;
    let creds = env.path("aws-credentials");
    let write_creds = |key_id: &str, secret: &str| {
        std::fs::write(
            &creds,
            format!(
                "[default]\naws_access_key_id = AKIAWRONGPROFILE0000\naws_secret_access_key = nope\n\
                 [certfleet]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n"
            ),
        )
        .expect("credentials file")
    };
    write_creds(moto.access_key_id(), moto.secret_access_key());
    let config = format!(
        "{}[plugins.route53]\nendpoint = \"{}\"\ncredentials_file = \"{}\"\nprofile = \"certfleet\"\n\
         poll_interval_millis = 50\n",
        dns01_without_check(),
        moto.endpoint(),
        creds.display()
    );
    let names = ["r53-three.test", "*.r53-three.test"];
    let (c, run) = issue_through(&env, &config, &names, "route53").await;
    run.assert_ok();
    assert_not_in_output(&run, moto.secret_access_key(), "AWS secret access key");
    assert!(
        run.stderr.contains("change_requests=2"),
        "one change in, one out:\n{run}"
    );
    check_issued(&env.path("out"), &names, &env.issuing_root_file(0).await);
    assert!(
        moto.txt_sets("r53-three.test")
            .await
            .expect("list")
            .is_empty(),
        "cleaned up"
    );

    let check = env
        .run(&["--config", &c, "plugin", "check", "route53"])
        .await;
    check.assert_ok();
    assert!(
        check
            .stdout
            .contains("[certfleet] accepted; 3 public hosted zones visible"),
        "{check}"
    );

    // `check` only reads, and moto checks only the key id of a read.
    write_creds("AKIANOSUCHKEY0000000", WRONG_SECRET);
    let check = env
        .run(&["--config", &c, "-vv", "plugin", "check", "route53"])
        .await;
    check.assert_exit_1();
    assert!(
        check.stdout.contains("FAIL  Route 53 API")
            && check.stdout.contains("[certfleet] were rejected")
            && check.stdout.contains("InvalidClientTokenId"),
        "{check}"
    );
    assert_not_in_output(&check, WRONG_SECRET, "wrong AWS secret");
}
