//! Certificate directories written whole, batch options = issue options (issue 13,
//! acceptance 1, 2, 3, 5) and the completeness check shared with the crash test.

use std::path::Path;

use certfleet_testenv::{PebbleOptions, plugin_dir, private_key_spki_der};

use crate::batch::{batch_run, report, write_config, write_list};
use crate::common::{Env, check_issued};

/// Every entry of `parent` is a bundle link (`<name>` → `.<name>.vN`) or a version directory;
/// every bundle is complete and consistent (cert matches key, fullchain = cert + chain,
/// verifies against `root`). Returns the bundle names.
#[track_caller]
pub fn check_bundles(parent: &Path, root: &Path) -> Vec<String> {
    let mut bundles = Vec::new();
    for entry in std::fs::read_dir(parent).expect("output dir") {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(hidden) = name.strip_prefix('.') {
            let version = hidden.rsplit_once('.').map(|(_, v)| v);
            assert!(
                version.is_some_and(|v| v.starts_with('v') && v[1..].parse::<u64>().is_ok()),
                "leftover in {}: {name}",
                parent.display()
            );
            continue;
        }
        let path = entry.path();
        assert!(
            std::fs::symlink_metadata(&path)
                .expect("stat")
                .file_type()
                .is_symlink(),
            "{name} is the link to its current version"
        );
        let mut files: Vec<String> = std::fs::read_dir(&path)
            .expect("bundle")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(
            files,
            [
                "cert.pem",
                "chain.pem",
                "fullchain.pem",
                "meta.json",
                "privkey.pem"
            ],
            "{name} is complete"
        );
        let (leaf, _) = check_issued(&path, &[name.as_str()], root);
        let key = private_key_spki_der(&path.join("privkey.pem")).expect("key parses");
        assert_eq!(
            leaf.spki_der, key,
            "{name}: the certificate certifies privkey.pem"
        );
        bundles.push(name);
    }
    bundles.sort();
    bundles
}

/// Acceptance 1 and the batch-file half of 3: `[defaults] output_dir` gives each
/// certificate its own complete directory; `key = "es256"` (the docs' example) is a new key
/// per certificate.
#[tokio::test]
async fn batch_output_dir_gives_each_certificate_its_own_complete_directory() {
    let Some(env) = Env::start(PebbleOptions::default().nonce_reject(0)).await else {
        return;
    };
    env.register_account().await;
    let config = write_config(&env, "");
    let out = env.path("certs-out");
    let n = 60;
    let mut toml = format!(
        "[defaults]\nkey = \"es256\"\nchallenge = \"dns-01\"\noutput_dir = \"{}\"\n",
        out.display()
    );
    let mut names: Vec<String> = (0..n).map(|i| format!("d{i}.bundle.test")).collect();
    for name in &names {
        toml.push_str(&format!("\n[[cert]]\nnames = [\"{name}\"]\n"));
    }
    let file = env.path("batch.toml");
    std::fs::write(&file, toml).expect("batch file");
    let run = batch_run(
        &env,
        &env.pebble.directory_url(),
        &config,
        &file.to_string_lossy(),
        &["--rate-limits", "none"],
    )
    .await;
    run.assert_ok();
    let certs = report(&env.path("report.json"));
    assert!(certs.iter().all(|c| c["state"] == "issued"), "{run}");
    let root = env.issuing_root_file(0).await;
    names.sort();
    assert_eq!(
        check_bundles(&out, &root),
        names,
        "one directory per certificate"
    );
    let key = certfleet_testenv::read_cert(&out.join(&names[0]).join("cert.pem")).expect("cert");
    assert!(
        !key.spki_der.is_empty()
            && std::fs::read_to_string(out.join(&names[0]).join("privkey.pem"))
                .expect("key")
                .contains("PRIVATE KEY"),
        "a generated file key"
    );
}

/// Acceptance 3: `batch run FILE --challenge http-01 --key-alg es384 --profile P --out DIR`.
#[tokio::test]
async fn batch_run_takes_the_per_certificate_options_of_issue() {
    let Some(env) = Env::start(PebbleOptions::default().nonce_reject(0)).await else {
        return;
    };
    let mut options = certfleet_testenv::CaProxyOptions::default();
    options
        .profiles
        .insert("shortlived".to_owned(), "short".to_owned());
    let proxy = certfleet_testenv::CaProxy::start(&env.pebble, options)
        .await
        .expect("proxy");
    crate::batch_limits::register(&env, &proxy).await;
    let names: Vec<String> = (0..3).map(|i| format!("o{i}.flags.test")).collect();
    let file = write_list(&env, "list.txt", &names);
    let out = env.path("flag-out");
    let listen = format!("127.0.0.1:{}", env.pebble.http01_port());
    let config = env.path("empty.toml");
    std::fs::write(&config, "[network]\npoll_initial_millis = 100\n").expect("config");
    let run = batch_run(
        &env,
        &proxy.directory_url(),
        &config.to_string_lossy(),
        &file,
        &[
            "--challenge",
            "http-01",
            "--http-listen",
            &listen,
            "--key-alg",
            "es384",
            "--profile",
            "shortlived",
            "--out",
            &out.to_string_lossy(),
            "--rate-limits",
            "none",
        ],
    )
    .await;
    run.assert_ok();
    let root = env.issuing_root_file(0).await;
    let mut want = names.clone();
    want.sort();
    assert_eq!(check_bundles(&out, &root), want);
    let leaf = certfleet_testenv::read_cert(&out.join(&names[0]).join("cert.pem")).expect("cert");
    // P-384 SubjectPublicKeyInfo: 120 bytes (P-256: 91).
    assert_eq!(leaf.spki_der.len(), 120, "--key-alg es384 made a P-384 key");
    // The CA double refuses orders naming a profile it does not offer, so an order with
    // another profile would have failed; and a wrong one is refused by name.
    let bad = batch_run(
        &env,
        &proxy.directory_url(),
        &config.to_string_lossy(),
        &write_list(&env, "list2.txt", &["x.flags.test".to_owned()]),
        &[
            "--challenge",
            "http-01",
            "--http-listen",
            &listen,
            "--profile",
            "nosuch",
            "--rate-limits",
            "none",
        ],
    )
    .await;
    assert!(!bad.status.success(), "{bad}");
}

