//! The same DNS-01 flows through the `challtestsrv` and `exec` plugins (acceptance 3), and
//! API tokens kept out of logs and errors (acceptance 5).

use std::os::unix::fs::PermissionsExt;

use certfleet_plugin_abi::TxtRecord;
use certfleet_testenv::{BindOptions, PebbleOptions, plugin_dir};

use crate::common::{Env, check_issued};
use crate::dns_api_support::{call, instance};
use crate::dns_env::{DnsEnv, assert_not_in_output, bind_tools_present};

const TOKEN: &str = "e2e-api-token-5f2b9c41d7";

#[tokio::test]
async fn challtestsrv_plugin_issues_wildcard_and_apex_and_keeps_its_token_secret() {
    if !bind_tools_present() {
        return;
    }
    let Some(env) = Env::start(PebbleOptions::default()).await else {
        return;
    };
    env.register_account().await;
    let config = env.path("certfleet.toml");
    std::fs::write(
        &config,
        format!(
            "[dns01]\nplugin_dirs = [\"{}\"]\n[dns01.propagation]\ncheck = false\n\
             [plugins.challtestsrv]\nurl = \"{}\"\ntoken = \"{TOKEN}\"\n",
            plugin_dir().display(),
            env.pebble.challtestsrv_url()
        ),
    )
    .expect("config");
    let config_s = config.to_string_lossy().into_owned();
    let out_s = env.path("out").to_string_lossy().into_owned();
    let names = ["chall.test", "*.chall.test"];
    let mut args = vec!["--config", &config_s, "-vv", "issue"];
    for n in names {
        args.extend(["--name", n]);
    }
    args.extend([
        "--challenge",
        "dns-01",
        "--dns-plugin",
        "challtestsrv",
        "--out",
        &out_s,
    ]);
    let run = env.run(&args).await;
    run.assert_ok();
    assert_not_in_output(&run, TOKEN, "API token");
    let root = env.issuing_root_file(0).await;
    check_issued(&env.path("out"), &names, &root);
    assert!(
        run.stderr.contains("http_requests=4"),
        "a clear-txt before the name's first value, 2 set-txt, 1 clear-txt:\n{run}"
    );
    let left = env
        .pebble
        .served_txt("_acme-challenge.chall.test.")
        .expect("dig");
    assert!(left.is_empty(), "challtestsrv still serves TXT: {left:?}");

    let check = env
        .run(&["--config", &config_s, "plugin", "check", "challtestsrv"])
        .await;
    check.assert_ok();
    assert!(check.stdout.contains("reachable"), "{check}");
    assert_not_in_output(&check, TOKEN, "API token");
}

/// challtestsrv appends every value it is sent, even one the name has. A run killed before
/// its cleanup leaves its values; the resumed jobs present the same values again. Each
/// plugin instance here is such a run: the name must serve each value once, or after a few
/// kills the answer outgrows a DNS message and Pebble's lookup fails ("dns: buffer size too
/// small", seen in the SIGKILL resume test).
#[tokio::test]
async fn challtestsrv_serves_each_value_once_when_later_runs_present_it_again() {
    if !bind_tools_present() {
        return;
    }
    let Some(env) = Env::start(PebbleOptions::default()).await else {
        return;
    };
    let config = serde_json::json!({ "url": env.pebble.challtestsrv_url() });
    let name = "_acme-challenge.again.test.";
    let record = |c: char| TxtRecord {
        fqdn: name.to_owned(),
        value: c.to_string().repeat(43),
    };
    for run in 0..5 {
        // A new process's plugin, killed without a cleanup.
        let plugin = instance("challtestsrv", config.clone())
            .await
            .expect("instance");
        call(&plugin, "present", &[record('v')])
            .await
            .expect("present");
        // The same value again with a second one (wildcard + apex) in the same run.
        call(&plugin, "present", &[record('v'), record('w')])
            .await
            .expect("present again");
        let mut served = env.pebble.served_txt(name).expect("dig");
        served.sort();
        assert_eq!(served, ["v".repeat(43), "w".repeat(43)], "run {run}");
    }
}

/// A provider script in lego's `exec` convention that talks RFC 2136 with nsupdate.
const HOOK: &str = r#"#!/bin/sh
# $0 present|cleanup FQDN VALUE (lego's exec provider convention)
case "$1" in
  present) op="update add $2 60 TXT \"$3\"" ;;
  cleanup) op="update delete $2 TXT \"$3\"" ;;
  *) exit 0 ;;
esac
if [ -n "$FAIL_WITH" ]; then echo "provider said: bad token $FAIL_WITH" >&2; exit 3; fi
printf 'server 127.0.0.1 %s\n%s\nsend\n' "$DNS_PORT" "$op" | nsupdate -k "$KEY_FILE"
"#;

fn write_hook(d: &DnsEnv) -> String {
    let hook = d.env.path("hook.sh");
    std::fs::write(&hook, HOOK).expect("hook");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    hook.to_string_lossy().into_owned()
}

#[tokio::test]
async fn exec_plugin_runs_a_lego_style_script_for_wildcard_and_apex() {
    let Some(d) = DnsEnv::start(BindOptions::default()).await else {
        return;
    };
    if !certfleet_testenv::require_tool("nsupdate", "bind9-dnsutils") {
        return;
    }
    let hook = write_hook(&d);
    let plugin = format!(
        "[plugins.exec]\ncommand = \"{hook}\"\ntimeout_secs = 20\nenv = {{ DNS_PORT = \"{}\", KEY_FILE = \"{}\" }}\n",
        d.bind.primary().port(),
        d.bind.key_file("acme-key").expect("key").display()
    );
    let config = d.config("certfleet.toml", &[&d.dns01_section(30), &plugin]);
    let names = ["exec.example.test", "*.exec.example.test"];
    let run = d.issue(&config, "exec", &names, "out", &[]).await;
    run.assert_ok();
    assert!(
        run.stderr.contains("commands_run=4"),
        "2 present + 2 cleanup:\n{run}"
    );
    let root = d.env.issuing_root_file(0).await;
    check_issued(&d.env.path("out"), &names, &root);
    d.assert_no_txt(d.bind.primary(), &names);
}

#[tokio::test]
async fn exec_plugin_failure_is_reported_with_the_secret_redacted() {
    let Some(d) = DnsEnv::start(BindOptions::default()).await else {
        return;
    };
    let hook = write_hook(&d);
    let plugin =
        format!("[plugins.exec]\ncommand = \"{hook}\"\nenv = {{ FAIL_WITH = \"{TOKEN}\" }}\n");
    let config = d.config("certfleet.toml", &[&d.dns01_section(5), &plugin]);
    let run = d
        .issue(&config, "exec", &["fail.example.test"], "out", &["-vv"])
        .await;
    run.assert_exit_1();
    assert!(
        run.stderr.contains("exited with exit status: 3")
            && run.stderr.contains("provider said: bad token [redacted]"),
        "the script's failure and output are reported:\n{run}"
    );
    assert_not_in_output(&run, TOKEN, "API token");
}
