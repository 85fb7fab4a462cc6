//! `cargo xtask bench dns --lab [--runs N] [--batch N] [--lego-batch N] [--zones N]
//! [--no-lego]` (also `bench dns-lab`): wall times in the
//! enterprise DNS lab of `certfleet_testenv::dns_lab` (BIND primary + secondary on port 53 of
//! their own addresses, `_acme-challenge.www.corp.test` CNAMEd into the delegated
//! `acme.corp.test`, Pebble validating for real through a recursive resolver), all inside a
//! network namespace this task creates by re-running itself under `unshare --net`.
//!
//! Reported side by side in one run: the 2-name wildcard certificate (`www.corp.test` +
//! `*.corp.test`) by certfleet (median of N runs) and by lego's rfc2136 provider with its
//! defaults and with `RFC2136_SEQUENCE_INTERVAL=1`; then a batch of N certificates (one name
//! each, in `acme.corp.test`) by `certfleet batch run` with default settings, beside lego's
//! rfc2136 provider issuing `--lego-batch` one-name certificates in 4 processes with
//! `RFC2136_SEQUENCE_INTERVAL=1`: certificates per second of each and their ratio, UPDATE
//! messages per zone per 100 records (BIND's log) and how many carried deletes and adds, the
//! DNS queries per record certfleet sent (the checker's per-check counts, discovery included,
//! plus the plugin's own), and the load average. With `--zones N` (default 10; 1: off) the
//! lab gets N more delegated validation zones and the batch runs again with its names
//! spread over them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use certfleet_testenv::dns_lab::{self, DnsLab, LabPrimary, LabSecondary, PRIMARY, RESOLVER};
use certfleet_testenv::{Pebble, PebbleOptions};

use crate::util::{cargo, ensure_tools, run_cmd, runtime, step, target_dir};

const USAGE: &str = "usage: cargo xtask bench dns --lab [--runs N] [--batch N] [--lego-batch N] [--zones N] [--no-lego]";
const TOOLS: &[(&str, &str)] = &[
    ("named", "bind9"),
    ("tsig-keygen", "bind9"),
    ("dig", "bind9-dnsutils"),
    ("pebble", "pebble"),
    ("lego", "lego"),
    ("unshare", "util-linux"),
    ("ip", "iproute2"),
];

#[derive(Debug, Clone)]
struct Options {
    runs: usize,
    batch: usize,
    lego_batch: usize,
    /// The batch is run again spread over this many delegated validation zones (1: not).
    zones: usize,
    lego: bool,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        runs: 5,
        batch: 1000,
        lego_batch: 20,
        zones: 10,
        lego: true,
    };
    let mut p = crate::bench_args::BenchArgs::new(args, USAGE);
    while let Some(a) = p.next_option() {
        match a {
            "--runs" => o.runs = p.number(a)?,
            "--batch" => o.batch = p.number(a)?,
            "--lego-batch" => o.lego_batch = p.number(a)?,
            "--zones" => o.zones = p.number(a)?,
            "--no-lego" => o.lego = false,
            "--lab" => {}
            other => return Err(p.unknown(other)),
        }
    }
    p.at_least_one("--runs", o.runs)?;
    p.at_least_one("--batch", o.batch)?;
    p.at_least_one("--lego-batch", o.lego_batch)?;
    p.at_least_one("--zones", o.zones)?;
    Ok(o)
}

pub fn run(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    if std::env::var_os(dns_lab::INSIDE_ENV).is_some() {
        dns_lab::enter()?;
        private_resolv_conf()?;
        return runtime()?.block_on(inside(&o));
    }
    let mut tools = TOOLS.to_vec();
    if !o.lego {
        tools.retain(|(t, _)| *t != "lego");
    }
    step("packages for the benchmark", || ensure_tools(&tools))?;
    step("cargo build --release (certfleet, rfc2136 plugin)", || {
        run_cmd(cargo().args([
            "build",
            "--release",
            "-p",
            "certfleet-cli",
            "-p",
            "certfleet-plugin-rfc2136",
        ]))
    })?;
    let exe = std::env::current_exe().context("finding the xtask binary")?;
    // A mount namespace too: lego looks NS host names up through /etc/resolv.conf, which
    // is replaced (privately) by one naming the lab's resolver.
    let status = Command::new("unshare")
        .args(["--net", "--mount"])
        .arg("--")
        .arg(exe)
        .args(["bench", "dns-lab"])
        .args(args)
        .env(dns_lab::INSIDE_ENV, "1")
        .status()
        .context("running unshare --net")?;
    if !status.success() {
        bail!("the benchmark in the namespace failed ({status})");
    }
    Ok(())
}

