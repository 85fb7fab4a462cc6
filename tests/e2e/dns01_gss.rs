//! DNS-01 through the `rfc2136` plugin signed with GSS-TSIG (RFC 3645), issue 18: a real MIT
//! KDC for the realm CORP.TEST, BIND with `tkey-gssapi-keytab` holding the
//! `DNS/ns1.corp.test` key and `update-policy { grant acme@CORP.TEST zonesub TXT; }`, no
//! HMAC key anywhere; Pebble validates through BIND. Then the errors an admin meets.

use std::ffi::OsString;
use std::path::PathBuf;

use certfleet_testenv::kdc::{Kdc, require_kdc};
use certfleet_testenv::{Bind, BindExtra, BindOptions, BindZone, PebbleOptions};

use crate::common::{Env, Run, check_issued};
use crate::dns_env::{DnsEnv, bind_tools_present};
use crate::hsm::run_with_env;

const REALM: &str = "CORP.TEST";

struct GssLab {
    d: DnsEnv,
    kdc: Kdc,
    acme_keytab: PathBuf,
}

impl GssLab {
    /// KDC, principals and keytabs, BIND (GSS-TSIG only when `gss_server`), Pebble.
    async fn start(gss_server: bool) -> Option<GssLab> {
        if !bind_tools_present() || !require_kdc() {
            return None;
        }
        let kdc = Kdc::start(REALM, &["corp.test"]).await.expect("KDC starts");
        let dns_keytab = kdc
            .principal_with_keytab("DNS/ns1.corp.test", "dns.keytab")
            .expect("service principal");
        let acme_keytab = kdc
            .principal_with_keytab("acme", "acme.keytab")
            .expect("acme principal");
        kdc.principal_with_keytab("intruder", "intruder.keytab")
            .expect("intruder principal");
        let options = BindOptions {
            zones: vec![
                BindZone::new("corp.test")
                    .update_policy(&format!("grant acme@{REALM} zonesub TXT;")),
            ],
            keys: Vec::new(),
            secondary: None,
            resolver: false,
            work_dir: None,
        };
        let extra = BindExtra {
            primary_options: if gss_server {
                format!("tkey-gssapi-keytab \"{}\";", dns_keytab.display())
            } else {
                String::new()
            },
            env: kdc.env(),
        };
        let bind = Bind::start_with(options, extra).await.expect("BIND starts");
        let env =
            Env::start(PebbleOptions::default().dns_server(bind.primary().to_string())).await?;
        env.register_account().await;
        Some(GssLab {
            d: DnsEnv { env, bind },
            kdc,
            acme_keytab,
        })
    }

    fn config(&self, file: &str, plugin: &str) -> String {
        self.d
            .config(file, &[&self.d.dns01_section(30), plugin])
            .to_string_lossy()
            .into_owned()
    }

    fn plugin_with_keytab(&self, principal: &str, keytab: &str) -> String {
        format!(
            "[plugins.rfc2136]\nserver = \"{}\"\ngss_tsig = true\nkeytab = \"{keytab}\"\n\
             principal = \"{principal}@{REALM}\"\n",
            self.d.bind.primary()
        )
    }

    /// `kinit -k -t acme.keytab acme@CORP.TEST` into the FILE ccache `ccache`.
    fn kinit_acme(&self, ccache: &std::path::Path) {
        let status = self
            .kdc
            .tool("kinit")
            .env("KRB5CCNAME", format!("FILE:{}", ccache.display()))
            .args(["-k", "-t"])
            .arg(&self.acme_keytab)
            .arg(format!("acme@{REALM}"))
            .status()
            .expect("kinit");
        assert!(status.success(), "kinit from the acme keytab");
    }

    /// `plugin check rfc2136 --name www.corp.test` with `config`.
    async fn check_www(&self, config: &str, vars: &[(OsString, OsString)]) -> Run {
        let args = [
            "--config",
            config,
            "plugin",
            "check",
            "rfc2136",
            "--name",
            "www.corp.test",
        ];
        self.run(&args, vars).await
    }

