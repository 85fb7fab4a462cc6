//! `cargo xtask bench dns`: presenting and verifying many TXT records in one zone on a real
//! BIND — certfleet's `rfc2136` plugin (release build) and propagation checker, beside lego's
//! `rfc2136` provider (the one `../shared/bench/peer-lego.sh CHALLENGE=rfc2136` uses, with the
//! same `RFC2136_*` settings `bind-up.sh` writes).
//!
//! certfleet: the plugin presents N records (one UPDATE per zone, split only past 64 KiB),
//! the checker waits until the zone's authoritative server serves all of them, then the
//! plugin removes them. lego has no "present only" mode, so it runs one order for M names
//! against a Pebble that accepts every challenge (`PEBBLE_VA_ALWAYS_VALID`): its time is
//! present + propagation wait + the (cheap) ACME exchange + cleanup, one name after the other
//! (its rfc2136 provider is sequential; the sequence gap is set to 0 instead of lego's 60 s
//! default, and the polling interval to 1 s as in bind-up.sh). Message counts come from
//! BIND's statistics channel (opcode UPDATE and QUERY), so both clients are counted alike.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use certfleet_dns01::{Dns01Solver, PropagationCheck, TxtRecord};
use certfleet_dns01_host::{
    AuthoritativeCheck, PluginLibrary, PluginSolver, PropagationConfig, library_file_name,
};
use certfleet_testenv::{Bind, BindOptions, BindStats, BindZone, Pebble, PebbleOptions};

use crate::util::{cargo, ensure_tools, fmt_duration, run_cmd, runtime, step, target_dir};

const USAGE: &str = "usage: cargo xtask bench dns [--records N] [--lego-records M] [--no-lego]";
const ZONE: &str = "bench.test";
const KEY: &str = "acme-bench";

const TOOLS: &[(&str, &str)] = &[
    ("named", "bind9"),
    ("tsig-keygen", "bind9"),
    ("named-checkconf", "bind9-utils"),
    ("dig", "bind9-dnsutils"),
    ("pebble", "pebble"),
    ("lego", "lego"),
];

#[derive(Debug)]
struct Options {
    records: usize,
    lego_records: usize,
    lego: bool,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        records: 1000,
        lego_records: 50,
        lego: true,
    };
    let mut p = crate::bench_args::BenchArgs::new(args, USAGE);
    while let Some(a) = p.next_option() {
        match a {
            "--records" => o.records = p.number(a)?,
            "--lego-records" => o.lego_records = p.number(a)?,
            "--no-lego" => o.lego = false,
            other => return Err(p.unknown(other)),
        }
    }
    p.at_least_one("--records", o.records)?;
    p.at_least_one("--lego-records", o.lego_records)?;
    Ok(o)
}

/// One client's figures.
#[derive(Debug)]
struct Figures {
    client: String,
    records: usize,
    present: Option<Duration>,
    verify: Option<Duration>,
    total: Duration,
    updates: u64,
    queries: u64,
}

pub fn run(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    let tools: Vec<(&str, &str)> = TOOLS
        .iter()
        .copied()
        .filter(|(b, _)| o.lego || !["pebble", "lego"].contains(b))
        .collect();
    step("packages for the DNS benchmark", || ensure_tools(&tools))?;
    step("cargo build --release -p certfleet-plugin-rfc2136", || {
        run_cmd(cargo().args(["build", "--release", "-p", "certfleet-plugin-rfc2136"]))
    })?;
    let plugin = target_dir()
        .join("release")
        .join(library_file_name("rfc2136"));
    let rt = runtime()?;
    let mut results = vec![step(
        &format!(
            "certfleet: present + verify + clean up {} records",
            o.records
        ),
        || rt.block_on(certfleet(&plugin, o.records)),
    )?];
    if o.lego {
        results.push(step(
            &format!("lego: one order for {} names (rfc2136)", o.lego_records),
            || rt.block_on(lego(o.lego_records)),
        )?);
    }
    print_table(&results);
    Ok(())
}

async fn start_bind() -> Result<Bind> {
    Bind::start(BindOptions {
        zones: vec![BindZone::new(ZONE)],
        keys: vec![(KEY.to_owned(), "hmac-sha256".to_owned())],
        ..BindOptions::default()
    })
    .await
    .context("starting BIND")
}

fn delta(before: BindStats, after: BindStats) -> (u64, u64) {
    (
        after.updates - before.updates,
        after.queries - before.queries,
    )
}