/// Inside the namespaces: /etc/resolv.conf → the lab's resolver, by a private bind mount.
fn private_resolv_conf() -> Result<()> {
    let path = std::env::temp_dir().join(format!("certfleet-lab-resolv-{}", std::process::id()));
    std::fs::write(&path, format!("nameserver {}\n", RESOLVER.ip()))?;
    run_cmd(
        Command::new("mount")
            .arg("--bind")
            .arg(&path)
            .arg("/etc/resolv.conf"),
    )
}

struct Lab {
    lab: DnsLab,
    pebble: Pebble,
    work: tempfile::TempDir,
    bin: PathBuf,
    config: PathBuf,
}

impl Lab {
    fn certfleet(&self, args: &[&str]) -> Result<(Duration, String)> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--state-dir")
            .arg(self.work.path().join("state"))
            .arg("--directory")
            .arg(self.pebble.directory_url())
            .arg("--ca-root")
            .arg(self.pebble.tls_root_pem_path())
            .args(args)
            .env("CERTFLEET_LOG", "info");
        let started = Instant::now();
        let out = cmd.output().context("running certfleet")?;
        let elapsed = started.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            bail!("certfleet {} failed:\n{stderr}", args.join(" "));
        }
        Ok((elapsed, stderr))
    }
}

async fn inside(o: &Options) -> Result<()> {
    let extra_zones = if o.zones > 1 { o.zones } else { 0 };
    let lab =
        DnsLab::start_with_zones(LabPrimary::Bind, LabSecondary::Current, extra_zones).await?;
    let pebble = Pebble::start(PebbleOptions::default().dns_server(RESOLVER.to_string())).await?;
    let work = tempfile::Builder::new()
        .prefix("certfleet-bench-lab-")
        .tempdir()?;
    let release = target_dir().join("release");
    let config = work.path().join("certfleet.toml");
    std::fs::write(
        &config,
        format!(
            "[dns01]\nplugin = \"rfc2136\"\nplugin_dirs = [\"{}\"]\n[dns01.propagation]\ncheck = true\ntimeout_secs = 60\n\
             interval_millis = 100\nquery_timeout_millis = 1000\ndiscovery_resolvers = [\"{PRIMARY}\"]\n\
             [plugins.rfc2136]\nresolver = \"{PRIMARY}\"\nkey_file = \"{}\"\n",
            release.display(),
            lab.key_file().display()
        ),
    )?;
    let l = Lab {
        lab,
        pebble,
        bin: release.join("certfleet"),
        config,
        work,
    };
    let account = l.work.path().join("account.pem");
    let account_s = account.to_string_lossy().into_owned();
    l.certfleet(&["key", "generate", "--alg", "es256", "--out", &account_s])?;
    l.certfleet(&["account", "register", "--key", &account_s, "--agree-tos"])?;
    let config_s = l.config.to_string_lossy().into_owned();

    let mut rows: Vec<(String, Duration)> = Vec::new();
    let mut times = Vec::new();
    for i in 0..o.runs {
        // Not timed: no server and not the CA's resolver may still hold the previous values.
        l.lab.forget_previous_run().await?;
        let out = l.work.path().join(format!("wild{i}"));
        let out_s = out.to_string_lossy().into_owned();
        let (t, _) = l.certfleet(&[
            "--config",
            &config_s,
            "issue",
            "--name",
            "www.corp.test",
            "--name",
            "*.corp.test",
            "--challenge",
            "dns-01",
            "--dns-plugin",
            "rfc2136",
            "--out",
            &out_s,
        ])?;
        times.push(t);
    }
    times.sort();
    rows.push((
        format!("certfleet (median of {})", o.runs),
        times[times.len() / 2],
    ));
    if o.lego {
        for (label, interval) in [
            ("lego (defaults)", None),
            ("lego (RFC2136_SEQUENCE_INTERVAL=1)", Some("1")),
        ] {
            l.lab.forget_previous_run().await?;
            let t = lego(&l, interval)?;
            rows.push((label.to_owned(), t));
        }
    }
    println!(
        "\n2-name wildcard certificate (www.corp.test + *.corp.test, CNAME into acme.corp.test)"
    );
    let base = rows[0].1;
    for (label, t) in &rows {
        println!(
            "  {label:<40} {:>8.2} s   {:>6.1}x certfleet",
            t.as_secs_f64(),
            t.as_secs_f64() / base.as_secs_f64().max(1e-9)
        );
    }

    let names: Vec<String> = (0..o.batch)
        .map(|i| format!("b{i:04}.acme.corp.test"))
        .collect();
    let ours = batch(&l, &config_s, "one zone", &names)?;
    if o.zones > 1 {
        let zones = l.lab.validation_zones();
        let names: Vec<String> = (0..o.batch)
            .map(|i| format!("s{i:04}.{}", zones[i % zones.len()]))
            .collect();
        batch(
            &l,
            &config_s,
            &format!("spread over {} zones", zones.len()),
            &names,
        )?;
    }
    if o.lego {
        l.lab.forget_previous_run().await?;
        let (lt, ok) = lego_batch(&l, o.lego_batch)?;
        let theirs = ok as f64 / lt.as_secs_f64().max(1e-9);
        println!(
            "  lego rfc2136 (4 processes, RFC2136_SEQUENCE_INTERVAL=1): {ok} of {} certificates in \
             {:.2} s = {theirs:.3} certificates/s; certfleet {:.1}x",
            o.lego_batch,
            lt.as_secs_f64(),
            ours / theirs.max(1e-9)
        );
    }
    Ok(())
}

