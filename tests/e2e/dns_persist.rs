//! dns-persist-01 against acme2certifier (issue 17, acceptance 1): `persist records`
//! published once in BIND, then certificates for `a.corp.test`, `*.corp.test` and
//! `b.a.corp.test` with no DNS write during issuance (BIND's UPDATE counter); a missing
//! record and a record naming another account are refused, with the record to publish.

use crate::a2c_env::A2cEnv;
use crate::common::check_issued;

/// `persist records NAMES --json` → (name, value) pairs.
async fn records(env: &A2cEnv, state: &str, args: &[&str]) -> Vec<(String, String)> {
    records_env(env, state, args, &[]).await
}

async fn records_env(
    env: &A2cEnv,
    state: &str,
    args: &[&str],
    vars: &[(std::ffi::OsString, std::ffi::OsString)],
) -> Vec<(String, String)> {
    let mut full = vec!["persist", "records", "--json"];
    full.extend(args);
    let run = env.run_env(state, &full, vars).await;
    run.assert_ok();
    run.json()
        .as_array()
        .expect("array")
        .iter()
        .map(|r| {
            (
                r["name"].as_str().expect("name").to_owned(),
                r["value"].as_str().expect("value").to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn dns_persist_records_published_once_then_issuance_writes_no_dns() {
    let Some(env) = A2cEnv::start(|_| {}).await else {
        return;
    };
    env.register("main", "es256").await;
    let account_json = env.run("main", &["account", "show"]).await;
    account_json.assert_ok();

    let plain = records(&env, "main", &["a.corp.test"]).await;
    assert_eq!(plain.len(), 1, "{plain:?}");
    assert_eq!(plain[0].0, "_validation-persist.a.corp.test");
    assert!(
        plain[0]
            .1
            .starts_with("ca.certfleet.test; accounturi=https://127.0.0.1:")
            && !plain[0].1.contains("policy="),
        "{plain:?}"
    );
    // The zone-file form names the same record.
    let zone = env
        .run("main", &["persist", "records", "a.corp.test"])
        .await;
    zone.assert_ok();
    assert!(
        zone.stdout.contains(&format!(
            "_validation-persist.a.corp.test. 3600 IN TXT \"{}\"",
            plain[0].1
        )),
        "{zone}"
    );
    let wild = records(
        &env,
        "main",
        &["--wildcard", "*.corp.test", "b.a.corp.test"],
    )
    .await;
    assert!(
        wild.iter().all(|(_, v)| v.contains("; policy=wildcard")),
        "{wild:?}"
    );
    let mut all = plain.clone();
    all.extend(wild.iter().cloned());
    env.publish(&all);

    let primary = env.bind.primary();
    let before = env.bind.stats(primary).await.expect("stats").updates;
    let root = env.a2c.issuing_root_pem_path();
    for (out, names) in [
        ("out-a", vec!["a.corp.test"]),
        ("out-wild", vec!["*.corp.test", "b.a.corp.test"]),
    ] {
        let out_s = env.path(out).to_string_lossy().into_owned();
        let mut args = vec!["issue", "--challenge", "dns-persist-01", "--out", &out_s];
        for n in &names {
            args.extend(["--name", n]);
        }
        env.run("main", &args).await.assert_ok();
        check_issued(&env.path(out), &names, &root);
    }
    let after = env.bind.stats(primary).await.expect("stats").updates;
    assert_eq!(after, before, "no DNS write during dns-persist-01 issuance");
    assert!(
        env.a2c.log().contains("_validation-persist.corp.test"),
        "the CA read the wildcard record"
    );

    // No record for c.corp.test: the error names the record to publish.
    let out_s = env.path("out-c").to_string_lossy().into_owned();
    let missing = env
        .run(
            "main",
            &[
                "issue",
                "--challenge",
                "dns-persist-01",
                "--name",
                "c.corp.test",
                "--out",
                &out_s,
            ],
        )
        .await;
    missing.assert_exit_1();
    let expected = plain[0].1.clone();
    assert!(
        missing.stderr.contains(&format!(
            "_validation-persist.c.corp.test TXT \"{expected}\""
        )),
        "the error names the exact record:\n{missing}"
    );
    assert!(
        !env.path("out-c").exists(),
        "nothing written for a refused name"
    );

    // A record naming another account: the CA refuses, and we say what is needed.
    env.register("other", "es256").await;
    let others = records(&env, "other", &["d.corp.test"]).await;
    assert_ne!(others[0].1, expected, "two accounts, two values");
    env.publish(&others);
    let out_s = env.path("out-d").to_string_lossy().into_owned();
    let foreign = env
        .run(
            "main",
            &[
                "issue",
                "--challenge",
                "dns-persist-01",
                "--name",
                "d.corp.test",
                "--out",
                &out_s,
            ],
        )
        .await;
    foreign.assert_exit_1();
    assert!(
        foreign.stderr.contains(&format!(
            "_validation-persist.d.corp.test TXT \"{expected}\""
        )) && foreign.stderr.contains("naming another account")
            && foreign.stderr.contains("persist records d.corp.test"),
        "refused, with this account's record:\n{foreign}"
    );
    // The other account can use its own record.
    let out_s = env.path("out-d2").to_string_lossy().into_owned();
    env.run(
        "other",
        &[
            "issue",
            "--challenge",
            "dns-persist-01",
            "--name",
            "d.corp.test",
            "--out",
            &out_s,
        ],
    )
    .await
    .assert_ok();

    // Acceptance 2: the account moves to a SoftHSM key; the account URL, and so every
    // published record, stays valid.
    if !certfleet_testenv::require_softhsm() {
        return;
    }
    let hsm = certfleet_testenv::SoftHsm::new().expect("softhsm dir");
    hsm.init_token("persist", "87654321").expect("init token");
    let pin_file = hsm.pin_file("pin", "87654321").expect("pin file");
    let vars = [hsm.env()];
    let module = hsm.module_path().to_string_lossy().into_owned();
    let pin = format!("file:{}", pin_file.display());
    let generated = env
        .run_env(
            "main",
            &[
                "key",
                "generate",
                "--backend",
                "pkcs11",
                "--alg",
                "es256",
                "--module",
                &module,
                "--token",
                "persist",
                "--label",
                "acct-hsm",
                "--pin-source",
                &pin,
            ],
            &vars,
        )
        .await;
    generated.assert_ok();
    let new_key = generated.last_line();
    env.run_env(
        "main",
        &["account", "rollover", "--new-key", &new_key],
        &vars,
    )
    .await
    .assert_ok();
    let after_rollover = records_env(&env, "main", &["a.corp.test"], &vars).await;
    assert_eq!(after_rollover, plain, "the records survive the key change");
    let updates = env.bind.stats(primary).await.expect("stats").updates;
    let out_s = env.path("out-hsm").to_string_lossy().into_owned();
    env.run_env(
        "main",
        &[
            "issue",
            "--challenge",
            "dns-persist-01",
            "--name",
            "a.corp.test",
            "--out",
            &out_s,
        ],
        &vars,
    )
    .await
    .assert_ok();
    check_issued(&env.path("out-hsm"), &["a.corp.test"], &root);
    assert_eq!(
        env.bind.stats(primary).await.expect("stats").updates,
        updates,
        "no DNS write after the rollover either"
    );
}

/// Names in the batch test (issue 17 acceptance 3 says 100; every name is checked).
const BATCH_NAMES: usize = 100;
const BATCH_MISSING: [usize; 3] = [7, 42, 99];

#[tokio::test]
async fn dns_persist_batch_reports_names_lacking_a_record_and_orders_nothing_for_them() {
    let Some(env) = A2cEnv::start(|_| {}).await else {
        return;
    };
    env.register("main", "es256").await;
    let cfg = env.config();
    let names: Vec<String> = (0..BATCH_NAMES)
        .map(|i| format!("p{i}.corp.test"))
        .collect();
    let mut args: Vec<&str> = names.iter().map(String::as_str).collect();
    args.insert(0, "--json");
    args.splice(0..0, ["persist", "records"]);
    let printed = env.run("main", &args).await;
    printed.assert_ok();
    let all: Vec<(String, String, String)> = printed
        .json()
        .as_array()
        .expect("array")
        .iter()
        .map(|r| {
            (
                r["domain"].as_str().expect("domain").to_owned(),
                r["name"].as_str().expect("name").to_owned(),
                r["value"].as_str().expect("value").to_owned(),
            )
        })
        .collect();
    assert_eq!(all.len(), BATCH_NAMES);
    let published: Vec<(String, String)> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| !BATCH_MISSING.contains(i))
        .map(|(_, (_, n, v))| (n.clone(), v.clone()))
        .collect();
    env.publish(&published);
    let check = env
        .run(
            "main",
            &[
                "--config",
                &cfg,
                "persist",
                "records",
                "--check",
                "p0.corp.test",
                "p7.corp.test",
            ],
        )
        .await;
    check.assert_exit_1();
    assert!(
        check
            .stdout
            .contains("present  _validation-persist.p0.corp.test"),
        "{check}"
    );
    assert!(
        check
            .stdout
            .contains("MISSING  _validation-persist.p7.corp.test"),
        "{check}"
    );

    let list = env.path("batch.txt");
    std::fs::write(&list, names.join("\n") + "\n").expect("batch file");
    let updates = env
        .bind
        .stats(env.bind.primary())
        .await
        .expect("stats")
        .updates;
    let batch = env
        .run(
            "main",
            &[
                "--config",
                &cfg,
                "batch",
                "run",
                &list.to_string_lossy(),
                "--challenge",
                "dns-persist-01",
                "--rate-limits",
                "none",
                "--out",
                &env.path("certs").to_string_lossy(),
            ],
        )
        .await;
    batch.assert_exit_1();
    assert!(
        batch.stderr.contains(&format!(
            "{} certificates were not ordered",
            BATCH_MISSING.len()
        )) && batch
            .stderr
            .contains(&format!("{} issued", BATCH_NAMES - BATCH_MISSING.len())),
        "{batch}"
    );
    let root = env.a2c.issuing_root_pem_path();
    let log = env.a2c.log();
    assert!(
        log.contains("p0.corp.test"),
        "the CA logs the names it is asked for"
    );
    for (i, (domain, name, value)) in all.iter().enumerate() {
        let dir = env.path(&format!("certs/{domain}"));
        if BATCH_MISSING.contains(&i) {
            assert!(
                batch.stdout.contains(&format!(
                    "not ordered: {domain}: publish {name}. 3600 IN TXT \"{value}\""
                )),
                "{domain} reported with its record:\n{batch}"
            );
            assert!(!dir.exists(), "nothing written for {domain}");
            assert!(!log.contains(domain.as_str()), "{domain} was never ordered");
        } else {
            check_issued(&dir, &[domain.as_str()], &root);
        }
    }
    assert_eq!(
        env.bind
            .stats(env.bind.primary())
            .await
            .expect("stats")
            .updates,
        updates,
        "no DNS write during the batch"
    );
}
