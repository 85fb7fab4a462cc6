//! The `powerdns` plugin against a real pdns_server (Debian's, SQLite backend): a name and
//! its wildcard issued with DNS-01 validated by Pebble against that server (acceptance 1),
//! other TXT values surviving, zones by longest suffix, and a wrong API key reported clearly
//! without the key (acceptance 3, 4).

use certfleet_testenv::PebbleOptions;
use certfleet_testenv::pdns::{PDNS_API_KEY, Pdns, require_pdns};
use serde_json::json;

use crate::common::{Env, check_issued};
use crate::dns_api_support::{call, instance, issue_through, metrics, plugin_error, spread};
use crate::dns_env::assert_not_in_output;
use certfleet_testenv::plugin_dir;

const WRONG_KEY: &str = "wrong-pdns-key-4d81f0aa";

#[tokio::test]
async fn powerdns_issues_name_and_wildcard_validated_against_pdns_and_cleans_up() {
    if !require_pdns() {
        return;
    }
    let pdns = Pdns::start(&["pdns.test"]).await.expect("pdns starts");
    let Some(env) =
        Env::start(PebbleOptions::default().dns_server(pdns.dns_addr().to_string())).await
    else {
        return;
    };
    env.register_account().await;
    let owner = "_acme-challenge.pdns.test.";
    pdns.set_txt("pdns.test", owner, &["someone-elses-value"])
        .await
        .expect("seed TXT");
    let key_file = env.path("pdns.key");
    std::fs::write(&key_file, format!("{PDNS_API_KEY}\n")).expect("key file");
    let ns: Vec<String> = pdns
        .nameserver_addresses()
        .into_iter()
        .map(|(h, a)| format!("\"{h}\" = [\"{a}\"]"))
        .collect();
    let config = format!(
        "[dns01]\nplugin_dirs = [\"{}\"]\n[dns01.propagation]\ncheck = true\ntimeout_secs = 30\n\
         interval_millis = 200\nquery_timeout_millis = 1000\ndiscovery_resolvers = [\"{}\"]\n\
         nameserver_addresses = {{ {} }}\n[plugins.powerdns]\nurl = \"{}\"\napi_key_file = \"{}\"\n",
        plugin_dir().display(),
        pdns.dns_addr(),
        ns.join(", "),
        pdns.api_url(),
        key_file.display()
    );
    let names = ["pdns.test", "*.pdns.test"];
    let (_config, run) = issue_through(&env, &config, &names, "powerdns").await;
    if !run.status.success() {
        eprintln!("(pdns log:)\n{}", pdns.log_tail(30));
    }
    run.assert_ok();
    let root = env.issuing_root_file(0).await;
    check_issued(&env.path("out"), &names, &root);
    assert_not_in_output(&run, PDNS_API_KEY, "PowerDNS API key");
    // Both values went in one PATCH, and out in one.
    assert!(
        run.stderr.contains("change_requests=2"),
        "one PATCH per batch:\n{run}"
    );
    assert_eq!(
        pdns.txt("pdns.test", owner).await.expect("txt"),
        ["someone-elses-value"],
        "our two values are gone, the other one stays"
    );
    assert_eq!(pdns.dig_txt(owner).expect("dig"), ["someone-elses-value"]);
}

