//! DNS-01 through the `rfc2136` plugin on a real BIND, validated by Pebble through BIND
//! (acceptance 1 of issue 4): wildcard + apex with hmac-sha256, a CNAME into a validation
//! zone, hmac-sha512; no challenge TXT left afterwards; `renew` reuses the plugin.

use certfleet_testenv::{BindOptions, BindZone};

use crate::common::check_issued;
use crate::dns_env::{DnsEnv, assert_not_in_output};

#[tokio::test]
async fn rfc2136_hmac_sha256_wildcard_and_apex_then_renew_reuses_the_plugin() {
    let Some(d) = DnsEnv::start(BindOptions::default()).await else {
        return;
    };
    let config = d.config(
        "certfleet.toml",
        &[&d.dns01_section(30), &d.rfc2136_with_key_file("acme-key")],
    );
    let names = ["example.test", "*.example.test"];
    let run = d.issue(&config, "rfc2136", &names, "out", &["-vv"]).await;
    run.assert_ok();
    let root = d.env.issuing_root_file(0).await;
    check_issued(&d.env.path("out"), &names, &root);
    d.assert_no_txt(d.bind.primary(), &names);
    // Two values on one name, one UPDATE to add both and one to remove both.
    let stats = d.bind.stats(d.bind.primary()).await.expect("stats");
    assert_eq!(
        stats.updates, 2,
        "UPDATE messages (present + cleanup)\n{run}"
    );
    assert!(
        run.stderr.contains("update_messages=2"),
        "the plugin's counters are logged:\n{run}"
    );
    assert!(
        run.stderr.contains("visible on every authoritative server"),
        "the propagation check ran:\n{run}"
    );
    let secret = d.bind.key_secret("acme-key").expect("secret");
    assert_not_in_output(&run, &secret, "TSIG secret");

    let inventory = std::fs::read_to_string(d.env.state_dir().join("inventory/example.test.json"))
        .expect("inventory entry");
    let entry: serde_json::Value = serde_json::from_str(&inventory).expect("json");
    assert_eq!(entry["challenge"], "dns-01", "{entry}");
    assert_eq!(entry["dns_plugin"], "rfc2136", "{entry}");

    let config_s = config.to_string_lossy().into_owned();
    let renew = d
        .env
        .run(&[
            "--config",
            &config_s,
            "renew",
            "--name",
            "example.test",
            "--force",
        ])
        .await;
    renew.assert_ok();
    assert!(renew.stdout.contains("renewed 1"), "{renew}");
    check_issued(&d.env.path("out"), &names, &root);
    d.assert_no_txt(d.bind.primary(), &names);
    assert_eq!(
        d.bind.stats(d.bind.primary()).await.expect("stats").updates,
        4
    );
}

#[tokio::test]
async fn rfc2136_follows_a_cname_into_a_separate_validation_zone() {
    let options = BindOptions {
        zones: vec![
            BindZone::new("example.test")
                .record("_acme-challenge.www IN CNAME _acme-challenge.www.validation.test."),
            BindZone::new("validation.test"),
        ],
        // Pebble, like a real CA, resolves through a recursive resolver that follows the
        // CNAME into the other zone (an authoritative server does not).
        resolver: true,
        ..BindOptions::default()
    };
    let Some(d) = DnsEnv::start(options).await else {
        return;
    };
    let config = d.config(
        "certfleet.toml",
        &[&d.dns01_section(30), &d.rfc2136_with_key_file("acme-key")],
    );
    let names = ["www.example.test"];
    let run = d.issue(&config, "rfc2136", &names, "out", &["-v"]).await;
    run.assert_ok();
    let root = d.env.issuing_root_file(0).await;
    check_issued(&d.env.path("out"), &names, &root);
    assert!(
        run.stderr.contains("validation.test"),
        "the record went to the validation zone:\n{run}"
    );
    d.assert_no_txt(d.bind.primary(), &["www.validation.test"]);
    // The CNAME itself is untouched.
    let cname = std::process::Command::new("dig")
        .args([
            &format!("@{}", d.bind.primary().ip()),
            "-p",
            &d.bind.primary().port().to_string(),
            "+short",
            "CNAME",
            "_acme-challenge.www.example.test",
        ])
        .output()
        .expect("dig");
    assert!(
        String::from_utf8_lossy(&cname.stdout).contains("_acme-challenge.www.validation.test."),
        "the CNAME is still there"
    );
}

#[tokio::test]
async fn rfc2136_hmac_sha512_key_from_the_environment() {
    let options = BindOptions {
        keys: vec![("acme-512".to_owned(), "hmac-sha512".to_owned())],
        ..BindOptions::default()
    };
    let Some(d) = DnsEnv::start(options).await else {
        return;
    };
    let secret = d.bind.key_secret("acme-512").expect("secret");
    let plugin = format!(
        "[plugins.rfc2136]\nserver = \"{}\"\nkey_name = \"acme-512\"\nalgorithm = \"hmac-sha512\"\n\
         secret_env = \"CERTFLEET_E2E_TSIG_SECRET\"\n",
        d.bind.primary()
    );
    let config = d.config("certfleet.toml", &[&d.dns01_section(30), &plugin]);
    let config_s = config.to_string_lossy().into_owned();
    let out_s = d.env.path("out").to_string_lossy().into_owned();
    let names = ["sha512.example.test", "*.sha512.example.test"];
    let mut cmd = tokio::process::Command::from(certfleet_testenv::certfleet_command());
    cmd.args(["--state-dir"])
        .arg(d.env.state_dir())
        .args(["--directory", &d.env.pebble.directory_url(), "--ca-root"])
        .arg(d.env.pebble.tls_root_pem_path())
        .args(["--config", &config_s, "-vv", "issue"])
        .args(names.iter().flat_map(|n| ["--name", n]))
        .args([
            "--challenge",
            "dns-01",
            "--dns-plugin",
            "rfc2136",
            "--out",
            &out_s,
        ])
        .env("CERTFLEET_E2E_TSIG_SECRET", &secret)
        .kill_on_drop(true);
    let out = tokio::time::timeout(crate::common::COMMAND_TIMEOUT, cmd.output())
        .await
        .expect("finishes")
        .expect("runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "{stdout}\n{stderr}\n{}",
        d.bind.log_tails(20)
    );
    assert!(
        !stdout.contains(&secret) && !stderr.contains(&secret),
        "secret logged"
    );
    let root = d.env.issuing_root_file(0).await;
    check_issued(&d.env.path("out"), &names, &root);
    d.assert_no_txt(d.bind.primary(), &names);
}