/// One `certfleet batch run` of one-name certificates for `names`, with its figures
/// printed; returns certificates/s.
fn batch(l: &Lab, config: &str, label: &str, names: &[String]) -> Result<f64> {
    let n = names.len();
    let batch_file = l
        .work
        .path()
        .join(format!("batch-{}.txt", label.replace(' ', "-")));
    std::fs::write(&batch_file, names.join("\n") + "\n")?;
    let report = l.work.path().join("report.json");
    let mark = l.lab.primary_log().len();
    let load_before = load_average();
    let (t, log) = l.certfleet(&[
        "--config",
        config,
        "batch",
        "run",
        &batch_file.to_string_lossy(),
        "--rate-limits",
        "none",
        "--report",
        &report.to_string_lossy(),
    ])?;
    let load_after = load_average();
    let visible: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("visible on every authoritative server"))
        .collect();
    let rounds = visible.len() as u64;
    let checker_queries: u64 = visible.iter().filter_map(|l| field(l, "queries=")).sum();
    let plugin_queries = log
        .lines()
        .filter(|l| l.contains("dns-01 provider cost"))
        .filter_map(|l| field(l, "dns_queries="))
        .sum::<u64>();
    let ours = n as f64 / t.as_secs_f64().max(1e-9);
    let primary_log = l.lab.primary_log();
    let primary_log = &primary_log[mark..];
    println!(
        "\n{n} certificates by `certfleet batch run` (dns-01, primary + secondary, {label}): {:.2} s",
        t.as_secs_f64()
    );
    println!("  propagation rounds: {rounds}");
    println!(
        "  UPDATE messages per zone (BIND's log, adds + deletes): {} (plugin's log: {})",
        update_messages_per_zone(primary_log),
        provider_cost(&log)
    );
    println!(
        "  UPDATE messages carrying both deletes and adds: {}",
        mixed_update_messages(primary_log)
    );
    println!(
        "  RRs changed per zone (BIND's update log): {}",
        update_lines_per_zone(primary_log)
    );
    println!("  certificates/s: {ours:.2}");
    println!(
        "  UPDATE messages per zone per 100 records: {}",
        update_messages_per_100(primary_log, n, names)
    );
    println!(
        "  DNS queries per record: {:.2} (checker {checker_queries} incl. discovery, plugin {plugin_queries})",
        (checker_queries + plugin_queries) as f64 / n as f64
    );
    println!("  load average before / after: {load_before} / {load_after}");
    Ok(ours)
}

