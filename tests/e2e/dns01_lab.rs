//! DNS-01 in enterprise DNS (issue 11): the namespace lab of `certfleet_testenv::dns_lab`
//! (primary + secondary on port 53 of their own addresses, a delegated validation zone
//! `acme.corp.test` with `_acme-challenge.www.corp.test` CNAMEd into it, a recursive
//! resolver that Pebble validates through, certfleet inside the same namespace).
//!
//! Each test re-runs itself inside a fresh network namespace (`unshare --net`); the outer
//! copy only checks the tools and reports the inner run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use certfleet_testenv::dns_lab::{
    self, DnsLab, INSIDE_ENV, LabPrimary, LabSecondary, PRIMARY, RESOLVER, SECONDARY, STALE_VIEW,
};
use certfleet_testenv::{CaProxy, CaProxyOptions, PebbleOptions, plugin_dir};

use crate::common::{Env, Run};

/// Whole namespace run, servers included.
const LAB_LIMIT: Duration = Duration::from_secs(300);
/// Issuance loop length of acceptance 1 and 3.
const RUNS: usize = 20;
const NAMES: [&str; 2] = ["www.corp.test", "*.corp.test"];
/// The TXT owners the two names need, and the zone that must hold each.
const OWNERS: [(&str, &str); 2] = [
    ("_acme-challenge.corp.test.", "corp.test"),
    ("www.acme.corp.test.", "acme.corp.test"),
];

/// Outside the namespace: runs `name` inside one (or skips without the tools) and returns
/// `true`; inside: `false`, so the caller runs the body.
pub(crate) fn outside_as(module: &str, primary: LabPrimary, name: &str) -> bool {
    if std::env::var_os(INSIDE_ENV).is_some() {
        dns_lab::enter().expect("lab namespace set up");
        return false;
    }
    if !crate::common::tools_present() || !dns_lab::lab_tools_present(primary) {
        return true;
    }
    let out = dns_lab::in_namespace(&format!("{module}::{name}"), LAB_LIMIT)
        .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("{out}");
    true
}

fn outside(primary: LabPrimary, name: &str) -> bool {
    outside_as("dns01_lab", primary, name)
}

/// The lab, a Pebble validating through the lab's resolver, and an account.
pub(crate) async fn start(primary: LabPrimary, secondary: LabSecondary) -> (DnsLab, Env) {
    let lab = DnsLab::start(primary, secondary)
        .await
        .unwrap_or_else(|e| panic!("lab: {e:#}"));
    let env = Env::start(PebbleOptions::default().dns_server(RESOLVER.to_string()))
        .await
        .expect("pebble tools");
    env.register_account().await;
    (lab, env)
}

/// `[dns01]` (every authoritative server asked on port 53) and `[plugins.rfc2136]` with the
/// admin's key as their tool wrote it (no `server`: UPDATEs go to the SOA MNAME). The plugin
/// and the checker look names up at the primary, not at the CA's resolver: asking that for
/// `_acme-challenge` names before every server has them plants NXDOMAINs in its negative
/// cache, which the CA then reads (seen here; docs/plugins.md).
pub(crate) fn config(env: &Env, lab: &DnsLab, timeout_secs: u64, rfc2136_extra: &str) -> PathBuf {
    let key = match lab.primary_kind() {
        LabPrimary::PowerDns => format!(
            "key_name = \"{}\"\nalgorithm = \"hmac-sha512\"\nsecret_file = \"{}\"\n",
            dns_lab::KEY_NAME,
            lab.secret_file().display()
        ),
        _ => format!("key_file = \"{}\"\n", lab.key_file().display()),
    };
    let text = format!(
        "[dns01]\nplugin_dirs = [\"{}\"]\n[dns01.propagation]\ncheck = true\ntimeout_secs = {timeout_secs}\n\
         interval_millis = 100\nquery_timeout_millis = 1000\ndiscovery_resolvers = [\"{PRIMARY}\"]\n\
         [plugins.rfc2136]\nresolver = \"{PRIMARY}\"\ntimeout_secs = 5\n{key}{rfc2136_extra}",
        plugin_dir().display()
    );
    let path = env.path(&format!("lab-{}.toml", std::process::id()));
    std::fs::write(&path, text).expect("write config");
    path
}