async fn certfleet(plugin: &Path, n: usize) -> Result<Figures> {
    let bind = start_bind().await?;
    let config = serde_json::json!({
        "server": bind.primary().to_string(),
        "key_file": bind.key_file(KEY)?,
    });
    let library = PluginLibrary::load(plugin)?;
    let instance = tokio::task::spawn_blocking(move || library.instantiate(&config)).await??;
    let solver = PluginSolver::new("rfc2136", instance);
    let check = AuthoritativeCheck::new(PropagationConfig {
        timeout: Duration::from_secs(120),
        interval: Duration::from_millis(200),
        discovery: vec![bind.primary()],
        nameserver_addresses: bind
            .nameserver_addresses()
            .into_iter()
            .map(|(host, addr)| (host, vec![addr]))
            .collect(),
        ..PropagationConfig::default()
    })?;
    let records: Vec<TxtRecord> = (0..n)
        .map(|i| TxtRecord::for_domain(&format!("h{i:05}.{ZONE}"), format!("{i:043}")))
        .collect();
    let before = bind.stats(bind.primary()).await?;
    let started = Instant::now();
    solver.present(&records).await?;
    let present = started.elapsed();
    check.wait_until_visible(&records).await?;
    let verify = started.elapsed() - present;
    solver.cleanup(&records).await?;
    let total = started.elapsed();
    let (updates, queries) = delta(before, bind.stats(bind.primary()).await?);
    let left = bind.txt(bind.primary(), &records[0].fqdn)?;
    if !left.is_empty() {
        bail!("{} still has TXT {left:?} after cleanup", records[0].fqdn);
    }
    let metrics = solver.metrics().await?;
    println!(
        "    plugin counters: {:?}; checker: {} queries in {} rounds",
        metrics,
        check.queries(),
        check.rounds()
    );
    Ok(Figures {
        client: "certfleet".to_owned(),
        records: n,
        present: Some(present),
        verify: Some(verify),
        total,
        updates,
        queries,
    })
}

async fn lego(n: usize) -> Result<Figures> {
    let bind = start_bind().await?;
    let pebble = Pebble::start(
        PebbleOptions::default()
            .always_valid(true)
            .dns_server(bind.primary().to_string()),
    )
    .await
    .context("starting Pebble")?;
    let work = tempfile::Builder::new()
        .prefix("certfleet-bench-lego-")
        .tempdir()?;
    let resolver = bind.primary().to_string();
    let mut cmd = Command::new("lego");
    cmd.args([
        "-s",
        &pebble.directory_url(),
        "-a",
        "-m",
        "bench@bench.test",
    ])
    .arg("--path")
    .arg(work.path())
    .args([
        "-k",
        "ec256",
        "--dns",
        "rfc2136",
        "--dns.resolvers",
        &resolver,
    ])
    .arg("--dns.disable-cp");
    for i in 0..n {
        cmd.args(["-d", &format!("l{i:05}.{ZONE}")]);
    }
    cmd.arg("run")
        .env("LEGO_CA_CERTIFICATES", pebble.tls_root_pem_path())
        .env("RFC2136_NAMESERVER", &resolver)
        .env("RFC2136_TSIG_ALGORITHM", "hmac-sha256.")
        .env("RFC2136_TSIG_KEY", format!("{KEY}."))
        .env("RFC2136_TSIG_SECRET", bind.key_secret(KEY)?)
        .env("RFC2136_PROPAGATION_TIMEOUT", "60")
        .env("RFC2136_POLLING_INTERVAL", "1")
        .env("RFC2136_SEQUENCE_INTERVAL", "0")
        .env("RFC2136_TTL", "60");
    let log = work.path().join("lego.log");
    let out = std::fs::File::create(&log)?;
    cmd.stdout(out.try_clone()?).stderr(out);
    let before = bind.stats(bind.primary()).await?;
    let started = Instant::now();
    let status = cmd.status().context("running lego")?;
    let total = started.elapsed();
    if !status.success() {
        bail!(
            "lego failed ({status}):\n{}",
            certfleet_testenv::tail_file(&log, 20)
        );
    }
    let (updates, queries) = delta(before, bind.stats(bind.primary()).await?);
    Ok(Figures {
        client: "lego".to_owned(),
        records: n,
        present: None,
        verify: None,
        total,
        updates,
        queries,
    })
}

fn print_table(rows: &[Figures]) {
    let ms = |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{}", d.as_millis()));
    println!(
        "\n{:<10} {:>7} {:>10} {:>10} {:>9} {:>11} {:>8} {:>12} {:>8} {:>12}",
        "client",
        "records",
        "present ms",
        "verify ms",
        "total",
        "ms/record",
        "UPDATEs",
        "UPDATE/rec",
        "queries",
        "queries/rec"
    );
    for r in rows {
        let per = r.records as f64;
        println!(
            "{:<10} {:>7} {:>10} {:>10} {:>9} {:>11.2} {:>8} {:>12.3} {:>8} {:>12.3}",
            r.client,
            r.records,
            ms(r.present),
            ms(r.verify),
            fmt_duration(r.total),
            r.total.as_secs_f64() * 1000.0 / per,
            r.updates,
            r.updates as f64 / per,
            r.queries,
            r.queries as f64 / per
        );
    }
    println!(
        "(total includes cleanup; lego's total also includes its ACME order against an always-valid Pebble. \
         UPDATE and QUERY messages are BIND's own counts on the primary.)"
    );
}