    async fn run(&self, args: &[&str], vars: &[(OsString, OsString)]) -> Run {
        let mut all = self.kdc.env();
        all.extend(vars.iter().cloned());
        let run = run_with_env(&self.d.env, args, &all).await;
        if !run.status.success() {
            eprintln!("(BIND logs:)\n{}", self.d.bind.log_tails(15));
        }
        run
    }
}

fn issue_args<'a>(config: &'a str, out: &'a str, names: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--config", config, "issue"];
    for n in names {
        args.extend(["--name", n]);
    }
    args.extend([
        "--challenge",
        "dns-01",
        "--dns-plugin",
        "rfc2136",
        "--out",
        out,
        "-vv",
    ]);
    args
}

/// Acceptance 1: www + wildcard through GSS-TSIG with a keytab; one TKEY negotiation for
/// the batch (BIND's TKEY query counter), one UPDATE to add and one to delete, nothing left.
#[tokio::test]
async fn gss_tsig_keytab_issues_www_and_wildcard_with_one_tkey_negotiation() {
    let Some(lab) = GssLab::start(true).await else {
        return;
    };
    let plugin = lab.plugin_with_keytab("acme", &lab.acme_keytab.display().to_string());
    assert!(!plugin.contains("key_file") && !plugin.contains("secret"));
    let config = lab.config("gss.toml", &plugin);

    let check = lab.check_www(&config, &[]).await;
    check.assert_ok();
    assert!(
        check.stdout.contains("acme@CORP.TEST")
            && check
                .stdout
                .contains("the server accepted the GSS-TSIG signature"),
        "{check}"
    );
    let before = lab.d.bind.stats(lab.d.bind.primary()).await.expect("stats");

    let out = lab.d.env.path("out").to_string_lossy().into_owned();
    let names = ["www.corp.test", "*.corp.test"];
    let run = lab.run(&issue_args(&config, &out, &names), &[]).await;
    run.assert_ok();
    let root = lab.d.env.issuing_root_file(0).await;
    check_issued(&lab.d.env.path("out"), &names, &root);
    lab.d.assert_no_txt(lab.d.bind.primary(), &names);
    let after = lab.d.bind.stats(lab.d.bind.primary()).await.expect("stats");
    assert_eq!(
        after.updates - before.updates,
        2,
        "one UPDATE to add both records, one to delete them\n{run}"
    );
    assert_eq!(
        after.tkey_queries - before.tkey_queries,
        1,
        "one TKEY negotiation (one round with Kerberos) for the batch\n{run}"
    );
    assert!(run.stderr.contains("tkey_negotiations=1"), "{run}");
    assert!(
        run.stderr.contains("GSS-TSIG as acme@CORP.TEST"),
        "the plugin said how it signs:\n{run}"
    );
}