/// Acceptance 2: `--preferred-chain` in a batch (Pebble `ALTERNATE_ROOTS`) and in the
/// renewal of a batch certificate.
#[tokio::test]
async fn batch_and_its_renewal_honour_the_preferred_chain() {
    let Some(env) = Env::start(PebbleOptions::default().alternate_roots(2)).await else {
        return;
    };
    env.register_account().await;
    let roots = env.pebble.issuing_roots().await.expect("roots");
    let wanted = certfleet_testenv::CertInfo::from_pem(&roots[2])
        .expect("root")
        .subject_cn
        .expect("CN");
    let config = write_config(&env, "");
    let names = vec!["chain.batch.test".to_owned()];
    let file = write_list(&env, "chain.txt", &names);
    let run = batch_run(
        &env,
        &env.pebble.directory_url(),
        &config,
        &file,
        &["--preferred-chain", &wanted, "--rate-limits", "none"],
    )
    .await;
    run.assert_ok();
    let dir = env.state_dir().join("certs").join(&names[0]);
    let top = |dir: &Path| {
        certfleet_testenv::read_certs(&dir.join("chain.pem"))
            .expect("chain")
            .last()
            .and_then(|c| c.issuer_cn.clone())
            .expect("issuer")
    };
    assert_eq!(top(&dir), wanted, "the batch chose the preferred chain");
    let serial = certfleet_testenv::read_cert(&dir.join("cert.pem"))
        .expect("cert")
        .serial_hex;
    let renew = env
        .run(&["--config", &config, "renew", "--name", &names[0], "--force"])
        .await;
    renew.assert_ok();
    let renewed = certfleet_testenv::read_cert(&dir.join("cert.pem")).expect("cert");
    assert_ne!(renewed.serial_hex, serial, "renewed");
    assert_eq!(top(&dir), wanted, "the renewal kept the preferred chain");
    let root2 = env.issuing_root_file(2).await;
    assert_eq!(check_bundles(&env.state_dir().join("certs"), &root2), names);
}

/// Acceptance 5: a failed `issue` (untrusted CA, plugin panic, no account) leaves no file.
#[tokio::test]
async fn a_failed_issue_leaves_no_file_behind() {
    let Some(env) = Env::start(PebbleOptions::default()).await else {
        return;
    };
    let parent = env.path("failed");
    let out = parent.join("out").to_string_lossy().into_owned();
    let listen = format!("127.0.0.1:{}", env.pebble.http01_port());
    let http = ["--challenge", "http-01", "--http-listen", &listen];
    // No account yet.
    let run = env
        .run(
            &[
                &["issue", "--name", "a.fail.test", "--out", &out][..],
                &http[..],
            ]
            .concat(),
        )
        .await;
    assert!(!run.status.success(), "{run}");
    env.register_account().await;
    // A plugin that panics.
    let plugins = plugin_dir().to_string_lossy().into_owned();
    let config = env.path("panics.toml");
    std::fs::write(&config, format!("[dns01]\nplugin_dirs = [\"{plugins}\"]\n")).expect("config");
    let run = env
        .run(&[
            "--config",
            &config.to_string_lossy(),
            "issue",
            "--name",
            "b.fail.test",
            "--challenge",
            "dns-01",
            "--dns-plugin",
            "test-panics",
            "--out",
            &out,
        ])
        .await;
    assert!(!run.status.success(), "{run}");
    // A CA whose TLS certificate is not trusted (no --ca-root).
    let untrusted = crate::common::certfleet(
        [
            "--state-dir",
            &env.state_dir().to_string_lossy(),
            "--directory",
            &env.pebble.directory_url(),
            "issue",
            "--name",
            "c.fail.test",
            "--out",
            &out,
        ]
        .iter()
        .chain(http.iter()),
    )
    .await;
    assert!(!untrusted.status.success(), "{untrusted}");
    assert!(
        !parent.exists(),
        "failed runs left {:?}",
        std::fs::read_dir(&parent).map(|d| d.count())
    );
}