/// lego's rfc2136 provider for the wildcard pair, its defaults except where told.
fn lego(l: &Lab, sequence_interval: Option<&str>) -> Result<Duration> {
    let work = tempfile::Builder::new()
        .prefix("certfleet-bench-lego-")
        .tempdir()?;
    let secret = key_secret(l.lab.key_file())?;
    let mut cmd = Command::new("lego");
    cmd.args([
        "-s",
        &l.pebble.directory_url(),
        "-a",
        "-m",
        "bench@corp.test",
    ])
    .arg("--path")
    .arg(work.path())
    .args(["-k", "ec256", "--dns", "rfc2136"])
    .args(["--dns.resolvers", &PRIMARY.to_string()])
    .args(["-d", "www.corp.test", "-d", "*.corp.test", "run"])
    .env("LEGO_CA_CERTIFICATES", l.pebble.tls_root_pem_path())
    .env("RFC2136_NAMESERVER", PRIMARY.to_string())
    .env("RFC2136_TSIG_ALGORITHM", "hmac-sha512.")
    .env("RFC2136_TSIG_KEY", format!("{}.", dns_lab::KEY_NAME))
    .env("RFC2136_TSIG_SECRET", secret);
    if let Some(s) = sequence_interval {
        cmd.env("RFC2136_SEQUENCE_INTERVAL", s);
    }
    let log = work.path().join("lego.log");
    let out = std::fs::File::create(&log)?;
    cmd.stdout(out.try_clone()?).stderr(out);
    let started = Instant::now();
    let status = cmd.status().context("running lego")?;
    let t = started.elapsed();
    if !status.success() {
        bail!(
            "lego failed ({status}):\n{}",
            certfleet_testenv::tail_file(&log, 30)
        );
    }
    Ok(t)
}

/// The base64 secret of a `tsig-keygen` key file.
fn key_secret(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)?;
    text.split('"')
        .nth(3)
        .map(str::to_owned)
        .context("no secret in the key file")
}

