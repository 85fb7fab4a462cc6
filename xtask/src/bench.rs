//! `cargo xtask bench`: certfleet beside its peers (lego, certbot) against one local Pebble,
//! in the same run, through the shared harness in `../shared/bench` (its `bench-lib.sh`
//! measures wall time, client CPU, peak RSS and Pebble's CPU, and verifies every
//! certificate). Absolute numbers on a shared 2-core machine are noise; the ratios between
//! clients measured back to back are the result.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::bench_args::BenchArgs;
use crate::util::{cargo, ensure_tools, run_cmd, step, target_dir, workspace_root};

const USAGE: &str = "usage: cargo xtask bench [--n N] [--conc C] [--peers lego,certbot] [--runs R]";

/// What the shared scripts need on PATH.
pub(crate) const BENCH_TOOLS: &[(&str, &str)] = &[
    ("pebble", "pebble"),
    ("openssl", "openssl"),
    ("curl", "curl"),
    ("bc", "bc"),
    ("lego", "lego"),
    ("certbot", "certbot"),
    ("ss", "iproute2"),
];

#[derive(Debug)]
struct Options {
    n: u32,
    conc: u32,
    runs: u32,
    peers: Vec<String>,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        n: 50,
        conc: 1,
        runs: 1,
        peers: vec!["lego".into()],
    };
    let mut p = BenchArgs::new(args, USAGE);
    while let Some(a) = p.next_option() {
        match a {
            "--n" => o.n = p.number("--n")?,
            "--conc" => o.conc = p.number("--conc")?,
            "--runs" => o.runs = p.number("--runs")?,
            "--peers" => o.peers = p.list("--peers")?,
            other => return Err(p.unknown(other)),
        }
    }
    if o.n == 0 || o.conc == 0 || o.runs == 0 {
        bail!("--n, --conc and --runs must be at least 1");
    }
    // Pebble 2.4 deadlocks with ~64 orders in flight (shared/docs/spec-notes.md §6).
    if o.conc > 32 {
        bail!(
            "--conc {}: keep at most 32 orders in flight against Pebble 2.4",
            o.conc
        );
    }
    for p in &o.peers {
        if !["lego", "certbot"].contains(&p.as_str()) {
            bail!("--peers: unknown peer `{p}` (expected lego and/or certbot)");
        }
    }
    Ok(o)
}