async fn issue(
    env: &Env,
    directory: &str,
    config: &std::path::Path,
    plugin: &str,
    names: &[&str],
    out: &str,
) -> Run {
    crate::dns_env::issue_dns01(env, directory, config, plugin, names, out, &[]).await
}

/// A small xorshift, seeded from the clock and printed, for the name order of each run.
struct Shuffle(u64);

impl Shuffle {
    fn new() -> Shuffle {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1;
        eprintln!("name order seed {seed}");
        Shuffle(seed)
    }

    fn flip(&mut self) -> bool {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 & 1 == 1
    }
}

/// No TXT left on the servers for the owners, and nothing hidden in either zone (zone
/// transfers show records below a cut that queries never would). The secondary follows
/// within its 1 s refresh, so it is polled for a bounded time.
pub(crate) async fn assert_clean_on(lab: &DnsLab, servers: &[SocketAddr]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut left = Vec::new();
        for &server in servers {
            for (owner, _) in OWNERS {
                let v = lab.txt(server, owner).expect("dig");
                if !v.is_empty() {
                    left.push(format!("{owner} {v:?} on {server}"));
                }
            }
            for zone in dns_lab::ZONES {
                let v = lab.zone_txt(server, zone).expect("axfr");
                if !v.is_empty() {
                    left.push(format!("zone {zone} on {server} holds {v:?}"));
                }
            }
        }
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "records left behind: {}\n{}",
            left.join("; "),
            lab.log_tails(20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// [`assert_clean_on`] both servers.
async fn assert_clean(lab: &DnsLab) {
    assert_clean_on(lab, &[PRIMARY, SECONDARY]).await;
}

/// BIND's `update` log lines `updating zone 'Z/IN': adding|deleting an RR at NAME`:
/// every one must name the zone that holds NAME. Returns (adds, deletes).
fn assert_updates_in_holding_zones(log: &str) -> (usize, usize) {
    let (mut adds, mut deletes) = (0, 0);
    for line in log.lines().filter(|l| l.contains("updating zone '")) {
        let zone = line
            .split("updating zone '")
            .nth(1)
            .and_then(|r| r.split("/IN'").next())
            .unwrap_or_default();
        // BIND 9.18: "adding an RR at 'NAME' TXT …" / "deleting an RR at NAME TXT" (unquoted).
        let Some(owner) = line
            .split(" an RR at ")
            .nth(1)
            .map(|r| r.trim_start_matches('\''))
            .and_then(|r| r.split(['\'', ' ']).next())
        else {
            continue;
        };
        let owner_dot = format!("{owner}.");
        let expected = OWNERS
            .iter()
            .find(|(o, _)| *o == owner_dot)
            .map(|(_, z)| *z)
            .unwrap_or_else(|| panic!("an UPDATE touched an unexpected name: {line}"));
        assert_eq!(zone, expected, "UPDATE sent to the wrong zone: {line}");
        if line.contains("adding an RR") {
            adds += 1;
        } else {
            deletes += 1;
        }
    }
    (adds, deletes)
}

/// Acceptance 1 (BIND) and 3 (Knot, PowerDNS): the wildcard pair, 20 runs, names in random
/// order (Pebble orders authorizations itself), each issued; every UPDATE in the holding
/// zone; nothing left on either server.
async fn wildcard_runs(primary: LabPrimary) {
    let (lab, env) = start(primary, LabSecondary::Current).await;
    let config = config(&env, &lab, 30, "");
    let mut shuffle = Shuffle::new();
    let started = Instant::now();
    // TXT records certfleet added, from its own log: usually 2 per run, 1 when Pebble reused
    // a valid authorization (it does so ~1 % of the time even with PEBBLE_AUTHZREUSE=0).
    let mut presented = 0;
    for i in 0..RUNS {
        let names = if shuffle.flip() {
            [NAMES[0], NAMES[1]]
        } else {
            [NAMES[1], NAMES[0]]
        };
        let run = issue(
            &env,
            &env.pebble.directory_url(),
            &config,
            "rfc2136",
            &names,
            &format!("out{i}"),
        )
        .await;
        if !run.status.success() {
            panic!("run {i} ({names:?}) failed:\n{run}\n{}", lab.log_tails(30));
        }
        assert!(
            env.path(&format!("out{i}/cert.pem")).is_file(),
            "run {i}: no certificate"
        );
        presented += records_added(&run.stderr);
        // The primary clean (AXFR too); then both servers clean and the CA's resolver
        // emptied before the next order: a server still serving this run's value could hand
        // it to the resolver for the next one. The secondary's zones are transferred at the end.
        assert_clean_on(&lab, &[PRIMARY]).await;
        lab.forget_previous_run()
            .await
            .unwrap_or_else(|e| panic!("run {i}: {e:#}"));
        eprintln!("run {i}: {names:?} issued in {:?}", run.elapsed);
    }
    eprintln!("{RUNS} runs in {:?}", started.elapsed());
    assert_clean(&lab).await;
    if primary == LabPrimary::Bind {
        let log = lab.primary_log();
        let (adds, deletes) = assert_updates_in_holding_zones(&log);
        let updates: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("updating zone '") || l.contains("update"))
            .collect();
        assert!(presented >= RUNS, "{presented} records in {RUNS} runs");
        assert_eq!(
            (adds, deletes),
            (presented, presented),
            "one add and one delete per record certfleet presented; the primary's update log:\n{}",
            updates.join("\n")
        );
    }
}

/// Sum of N over certfleet's "adding N TXT record(s)" lines.
fn records_added(stderr: &str) -> usize {
    stderr
        .split("adding ")
        .skip(1)
        .filter_map(|rest| {
            let end = rest.find(" TXT record")?;
            rest[..end].trim().parse::<usize>().ok()
        })
        .sum()
}

#[tokio::test]
async fn bind_primary_wildcard_into_delegated_zone_20_of_20() {
    if outside(
        LabPrimary::Bind,
        "bind_primary_wildcard_into_delegated_zone_20_of_20",
    ) {
        return;
    }
    wildcard_runs(LabPrimary::Bind).await;
}

#[tokio::test]
async fn knot_primary_wildcard_into_delegated_zone_20_of_20() {
    if outside(
        LabPrimary::Knot,
        "knot_primary_wildcard_into_delegated_zone_20_of_20",
    ) {
        return;
    }
    wildcard_runs(LabPrimary::Knot).await;
}

#[tokio::test]
async fn powerdns_primary_wildcard_into_delegated_zone_20_of_20() {
    if outside(
        LabPrimary::PowerDns,
        "powerdns_primary_wildcard_into_delegated_zone_20_of_20",
    ) {
        return;
    }
    wildcard_runs(LabPrimary::PowerDns).await;
}

/// Acceptance 2: a secondary that never hears of the change. The run fails within the
/// propagation timeout, the error names only the secondary (name and address) and what it
/// answered, the CA is never asked to validate, and the records are removed.
#[tokio::test]
async fn lagging_secondary_is_named_and_the_ca_never_asked() {
    if outside(
        LabPrimary::Bind,
        "lagging_secondary_is_named_and_the_ca_never_asked",
    ) {
        return;
    }
    let (lab, env) = start(LabPrimary::Bind, LabSecondary::Lagging).await;
    let proxy = CaProxy::start(&env.pebble, CaProxyOptions::default())
        .await
        .expect("proxy");
    env.register_at(&proxy.directory_url(), "proxy-account.pem")
        .await;
    let timeout = 4;
    let config = config(&env, &lab, timeout, "");
    let run = issue(
        &env,
        &proxy.directory_url(),
        &config,
        "rfc2136",
        &NAMES,
        "out",
    )
    .await;
    assert_eq!(run.code(), Some(1), "must fail:\n{run}");
    assert!(
        run.elapsed < Duration::from_secs(timeout + 10),
        "took {:?} for a {timeout}s timeout",
        run.elapsed
    );
    let secondary = format!("ns2.corp.test. ({SECONDARY}) lags");
    assert!(
        run.stderr.contains(&secondary),
        "{secondary:?} missing:\n{run}"
    );
    assert!(
        run.stderr.contains("answered NXDOMAIN"),
        "what it answered:\n{run}"
    );
    assert!(
        !run.stderr.contains("ns1.corp.test"),
        "the primary is not lagging:\n{run}"
    );
    assert!(
        !run.stderr.contains("zone cut"),
        "not a zone problem:\n{run}"
    );
    assert_eq!(
        proxy.stats().requests_to("chalZ"),
        0,
        "the CA was asked to validate"
    );
    assert_clean(&lab).await;
}

/// A hook (lego's exec convention) that resolves the CNAME itself but writes into the parent
/// zone `corp.test`: the record lands below the `acme.corp.test` cut, accepted silently.
const WRONG_ZONE_HOOK: &str = r#"#!/bin/sh
set -e
target=$(dig +short CNAME "$2" @127.0.0.1 | head -n 1)
[ -n "$target" ] || target="$2"
case "$1" in
  present) op="update add $target 60 TXT \"$3\"" ;;
  cleanup) op="update delete $target TXT \"$3\"" ;;
  *) exit 2 ;;
