//! `cargo xtask bench store`: the PostgreSQL state store under several nodes.
//!
//! 1. **Store level** (default 10,000 jobs): 1 node, then 3 nodes (3 stores with their own
//!    connection pools, as 3 processes would have) drain one batch through the store calls a
//!    real issuance on a fleet makes — claim, `ordering`, `authorizing`, `validating`, the
//!    sealed key stored, `finalizing`, the lease checked, the sealed key read back, the bundle
//!    stored, `issued`, one token debit, one issuance record — without the CA. Reports jobs claimed
//!    per second, certificates per second, p50/p99 claim latency and round-trips per
//!    certificate (counted by the store, [`PgStore::stats`]).
//! 2. **End to end** (`--e2e N`, default 300; 0 skips): `certfleet batch run --store …`
//!    against an always-valid Pebble, 1 process vs 3 processes (each its own state
//!    directory, one key-encryption key), wall time and database transactions per
//!    certificate (from `pg_stat_database`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use certfleet_batch::gcra::{BucketKey, Limit, TokenRequest};
use certfleet_batch::store::StoredBundle;
use certfleet_batch::{
    ClaimRequest, IssuanceRecord, IssuedCert, JobSpec, JobStatus, JobUpdate, NewBatch, NewJob,
    StateStore,
};
use certfleet_store_postgres::{PgOptions, PgStore};
use certfleet_testenv::postgres::Postgres;
use time::OffsetDateTime;

use crate::bench_args::BenchArgs;
use crate::util::{cargo, ensure_tools, run_cmd, runtime, step, target_dir};

const USAGE: &str = "usage: cargo xtask bench store [--jobs N] [--claim C] [--e2e N] [--debug]";

struct Options {
    jobs: usize,
    claim: usize,
    e2e: usize,
    /// End to end with the debug build (no release build: quicker on a busy machine).
    debug: bool,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        jobs: 10_000,
        claim: 32,
        e2e: 300,
        debug: false,
    };
    let mut p = BenchArgs::new(args, USAGE);
    while let Some(a) = p.next_option() {
        match a {
            "--jobs" => o.jobs = p.number("--jobs")?,
            "--claim" => o.claim = p.number::<usize>("--claim")?.max(1),
            "--e2e" => o.e2e = p.number("--e2e")?,
            "--debug" => o.debug = true,
            other => return Err(p.unknown(other)),
        }
    }
    Ok(o)
}

pub fn run(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    step("packages for the benchmark", || {
        ensure_tools(&[
            ("postgres:initdb", "postgresql"),
            ("pebble", "pebble"),
            ("pebble-challtestsrv", "pebble"),
        ])
    })?;
    let pg = step("private PostgreSQL cluster", Postgres::start)?;
    let rt = runtime()?;
    for (work, what) in [(false, "claims only"), (true, "claim + issuance writes")] {
        for nodes in [1, 3] {
            let db = format!("bench_store_{nodes}_{work}");
            pg.create_database(&db)?;
            let r = rt.block_on(store_level(&pg.url(&db), nodes, o.jobs, o.claim, work))?;
            println!(
                "store, {what}, {nodes} node(s), {} jobs: {:.0} jobs claimed/s, claim latency \
                 p50 {:.2} ms p99 {:.2} ms, {:.2} round-trips per job ({:.1} s)",
                o.jobs, r.claims_per_s, r.p50_ms, r.p99_ms, r.trips_per_cert, r.secs
            );
        }
    }
    if o.e2e > 0 {
        end_to_end(&pg, o.e2e, o.debug)?;
    }
    Ok(())
}

struct StoreResult {
    claims_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    trips_per_cert: f64,
    secs: f64,
}

