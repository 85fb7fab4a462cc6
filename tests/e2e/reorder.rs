//! A CA may reorder whatever RFC 8555 leaves unordered: the identifiers and the
//! authorizations of an order (two lists with no correspondence by position), the
//! challenges of an authorization, a page of the orders list, the members of every JSON
//! object and the `Link` headers. Through a CA double that permutes all of it in every
//! response (`CaProxyOptions::reorder`; the seed is printed, `CERTFLEET_E2E_REORDER_SEED`
//! repeats a run), `issue`, `renew` and a batch must still get exactly the names asked for,
//! a wildcard beside its base name (two TXT values at one name) and the preferred chain.

use std::path::Path;

use certfleet_testenv::{CaProxy, CaProxyOptions, CertInfo, PebbleOptions};

use crate::batch::{BATCH_TIMEOUT, report, write_config, write_list};
use crate::common::{COMMAND_TIMEOUT, Env, check_issued};

/// A Pebble with two alternate roots behind a reordering CA double, an account, the
/// challtestsrv plugin's config and the CN of the alternate root to prefer.
async fn start() -> Option<(Env, CaProxy, String, String)> {
    let env = Env::start(PebbleOptions::default().alternate_roots(2)).await?;
    let options = CaProxyOptions {
        reorder: Some(crate::common::seed("CERTFLEET_E2E_REORDER_SEED", "reorder")),
        ..CaProxyOptions::default()
    };
    let proxy = CaProxy::start(&env.pebble, options).await.expect("proxy");
    env.register_at(&proxy.directory_url(), "account.pem").await;
    let roots = env.pebble.issuing_roots().await.expect("roots");
    let wanted = CertInfo::from_pem(&roots[2])
        .expect("root")
        .subject_cn
        .expect("CN");
    let config = write_config(&env, "[batch]\nrate_limits = \"none\"\n");
    Some((env, proxy, config, wanted))
}

/// The issuer at the top of `dir`'s chain.pem (the root CN `--preferred-chain` matches).
fn chain_top(dir: &Path) -> String {
    certfleet_testenv::read_certs(&dir.join("chain.pem"))
        .expect("chain")
        .last()
        .and_then(|c| c.issuer_cn.clone())
        .expect("issuer")
}

#[tokio::test]
async fn issue_and_renew_through_a_ca_that_reorders_what_it_may() {
    let Some((env, proxy, config, wanted)) = start().await else {
        return;
    };
    let root = env.issuing_root_file(2).await;
    // Rounds draw other permutations of the same shapes.
    for round in 0..3 {
        let base = format!("r{round}.reorder.test");
        let names = [
            base.clone(),
            format!("*.{base}"),
            format!("a.{base}"),
            format!("b.{base}"),
        ];
        let out = env.path(&base);
        let out_s = out.to_string_lossy().into_owned();
        let mut args = vec![
            "--config",
            &config,
            "issue",
            "--challenge",
            "dns-01",
            "--dns-plugin",
            "challtestsrv",
            "--preferred-chain",
            &wanted,
            "--out",
            &out_s,
        ];
        for name in &names {
            args.extend(["--name", name.as_str()]);
        }
        let run = env
            .run_at(&proxy.directory_url(), &args, COMMAND_TIMEOUT)
            .await;
        run.assert_ok();
        let asked: Vec<&str> = names.iter().map(String::as_str).collect();
        check_issued(&out, &asked, &root);
        assert_eq!(
            chain_top(&out),
            wanted,
            "round {round}: the preferred chain"
        );
    }
    let out = env.path("r2.reorder.test");
    let before = certfleet_testenv::read_cert(&out.join("cert.pem")).expect("cert");
    let renew = env
        .run_at(
            &proxy.directory_url(),
            &[
                "--config",
                &config,
                "renew",
                "--name",
                "r2.reorder.test",
                "--force",
            ],
            COMMAND_TIMEOUT,
        )
        .await;
    renew.assert_ok();
    let (after, _) = check_issued(
        &out,
        &[
            "r2.reorder.test",
            "*.r2.reorder.test",
            "a.r2.reorder.test",
            "b.r2.reorder.test",
        ],
        &root,
    );
    assert_ne!(after.serial_hex, before.serial_hex, "renewed");
    assert_eq!(
        chain_top(&out),
        wanted,
        "the renewal kept the preferred chain"
    );
    assert_reordered_all(&proxy.stats().reordered);
}

#[tokio::test]
async fn a_batch_through_a_ca_that_reorders_what_it_may_gets_each_name_set_once() {
    let Some((env, proxy, config, wanted)) = start().await else {
        return;
    };
    // Several names per certificate, wildcards beside their base names, three zones.
    let sets: Vec<Vec<String>> = (0..24)
        .map(|i| {
            let base = format!("s{i}.zone{}.test", i % 3);
            match i % 3 {
                0 => vec![base.clone(), format!("*.{base}")],
                1 => vec![base.clone(), format!("www.{base}"), format!("api.{base}")],
                _ => vec![format!("*.{base}"), base.clone(), format!("x.{base}")],
            }
        })
        .collect();
    let lines: Vec<String> = sets.iter().map(|s| s.join(" ")).collect();
    let file = write_list(&env, "sets.txt", &lines);
    let report_path = env.path("report.json");
    let report_s = report_path.to_string_lossy().into_owned();
    let run = env
        .run_at(
            &proxy.directory_url(),
            &[
                "--config",
                &config,
                "batch",
                "run",
                &file,
                "--preferred-chain",
                &wanted,
                "--report",
                &report_s,
            ],
            BATCH_TIMEOUT,
        )
        .await;
    run.assert_ok();
    let certs = report(&report_path);
    assert_eq!(certs.len(), sets.len(), "{run}");
    let stats = proxy.stats();
    stats.assert_finalized_once(sets.len(), 0);
    let root = env.issuing_root_file(2).await;
    let mut seen = std::collections::BTreeSet::new();
    for cert in &certs {
        assert_eq!(cert["state"], "issued", "{cert}");
        // The batch file's names in its order, whatever order the CA lists them in.
        let names: Vec<String> = serde_json::from_value(cert["names"].clone()).expect("names");
        assert!(
            sets.contains(&names),
            "{names:?} is a line of the batch file"
        );
        assert!(seen.insert(names.clone()), "{names:?} reported once");
        let dir = Path::new(cert["cert_dir"].as_str().expect("cert_dir"));
        let asked: Vec<&str> = names.iter().map(String::as_str).collect();
        let (leaf, _) = check_issued(dir, &asked, &root);
        let key = certfleet_testenv::private_key_spki_der(&dir.join("privkey.pem")).expect("key");
        assert_eq!(
            leaf.spki_der,
            key,
            "{}: the certificate certifies privkey.pem",
            dir.display()
        );
        assert_eq!(chain_top(dir), wanted, "{}: preferred chain", dir.display());
    }
    assert_reordered_all(&stats.reordered);
}

/// The CA double changed the order of every kind of list it may reorder at least once.
#[track_caller]
fn assert_reordered_all(reordered: &std::collections::BTreeMap<String, u64>) {
    for what in [
        "identifiers",
        "authorizations",
        "challenges",
        "members",
        "link",
    ] {
        assert!(
            reordered.get(what).is_some_and(|n| *n > 0),
            "the CA double reordered no {what}: {reordered:?}"
        );
    }
}