/// Acceptance 2: each failure named, before ordering (`plugin check`) or at present time.
#[tokio::test]
async fn gss_tsig_errors_are_named_policy_ticket_keytab_and_server() {
    let Some(lab) = GssLab::start(true).await else {
        return;
    };
    // A principal the update policy does not name: REFUSED at present time, nothing ordered
    // beyond the one order, no record written.
    let intruder = lab.kdc.dir().join("intruder.keytab");
    let config = lab.config(
        "intruder.toml",
        &lab.plugin_with_keytab("intruder", &intruder.display().to_string()),
    );
    let out = lab
        .d
        .env
        .path("out-intruder")
        .to_string_lossy()
        .into_owned();
    let run = lab
        .run(&issue_args(&config, &out, &["www.corp.test"]), &[])
        .await;
    assert!(!run.status.success(), "{run}");
    assert!(
        run.stderr.contains("REFUSED by the server's update policy")
            && run.stderr.contains("intruder@CORP.TEST"),
        "{run}"
    );
    lab.d
        .assert_no_txt(lab.d.bind.primary(), &["www.corp.test"]);

    // No ticket: no keytab configured and an empty credentials cache.
    let plugin = format!(
        "[plugins.rfc2136]\nserver = \"{}\"\ngss_tsig = true\n",
        lab.d.bind.primary()
    );
    let config = lab.config("ccache.toml", &plugin);
    let empty = lab.kdc.dir().join("empty-ccache");
    let vars = [(
        OsString::from("KRB5CCNAME"),
        OsString::from(format!("FILE:{}", empty.display())),
    )];
    let check = lab
        .run(&["--config", &config, "plugin", "check", "rfc2136"], &vars)
        .await;
    assert!(
        check.stdout.contains("FAIL") && check.stdout.contains("no valid Kerberos ticket"),
        "{check}"
    );

    // KRB5_CLIENT_KTNAME: MIT Kerberos gets the ticket from that keytab by itself.
    let kt_vars = [
        (
            OsString::from("KRB5CCNAME"),
            OsString::from(format!(
                "FILE:{}",
                lab.kdc.dir().join("kt-ccache").display()
            )),
        ),
        (
            OsString::from("KRB5_CLIENT_KTNAME"),
            lab.acme_keytab.clone().into_os_string(),
        ),
    ];
    let check = lab.check_www(&config, &kt_vars).await;
    check.assert_ok();
    assert!(
        check.stdout.contains("acme@CORP.TEST")
            && check
                .stdout
                .contains("the server accepted the GSS-TSIG signature"),
        "{check}"
    );

    // After kinit from the keytab, the default ccache works.
    lab.kinit_acme(&empty);
    let check = lab.check_www(&config, &vars).await;
    check.assert_ok();
    assert!(
        check
            .stdout
            .contains("the server accepted the GSS-TSIG signature"),
        "{check}"
    );

    // A service principal the KDC does not know (a typo in server_principal): named.
    let config = lab.config(
        "spn.toml",
        &format!(
            "{}server_principal = \"DNS/ns9.corp.test\"\n",
            lab.plugin_with_keytab("acme", &lab.acme_keytab.display().to_string())
        ),
    );
    let check = lab.check_www(&config, &[]).await;
    assert!(
        check.stdout.contains("FAIL")
            && check
                .stdout
                .contains("service principal is unknown to the KDC")
            && check.stdout.contains("DNS/ns9.corp.test"),
        "{check}"
    );

    // An unreadable keytab: a configuration error naming the path, before anything else.
    let missing = lab.kdc.dir().join("no-such.keytab");
    let config = lab.config(
        "missing.toml",
        &lab.plugin_with_keytab("acme", &missing.display().to_string()),
    );
    let check = lab
        .run(&["--config", &config, "plugin", "check", "rfc2136"], &[])
        .await;
    assert!(!check.status.success(), "{check}");
    assert!(
        check.stderr.contains("keytab unreadable") && check.stderr.contains("no-such.keytab"),
        "{check}"
    );
}

/// A server without GSS-TSIG (no tkey-gssapi-keytab): named by `plugin check`, no hang.
#[tokio::test]
async fn gss_tsig_against_a_server_without_it_is_named() {
    let Some(lab) = GssLab::start(false).await else {
        return;
    };
    let plugin = lab.plugin_with_keytab("acme", &lab.acme_keytab.display().to_string());
    let config = lab.config("nogss.toml", &plugin);
    let check = lab.check_www(&config, &[]).await;
    assert!(
        check.stdout.contains("FAIL") && check.stdout.contains("does not speak GSS-TSIG"),
        "{check}"
    );
}

/// Sets a FILE ccache's KDC time offset (the v4 header's DeltaTime tag, which MIT Kerberos
/// applies to every timestamp it sends when `kdc_timesync` is on, the default) to `secs`:
/// to this client its clock is `secs` ahead of the KDC's and the DNS server's, a clock skew
/// without changing the machine's clock (no libfaketime here).
fn skew_ccache(path: &std::path::Path, secs: i32) {
    let bytes = std::fs::read(path).expect("read ccache");
    assert_eq!(&bytes[..2], &[5, 4], "a version 4 FILE ccache");
    let header_len = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
    let mut out = vec![5, 4, 0, 12, 0, 1, 0, 8];
    out.extend_from_slice(&secs.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes());
    out.extend_from_slice(&bytes[4 + header_len..]);
    std::fs::write(path, out).expect("write ccache");
}