/// The store calls of one issuance after its claim.
async fn issue(store: &PgStore, c: certfleet_batch::ClaimedJob, i: usize) -> Result<()> {
    let now = OffsetDateTime::now_utc();
    let l = &c.lease;
    store
        .update_job(l, &JobUpdate::to(JobStatus::Ordering).attempt(), now)
        .await?;
    let limit = Limit {
        capacity: 1_000_000,
        period: Duration::from_secs(1),
    };
    let take = [TokenRequest {
        key: BucketKey("new-orders:bench".into()),
        limit: Some(limit),
        cost: 1,
        check_only: false,
    }];
    store.take_tokens(&take, now).await?;
    let order = format!("https://ca.invalid/order/{i}");
    store
        .update_job(
            l,
            &JobUpdate::order_created(&order, vec![order.clone()]),
            now,
        )
        .await?;
    store
        .update_job(l, &JobUpdate::to(JobStatus::Validating), now)
        .await?;
    // A generated key, sealed (the size of a sealed P-256 PEM), stored before `finalizing`.
    let sealed = vec![7u8; 280];
    store.put_job_key(l, &sealed).await?;
    store
        .update_job(l, &JobUpdate::finalizing("file:/k.pem"), now)
        .await?;
    // After the CA's answer: the lease checked, the bundle stored (fenced) with its key.
    let l = &store.renew_lease(l, now, Duration::from_secs(300)).await?;
    let sealed_key = store.job_key(l.job).await?;
    store
        .put_bundle(
            l,
            &StoredBundle {
                job: l.job,
                serial: format!("{i:x}"),
                not_after: now,
                cert_pem: "-----BEGIN CERTIFICATE-----\n".repeat(12),
                chain_pem: "-----BEGIN CERTIFICATE-----\n".repeat(12),
                meta_json: "{}".into(),
                key_ref: "file:/k.pem".into(),
                sealed_key,
                node: l.node.clone(),
                stored_at: now,
            },
        )
        .await?;
    let cert = IssuedCert {
        serial: format!("{i:x}"),
        not_after: now,
        cert_dir: "/x".into(),
        node: None,
    };
    store.update_job(l, &JobUpdate::issued(cert), now).await?;
    let names = c.job.spec.names.clone();
    store
        .record_issuance(&IssuanceRecord {
            name_set: names.join(","),
            names,
            account: "bench".into(),
            serial: format!("{i:x}"),
            issued_at: now,
            not_after: now,
            replaces: None,
        })
        .await?;
    Ok(())
}

async fn store_level(
    url: &str,
    nodes: usize,
    jobs: usize,
    claim: usize,
    work: bool,
) -> Result<StoreResult> {
    let options = PgOptions {
        pool_size: Some(claim.min(16)),
        ..PgOptions::default()
    };
    let mut stores = Vec::new();
    for _ in 0..nodes {
        stores.push(PgStore::open(url, &options).await?);
    }
    let now = OffsetDateTime::now_utc();
    let (batch, _) = stores[0]
        .open_batch(
            &NewBatch {
                name: "bench".into(),
                digest: "d".into(),
            },
            now,
        )
        .await?;
    let new_jobs: Vec<NewJob> = (0..jobs)
        .map(|i| NewJob {
            key: format!("j{i}"),
            spec: JobSpec {
                names: vec![format!("h{i}.bench.test")],
                ..JobSpec::default()
            },
        })
        .collect();
    stores[0].add_jobs(batch.id, &new_jobs, now).await?;
    let before: Vec<u64> = stores.iter().map(|s| s.stats().round_trips).collect();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (n, store) in stores.iter().enumerate() {
        let store = store.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut claimed = 0usize;
            // Bounded: each round claims at least one job or ends the node.
            loop {
                let t = Instant::now();
                let got = store
                    .claim_jobs(&ClaimRequest {
                        batch: batch.id,
                        node: format!("bench-node-{n}"),
                        now: OffsetDateTime::now_utc(),
                        lease_for: Duration::from_secs(300),
                        max_jobs: claim,
                    })
                    .await?;
                latencies.push(t.elapsed());
                if got.is_empty() {
                    return Ok::<_, anyhow::Error>((latencies, claimed));
                }
                claimed += got.len();
                if !work {
                    continue;
                }
                let work = got.into_iter().map(|c| {
                    let i = c.job.id.0 as usize;
                    issue(&store, c, i)
                });
                for r in futures::future::join_all(work).await {
                    r?;
                }
            }
        });
    }
    let mut latencies = Vec::new();
    let mut total = 0;
    while let Some(r) = tasks.join_next().await {
        let (l, c) = r.context("bench node")??;
        latencies.extend(l);
        total += c;
    }
    let secs = started.elapsed().as_secs_f64();
    if total != jobs {
        bail!("{total} jobs claimed, expected {jobs}");
    }
    let trips: u64 = stores
        .iter()
        .zip(before)
        .map(|(s, b)| s.stats().round_trips - b)
        .sum();
    latencies.sort();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i].as_secs_f64() * 1000.0
    };
    Ok(StoreResult {
        claims_per_s: total as f64 / secs,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        trips_per_cert: trips as f64 / total as f64,
        secs,
    })
}