#[tokio::test]
async fn powerdns_keeps_other_values_and_finds_zones_by_longest_suffix() {
    if !require_pdns() {
        return;
    }
    let pdns = Pdns::start(&["p1.test", "sub.p1.test", "p2.test"])
        .await
        .expect("pdns");
    let inst = instance(
        "powerdns",
        json!({"url": pdns.api_url(), "api_key": PDNS_API_KEY}),
    )
    .await
    .expect("create");
    let mut records = spread(100, &["p1.test", "sub.p1.test", "p2.test"]);
    // A wildcard and its base share one name: two values in one RRset.
    records.push(certfleet_plugin_abi::TxtRecord {
        fqdn: records[0].fqdn.clone(),
        value: "second-value-on-the-same-name".into(),
    });
    let shared = records[0].fqdn.clone();
    pdns.set_txt("p1.test", &shared, &["other-owner"])
        .await
        .expect("seed");

    let started = std::time::Instant::now();
    call(&inst, "present", &records).await.expect("present");
    let present = started.elapsed();
    let m = metrics(&inst).await;
    assert_eq!(m["change_requests"], 3, "one PATCH per zone: {m}");
    assert_eq!(
        m["http_requests"], 7,
        "1 zone listing + per zone 1 GET, 1 PATCH: {m}"
    );
    for r in &records {
        let zone = ["sub.p1.test", "p1.test", "p2.test"]
            .into_iter()
            .find(|z| r.fqdn.ends_with(&format!(".{z}.")))
            .expect("zone");
        let values = pdns.txt(zone, &r.fqdn).await.expect("txt");
        assert!(
            values.contains(&r.value),
            "{} missing in {zone}: {values:?}",
            r.fqdn
        );
    }
    assert!(
        pdns.txt_names("p1.test")
            .await
            .expect("names")
            .iter()
            .all(|n| !n.contains(".sub.")),
        "records below sub.p1.test belong to that zone, not p1.test"
    );
    let mut shared_values = pdns.txt("p1.test", &shared).await.expect("txt");
    shared_values.sort();
    assert_eq!(shared_values.len(), 3, "{shared_values:?}");

    let started = std::time::Instant::now();
    call(&inst, "cleanup", &records).await.expect("cleanup");
    eprintln!(
        "powerdns: 100 records / 3 zones: present {present:?}, cleanup {:?}",
        started.elapsed()
    );
    assert_eq!(
        pdns.txt("p1.test", &shared).await.expect("txt"),
        ["other-owner"]
    );
    for z in ["sub.p1.test", "p2.test"] {
        assert!(
            pdns.txt_names(z).await.expect("names").is_empty(),
            "{z} has TXT left"
        );
    }
    assert_eq!(
        pdns.txt_names("p1.test").await.expect("names"),
        [shared.as_str()]
    );
    // Cleaning up again is not an error and sends no PATCH.
    call(&inst, "cleanup", &records)
        .await
        .expect("second cleanup");
    assert_eq!(metrics(&inst).await["change_requests"], 6);

    let (kind, message) =
        plugin_error(call(&inst, "present", &spread(1, &["nowhere.example"])).await);
    assert_eq!(kind, "not_found");
    assert!(
        message.contains("zone not found for _acme-challenge.h000.nowhere.example."),
        "{message}"
    );
}

#[tokio::test]
async fn powerdns_wrong_api_key_is_reported_clearly_by_plugin_check_and_present() {
    if !require_pdns() {
        return;
    }
    let pdns = Pdns::start(&["key.test"]).await.expect("pdns");
    let inst = instance(
        "powerdns",
        json!({"url": pdns.api_url(), "api_key": WRONG_KEY}),
    )
    .await
    .expect("create");
    let (kind, message) = plugin_error(call(&inst, "present", &spread(1, &["key.test"])).await);
    assert_eq!(kind, "auth");
    assert!(
        message.contains("HTTP 401: the API key was rejected"),
        "{message}"
    );
    assert!(!message.contains(WRONG_KEY));

    let Some(env) = Env::start(PebbleOptions::default()).await else {
        return;
    };
    for (key, ok) in [(WRONG_KEY, false), (PDNS_API_KEY, true)] {
        let config = env.path("certfleet.toml");
        std::fs::write(
            &config,
            format!(
                "{}[plugins.powerdns]\nurl = \"{}\"\napi_key = \"{key}\"\n",
                crate::dns_api_support::dns01_without_check(),
                pdns.api_url()
            ),
        )
        .expect("config");
        let c = config.to_string_lossy().into_owned();
        let run = env
            .run(&["--config", &c, "-vv", "plugin", "check", "powerdns"])
            .await;
        assert_not_in_output(&run, key, "PowerDNS API key");
        if ok {
            run.assert_ok();
            assert!(run.stdout.contains("the API key is accepted"), "{run}");
            assert!(run.stdout.contains("1 zones visible"), "{run}");
        } else {
            run.assert_exit_1();
            assert!(
                run.stdout.contains("FAIL  PowerDNS API")
                    && run.stdout.contains("the API key was rejected"),
                "{run}"
            );
        }
    }
}