pub fn run(args: &[String]) -> Result<()> {
    if args.first().map(String::as_str) == Some("dns-lab") {
        return crate::bench_dns_lab::run(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("dns") && args.iter().any(|a| a == "--lab") {
        return crate::bench_dns_lab::run(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("dns") {
        return crate::bench_dns::run(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("keys") {
        return crate::bench_keys::run(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("store") {
        return crate::bench_store::run(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("batch") {
        return crate::bench_batch::run(&args[1..]);
    }
    let opts = parse(args)?;
    let shared = shared_bench_dir()?;
    step("packages for the benchmark", || ensure_tools(BENCH_TOOLS))?;
    step("cargo build --release -p certfleet-cli", || {
        run_cmd(cargo().args(["build", "--release", "-p", "certfleet-cli"]))
    })?;
    let bin = target_dir().join("release/certfleet");
    let state = target_dir().join("xtask/bench");
    std::fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
    // Per-run client logs from earlier invocations would mix into this one's figures.
    let run_dir = state.join("run");
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir)
            .with_context(|| format!("removing {}", run_dir.display()))?;
    }
    let results = state.join("results.tsv");
    if results.exists() {
        std::fs::remove_file(&results)
            .with_context(|| format!("removing {}", results.display()))?;
    }
    let env = BenchEnv::new(&shared, &state, &bin, &results)?;

    for run in 1..=opts.runs {
        // A fresh Pebble per run: its new-order slows down as its store grows.
        step(
            &format!("run {run}/{}: pebble up (always valid)", opts.runs),
            || run_cmd(env.script("pebble-up.sh").arg("--always-valid")),
        )?;
        let outcome = (|| -> Result<()> {
            let mut clients = vec![(
                "certfleet",
                workspace_root().join("xtask/bench/peer-certfleet.sh"),
            )];
            for p in &opts.peers {
                clients.push((p.as_str(), shared.join(format!("peer-{p}.sh"))));
            }
            for (name, script) in clients {
                step(
                    &format!("run {run}: {name} N={} CONC={}", opts.n, opts.conc),
                    || {
                        run_cmd(
                            env.command(&script)
                                .arg(opts.n.to_string())
                                .arg(opts.conc.to_string()),
                        )
                    },
                )?;
            }
            Ok(())
        })();
        let down = run_cmd(&mut env.script("pebble-down.sh"));
        outcome?;
        down?;
    }
    step("summary (medians over runs)", || {
        run_cmd(env.script("summarize.sh").arg(&results))
    })?;
    ratios(&results, "certfleet")?;
    println!("per-certificate protocol cost of certfleet (from its logs):");
    protocol_cost(&run_dir)?;
    println!("raw results: {}", results.display());
    Ok(())
}

/// Environment shared by every script of one benchmark: free loopback ports picked now,
/// state under the target directory, the certfleet binary.
pub(crate) struct BenchEnv {
    shared: PathBuf,
    vars: Vec<(String, String)>,
}

impl BenchEnv {
    pub(crate) fn new(shared: &Path, state: &Path, bin: &Path, results: &Path) -> Result<BenchEnv> {
        let mut vars = vec![
            ("BENCH_DIR".to_owned(), shared.display().to_string()),
            ("BENCH_STATE".to_owned(), state.display().to_string()),
            ("CERTFLEET_BIN".to_owned(), bin.display().to_string()),
            ("RESULTS_TSV".to_owned(), results.display().to_string()),
            (
                "IDLE_WAIT".to_owned(),
                std::env::var("IDLE_WAIT").unwrap_or_else(|_| "120".into()),
            ),
        ];
        for name in [
            "PEBBLE_PORT",
            "PEBBLE_MGMT_PORT",
            "CHALL_MGMT_PORT",
            "CHALL_DNS_PORT",
            "CHALL_HTTP_PORT",
            "CHALL_TLS_PORT",
        ] {
            vars.push((name.to_owned(), free_port()?.to_string()));
        }
        Ok(BenchEnv {
            shared: shared.to_owned(),
            vars,
        })
    }

    /// Client working directories, Pebble's logs and pids go under `dir` (`RUN_DIR`).
    pub(crate) fn with_run_dir(mut self, dir: &Path) -> BenchEnv {
        self.vars
            .push(("RUN_DIR".to_owned(), dir.display().to_string()));
        self
    }

    pub(crate) fn command(&self, script: &Path) -> Command {
        let mut c = Command::new("bash");
        c.arg(script).envs(self.vars.iter().map(|(k, v)| (k, v)));
        c
    }

    pub(crate) fn script(&self, name: &str) -> Command {
        self.command(&self.shared.join(name))
    }
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("picking a free loopback port")?;
    Ok(l.local_addr()?.port())
}

/// `../shared/bench` beside the clone, or `$CERTFLEET_SHARED_BENCH`.
pub(crate) fn shared_bench_dir() -> Result<PathBuf> {
    let dir = std::env::var_os("CERTFLEET_SHARED_BENCH")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/bench"));
    if !dir.join("bench-lib.sh").exists() {
        bail!(
            "the shared benchmark harness is not at {} (expected bench-lib.sh there); set CERTFLEET_SHARED_BENCH",
            dir.display()
        );
    }
    Ok(dir)
}

/// certfleet against each peer: how many times the peer's cost certfleet's is.
pub(crate) fn ratios(results: &Path, base: &str) -> Result<()> {
    let text = std::fs::read_to_string(results)
        .with_context(|| format!("reading {}", results.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().context("empty results")?.split('\t').collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (Some(client), Some(cpu), Some(rss), Some(wall), Some(lat)) = (
        col("client"),
        col("client_cpu_s_per_cert"),
        col("peak_rss_kib"),
        col("wall_s"),
        col("lat_med_s"),
    ) else {
        bail!("unexpected results header in {}", results.display());
    };
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split('\t').collect()).collect();
    let median = |who: &str, c: usize| -> Option<f64> {
        let mut v: Vec<f64> = rows
            .iter()
            .filter(|r| r.get(client) == Some(&who))
            .filter_map(|r| r.get(c)?.parse().ok())
            .collect();
        v.sort_by(f64::total_cmp);
        (!v.is_empty()).then(|| v[v.len() / 2])
    };
    println!("ratios (peer / {base}; > 1 means {base} uses less):");
    let peers: std::collections::BTreeSet<&str> = rows
        .iter()
        .filter_map(|r| r.get(client).copied())
        .filter(|c| *c != base)
        .collect();
    for peer in peers {
        let ratio = |c: usize| match (median(peer, c), median(base, c)) {
            (Some(p), Some(f)) if f > 0.0 => format!("{:.2}x", p / f),
            _ => "n/a".to_owned(),
        };
        println!(
            "  {peer:<8} client CPU/cert {}   peak RSS {}   wall {}   latency/cert {}",
            ratio(cpu),
            ratio(rss),
            ratio(wall),
            ratio(lat)
        );
    }
    Ok(())
}

/// Averages the "protocol cost" lines certfleet logged for each certificate.
fn protocol_cost(run_dir: &Path) -> Result<()> {
    let output = Command::new("bash")
        .arg("-c")
        .arg(r#"grep -rhoE 'http_requests=[0-9]+ signatures=[0-9]+ new_nonce=[0-9]+ bad_nonce_retries=[0-9]+' "$1"/certfleet-*/w*/client.log 2>/dev/null | sort | uniq -c"#)
        .arg("_")
        .arg(run_dir)
        .output()
        .context("reading certfleet's client logs")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if text.trim().is_empty() {
        println!(
            "  (no protocol-cost lines found under {})",
            run_dir.display()
        );
    } else {
        for line in text.lines() {
            println!("  {}", line.trim());
        }
    }
    Ok(())
}