/// 1 vs 3 `certfleet batch run` processes on `n` certificates, always-valid Pebble.
fn end_to_end(pg: &Postgres, n: usize, debug: bool) -> Result<()> {
    let profile = if debug { "debug" } else { "release" };
    step(
        &format!("cargo build ({profile}: certfleet, challtestsrv plugin)"),
        || {
            let mut c = cargo();
            c.arg("build");
            if !debug {
                c.arg("--release");
            }
            run_cmd(c.args(["-p", "certfleet-cli", "-p", "certfleet-plugin-challtestsrv"]))
        },
    )?;
    let bin = Arc::new(target_dir().join(profile).join("certfleet"));
    let rt = runtime()?;
    for nodes in [1usize, 3] {
        let db = format!("bench_e2e_{nodes}");
        pg.create_database(&db)?;
        let url = pg.url(&db);
        let secs = rt.block_on(e2e_run(&bin, &url, n, nodes))?;
        let xacts: f64 = pg
            .psql(
                "postgres",
                &format!("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = '{db}'"),
            )?
            .parse()
            .unwrap_or(0.0);
        println!(
            "end to end, {nodes} node(s), {n} certificates: {secs:.1} s, {:.1} certificates/s, \
             {:.1} database transactions per certificate",
            n as f64 / secs,
            xacts / n as f64
        );
    }
    Ok(())
}

async fn e2e_run(bin: &std::path::Path, url: &str, n: usize, nodes: usize) -> Result<f64> {
    use certfleet_testenv::{Pebble, PebbleOptions};
    let pebble = Pebble::start(PebbleOptions::default().nonce_reject(0).always_valid(true)).await?;
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let global = |state: &std::path::Path| {
        let mut c = std::process::Command::new(bin);
        c.arg("--state-dir")
            .arg(state)
            .args(["--directory", &pebble.directory_url()]);
        c.arg("--ca-root").arg(pebble.tls_root_pem_path()).arg("-q");
        c
    };
    let key = dir.path().join("account.pem");
    run_cmd(
        global(&state)
            .args(["key", "generate", "--alg", "es256", "--out"])
            .arg(&key),
    )?;
    run_cmd(
        global(&state)
            .args(["account", "register", "--agree-tos", "--key"])
            .arg(&key),
    )?;
    // The fleet's key-encryption key (generated keys are stored sealed, as on a fleet).
    let kek = dir.path().join("fleet.kek");
    write_kek(&kek)?;
    let config = dir.path().join("c.toml");
    // dns-01 through the challtestsrv plugin, as the batch tests do (always-valid Pebble
    // checks nothing; the plugin call stays in the path).
    std::fs::write(
        &config,
        format!(
            "[batch]\nrate_limits = \"none\"\nkey_encryption_key_file = \"{}\"\n\
             [dns01]\nplugin = \"challtestsrv\"\nplugin_dirs = [\"{}\"]\n\
             [dns01.propagation]\ncheck = false\n\
             [plugins.challtestsrv]\nurl = \"{}\"\n\
             [network]\npoll_initial_millis = 50\npoll_max_interval_secs = 1\n",
            kek.display(),
            bin.parent().unwrap_or(bin).display(),
            pebble.challtestsrv_url()
        ),
    )?;
    let list = dir.path().join("list.txt");
    let names: Vec<String> = (0..n).map(|i| format!("b{i}.e2e{}.test", i % 10)).collect();
    std::fs::write(&list, names.join("\n") + "\n")?;
    let started = Instant::now();
    let mut children = Vec::new();
    for i in 0..nodes {
        let node_state = dir.path().join(format!("node{i}"));
        run_cmd(
            std::process::Command::new("cp")
                .arg("-a")
                .arg(&state)
                .arg(&node_state),
        )?;
        let mut c = global(&node_state);
        c.arg("--config")
            .arg(&config)
            .args(["batch", "run"])
            .arg(&list);
        c.args(["--store", url, "--concurrency", "32"]);
        children.push(c.spawn().context("starting certfleet")?);
    }
    for mut c in children {
        let status = c.wait()?;
        if !status.success() {
            bail!("a certfleet node failed: {status}");
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

/// A fresh 256-bit key-encryption key, hex, created 0600.
fn write_kek(path: &std::path::Path) -> Result<()> {
    use std::io::{Read as _, Write as _};
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{hex}")?;
    Ok(())
}