/// UPDATE messages per zone from the plugin's log lines `rfc2136: deleting D and adding A
/// TXT record(s) in zone Z at ADDR (M UPDATE message(s))`, with the records they carried.
fn provider_cost(log: &str) -> String {
    let mut per: std::collections::BTreeMap<String, [u64; 3]> = Default::default();
    for line in log.lines() {
        let Some(rest) = line.split("rfc2136: deleting ").nth(1) else {
            continue;
        };
        let number = |s: Option<&str>| s.and_then(|s| s.split(' ').next()?.parse::<u64>().ok());
        let deletes = number(Some(rest));
        let adds = number(rest.split(" and adding ").nth(1));
        let zone = rest
            .split(" in zone ")
            .nth(1)
            .and_then(|r| r.split(' ').next());
        let messages = number(rest.split(" (").nth(1));
        if let (Some(z), Some(d), Some(a), Some(m)) = (zone, deletes, adds, messages) {
            let e = per.entry(z.to_owned()).or_default();
            e[0] += m;
            e[1] += d;
            e[2] += a;
        }
    }
    if per.is_empty() {
        return "no plugin log lines".to_owned();
    }
    per.iter()
        .map(|(z, [m, d, a])| format!("{z} {m} ({d} deletes, {a} adds)"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// UPDATE messages (by client, see [`update_messages_per_zone`]) whose RR lines both delete
/// and add.
fn mixed_update_messages(log: &str) -> usize {
    let mut per: std::collections::BTreeMap<&str, (bool, bool)> = Default::default();
    for line in log.lines().filter(|l| l.contains(" an RR at ")) {
        if let Some(c) = line
            .split("client ")
            .nth(1)
            .and_then(|r| r.split(": updating zone").next())
        {
            let e = per.entry(c).or_default();
            e.0 |= line.contains("adding an RR");
            e.1 |= line.contains("deleting an RR");
        }
    }
    per.values().filter(|(a, d)| *a && *d).count()
}

/// `zone: n` for BIND's `updating zone 'Z/IN': … an RR` lines.
fn update_lines_per_zone(log: &str) -> String {
    let mut per: std::collections::BTreeMap<String, usize> = Default::default();
    for line in log.lines() {
        if let Some(z) = line
            .split("updating zone '")
            .nth(1)
            .and_then(|r| r.split("/IN'").next())
            && line.contains(" an RR at ")
        {
            *per.entry(z.to_owned()).or_default() += 1;
        }
    }
    per.iter()
        .map(|(z, n)| format!("{z}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// UPDATE messages per zone from BIND's `update` log: each message's RR lines share the
/// client (`@pointer addr#port`, a fresh UDP port per message from the plugin).
fn update_messages_per_zone(log: &str) -> String {
    let mut seen: std::collections::BTreeSet<(String, String)> = Default::default();
    for line in log.lines().filter(|l| l.contains(" an RR at ")) {
        let client = line
            .split("client ")
            .nth(1)
            .and_then(|r| r.split(": updating zone").next());
        let zone = line
            .split("updating zone '")
            .nth(1)
            .and_then(|r| r.split("/IN'").next());
        if let (Some(c), Some(z)) = (client, zone) {
            seen.insert((z.to_owned(), c.to_owned()));
        }
    }
    let mut per: std::collections::BTreeMap<&str, usize> = Default::default();
    for (z, _) in &seen {
        *per.entry(z.as_str()).or_default() += 1;
    }
    per.iter()
        .map(|(z, n)| format!("{z}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The number after `key` in a log line (`queries=12`).
fn field(line: &str, key: &str) -> Option<u64> {
    line.split(key)
        .nth(1)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// /proc/loadavg's first three figures.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// UPDATE messages per zone per 100 of the zone's records (its names' records, adds and
/// deletes together; `total` when no name is directly below the zone).
fn update_messages_per_100(log: &str, total: usize, names: &[String]) -> String {
    update_messages_per_zone(log)
        .split(", ")
        .filter_map(|zn| {
            let (z, n) = zn.split_once(": ")?;
            let n: f64 = n.parse().ok()?;
            let in_zone = names
                .iter()
                .filter(|name| name.split_once('.').is_some_and(|(_, parent)| parent == z))
                .count();
            let records = if in_zone > 0 { in_zone } else { total };
            Some(format!("{z}: {:.2}", n * 100.0 / records.max(1) as f64))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// lego's rfc2136 provider for `n` one-name certificates, 4 processes at once (each runs
/// its share one after another, as a cron job would): (wall time, certificates issued).
fn lego_batch(l: &Lab, n: usize) -> Result<(Duration, usize)> {
    let secret = key_secret(l.lab.key_file())?;
    let work = tempfile::Builder::new()
        .prefix("certfleet-bench-lego-batch-")
        .tempdir()?;
    let started = Instant::now();
    let results: Vec<Result<usize>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|p| {
                let secret = secret.clone();
                let work = work.path().join(format!("p{p}"));
                s.spawn(move || -> Result<usize> {
                    let mut ok = 0;
                    for i in (p..n).step_by(4) {
                        let log = work.join(format!("lego{i}.log"));
                        std::fs::create_dir_all(&work)?;
                        let out = std::fs::File::create(&log)?;
                        let status = Command::new("lego")
                            .args([
                                "-s",
                                &l.pebble.directory_url(),
                                "-a",
                                "-m",
                                "bench@corp.test",
                            ])
                            .arg("--path")
                            .arg(&work)
                            .args(["-k", "ec256", "--dns", "rfc2136"])
                            .args(["--dns.resolvers", &PRIMARY.to_string()])
                            .args(["-d", &format!("l{i:04}.acme.corp.test"), "run"])
                            .env("LEGO_CA_CERTIFICATES", l.pebble.tls_root_pem_path())
                            .env("RFC2136_NAMESERVER", PRIMARY.to_string())
                            .env("RFC2136_TSIG_ALGORITHM", "hmac-sha512.")
                            .env("RFC2136_TSIG_KEY", format!("{}.", dns_lab::KEY_NAME))
                            .env("RFC2136_TSIG_SECRET", &secret)
                            .env("RFC2136_SEQUENCE_INTERVAL", "1")
                            .stdout(out.try_clone()?)
                            .stderr(out)
                            .status()
                            .context("running lego")?;
                        if status.success() {
                            ok += 1;
                        }
                    }
                    Ok(ok)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("lego thread panicked")))
            })
            .collect()
    });
    let t = started.elapsed();
    let mut ok = 0;
    for r in results {
        ok += r?;
    }
    Ok((t, ok))
}