esac
printf 'server 127.0.0.2\nzone corp.test\n%s\nsend\n' "$op" | nsupdate -k "$KEY_FILE"
"#;

/// Acceptance 4 and 5 and `plugin check` on one lab: a record written into the wrong zone by
/// an exec hook is reported as a possible zone-cut problem, not as lag; `zone` is a guard
/// (a parent zone still updates the child zone that holds the name; names outside are
/// refused naming the CNAME; nothing hidden is ever written); `plugin check` covers both
/// zones the names need.
#[tokio::test]
async fn wrong_zone_hook_zone_guard_and_check() {
    if outside(LabPrimary::Bind, "wrong_zone_hook_zone_guard_and_check") {
        return;
    }
    let (mut lab, env) = start(LabPrimary::Bind, LabSecondary::Current).await;
    let directory = env.pebble.directory_url();

    // Acceptance 4.
    let hook = env.path("wrong-zone-hook.sh");
    std::fs::write(&hook, WRONG_ZONE_HOOK).expect("hook");
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let exec = format!(
        "[plugins.exec]\ncommand = \"{}\"\ntimeout_secs = 20\nenv = {{ KEY_FILE = \"{}\" }}\n",
        hook.display(),
        lab.key_file().display()
    );
    let config_exec = config(&env, &lab, 3, "");
    let text = std::fs::read_to_string(&config_exec).expect("read") + &exec;
    std::fs::write(&config_exec, text).expect("write");
    let run = issue(
        &env,
        &directory,
        &config_exec,
        "exec",
        &["www.corp.test"],
        "hook",
    )
    .await;
    assert_eq!(run.code(), Some(1), "must fail:\n{run}");
    assert!(
        run.stderr.contains(
            "no authoritative server of zone acme.corp.test. serves www.acme.corp.test. TXT"
        ) && run.stderr.contains("below the zone cut"),
        "not diagnosed as a zone-cut problem:\n{run}"
    );
    assert!(!run.stderr.contains(" lags"), "blamed a server:\n{run}");
    assert_clean(&lab).await;

    // Verify before blaming: discovery through a stale split-horizon view puts
    // www.acme.corp.test into corp.test; the primary refuses the UPDATE (its prerequisites
    // prove the placement), and the plugin says so instead of waiting for propagation.
    lab.start_stale_view().await.expect("stale view");
    let stale = format!("server = \"{PRIMARY}\"\n");
    let config_stale = config(&env, &lab, 30, &stale);
    let text = std::fs::read_to_string(&config_stale)
        .expect("read")
        .replace(
            &format!("resolver = \"{PRIMARY}\""),
            &format!("resolver = \"{STALE_VIEW}\""),
        );
    std::fs::write(&config_stale, text).expect("write");
    let run = issue(
        &env,
        &directory,
        &config_stale,
        "rfc2136",
        &["www.corp.test"],
        "stale",
    )
    .await;
    assert_eq!(run.code(), Some(1), "must fail:\n{run}");
    // The UPDATE's prerequisites (no NS between the zone and the name) make the primary
    // refuse it: nothing is written below the cut.
    assert!(
        run.stderr
            .contains("zone corp.test. at 127.0.0.2:53 refused the UPDATE's prerequisites")
            && run
                .stderr
                .contains("for www.acme.corp.test.: is the record below a zone cut (wrong zone)?"),
        "{run}"
    );
    assert!(
        !run.stderr.contains("not visible after"),
        "waited for propagation:\n{run}"
    );
    assert_clean(&lab).await;

    // Acceptance 5. The refused guards run before the one that issues: Pebble reuses a
    // valid authorization now and then even with PEBBLE_AUTHZREUSE=0 (`rand.Intn(100) >
    // 0`), and a reused authorization asks for no record, so the guard would not be hit.
    // (The hook's wrong-zone UPDATEs above are in the log; only what follows is checked.)
    let mark = lab.primary_log().len();
    // The child zone as guard: the apex challenge lives in corp.test, outside it.
    let config_child = config(&env, &lab, 30, "zone = \"acme.corp.test\"\n");
    let run = issue(
        &env,
        &directory,
        &config_child,
        "rfc2136",
        &NAMES,
        "guard-child",
    )
    .await;
    assert_eq!(run.code(), Some(1), "must fail:\n{run}");
    assert!(
        run.stderr.contains(
            "_acme-challenge.corp.test. is outside the configured zone(s) acme.corp.test."
        ),
        "{run}"
    );
    // A guard the CNAME leads out of: the error names the CNAME.
    let config_other = config(
        &env,
        &lab,
        30,
        "zone = [\"other.test\", \"corp.test.example\"]\n",
    );
    let run = issue(
        &env,
        &directory,
        &config_other,
        "rfc2136",
        &["www.corp.test"],
        "guard-other",
    )
    .await;
    assert_eq!(run.code(), Some(1), "must fail:\n{run}");
    assert!(
        run.stderr.contains("_acme-challenge.www.corp.test. is a CNAME to www.acme.corp.test., which is outside every configured zone"),
        "{run}"
    );
    assert_clean(&lab).await;
    // A parent zone as guard; the child zone still gets the record.
    let config_parent = config(&env, &lab, 30, "zone = \"corp.test\"\n");
    issue(
        &env,
        &directory,
        &config_parent,
        "rfc2136",
        &NAMES,
        "guard-parent",
    )
    .await
    .assert_ok();
    assert_clean(&lab).await;
    let (adds, _) = assert_updates_in_holding_zones(&lab.primary_log()[mark..]);
    assert_eq!(
        adds, 2,
        "only the issued names were written; refused names caused no UPDATE"
    );

    // plugin check: both zones the names need, with the key.
    let config_s = config(&env, &lab, 30, "").to_string_lossy().into_owned();
    let run = env
        .run(&[
            "--config",
            &config_s,
            "plugin",
            "check",
            "rfc2136",
            "--name",
            "www.corp.test",
            "--name",
            "*.corp.test",
        ])
        .await;
    run.assert_ok();
    for zone in ["corp.test.", "acme.corp.test."] {
        let line = format!("ok    zone {zone} at {PRIMARY}: signed no-op UPDATE");
        assert!(run.stdout.contains(&line), "{line:?} missing:\n{run}");
    }
    assert!(
        run.stdout.contains("_acme-challenge.www.corp.test. (CNAME to www.acme.corp.test.) is in zone acme.corp.test."),
        "{run}"
    );
}