/// Acceptance 2, clock skew: a client 10 minutes ahead is named as clock skew by `plugin
/// check`, before anything is ordered.
#[tokio::test]
async fn gss_tsig_ten_minute_clock_skew_is_named() {
    let Some(lab) = GssLab::start(true).await else {
        return;
    };
    let ccache = lab.kdc.dir().join("skewed-ccache");
    lab.kinit_acme(&ccache);
    skew_ccache(&ccache, 600);
    let plugin = format!(
        "[plugins.rfc2136]\nserver = \"{}\"\ngss_tsig = true\n",
        lab.d.bind.primary()
    );
    let config = lab.config("skew.toml", &plugin);
    let vars = [(
        OsString::from("KRB5CCNAME"),
        OsString::from(format!("FILE:{}", ccache.display())),
    )];
    let check = lab.check_www(&config, &vars).await;
    assert!(
        check.stdout.contains("FAIL") && check.stdout.contains("clock skew"),
        "{check}"
    );
}

/// Certificates in the GSS-TSIG batch (`CERTFLEET_E2E_GSS_BATCH`, default 100).
fn gss_batch_size() -> usize {
    std::env::var("CERTFLEET_E2E_GSS_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
}

/// Acceptance 3: a 100-certificate dns-01 batch through GSS-TSIG: every present and every
/// cleanup round is one UPDATE for the zone (BIND's count equals the plugin's rounds), and
/// one TKEY negotiation serves the whole run.
#[tokio::test]
async fn gss_tsig_batch_sends_one_update_per_zone_per_round() {
    let Some(lab) = GssLab::start(true).await else {
        return;
    };
    let plugin = lab.plugin_with_keytab("acme", &lab.acme_keytab.display().to_string());
    let dns01 = lab
        .d
        .dns01_section(60)
        .replacen("[dns01]\n", "[dns01]\nplugin = \"rfc2136\"\n", 1);
    let config = lab
        .d
        .config("batch.toml", &[&dns01, &plugin])
        .to_string_lossy()
        .into_owned();
    let n = gss_batch_size();
    let names: Vec<String> = (0..n).map(|i| format!("h{i:03}.corp.test")).collect();
    let file = lab.d.env.path("batch.txt");
    std::fs::write(&file, names.join("\n") + "\n").expect("batch file");
    let file = file.to_string_lossy().into_owned();
    let report = lab.d.env.path("report.json");
    let report_s = report.to_string_lossy().into_owned();
    let before = lab.d.bind.stats(lab.d.bind.primary()).await.expect("stats");
    let run = lab
        .run(
            &[
                "--config",
                &config,
                "-v",
                "batch",
                "run",
                &file,
                "--report",
                &report_s,
                "--rate-limits",
                "none",
            ],
            &[],
        )
        .await;
    run.assert_ok();
    let certs = crate::batch::report(&report);
    assert_eq!(certs.len(), n, "{run}");
    assert!(
        certs.iter().all(|c| c["state"] == "issued"),
        "every certificate issued: {:?}",
        certs.iter().find(|c| c["state"] != "issued")
    );
    let rounds: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("rfc2136: adding") || l.contains("rfc2136: deleting"))
        .collect();
    assert!(
        rounds
            .iter()
            .all(|l| l.contains("zone corp.test.") && l.contains("(1 UPDATE message(s))")),
        "one UPDATE per zone per round:\n{}",
        rounds.join("\n")
    );
    let records: usize = rounds
        .iter()
        .filter(|l| l.contains("adding"))
        .filter_map(|l| {
            l.split("adding ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .sum();
    assert_eq!(
        records,
        n,
        "every record presented once:\n{}",
        rounds.join("\n")
    );
    let after = lab.d.bind.stats(lab.d.bind.primary()).await.expect("stats");
    assert_eq!(
        (after.updates - before.updates) as usize,
        rounds.len(),
        "BIND counted one UPDATE per round"
    );
    assert!(
        rounds.len() < n,
        "records batched: {} rounds for {n} certificates",
        rounds.len()
    );
    assert_eq!(
        after.tkey_queries - before.tkey_queries,
        1,
        "one TKEY negotiation for the whole batch"
    );
    eprintln!(
        "GSS-TSIG batch: {n} certificates, {} UPDATE rounds, 1 TKEY negotiation, {:?}",
        rounds.len(),
        run.elapsed
    );
    lab.d
        .assert_no_txt(lab.d.bind.primary(), &["h000.corp.test"]);
}
