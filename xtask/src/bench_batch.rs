//! `cargo xtask bench batch`: certfleet issuing a whole batch in one process (`certfleet
//! batch run`, its own concurrency) beside lego and certbot (one process per certificate,
//! parallel workers) through the shared harness, each on a fresh always-valid Pebble, in the
//! same run. A sequential run of a few certificates per client gives the latency of one
//! certificate on its own.

use anyhow::{Context, Result, bail};

use crate::bench::{BENCH_TOOLS, BenchEnv, ratios, shared_bench_dir};
use crate::bench_args::BenchArgs;
use crate::util::{cargo, ensure_tools, run_cmd, step, target_dir, workspace_root};

const USAGE: &str = "usage: cargo xtask bench batch [--n N] [--conc C] [--peers lego,certbot] \
                     [--peer-n M] [--peer-conc P] [--seq S] [--files-in DIR]";

#[derive(Debug)]
struct Options {
    n: u32,
    conc: u32,
    peers: Vec<String>,
    peer_n: Option<u32>,
    peer_conc: u32,
    seq: u32,
    /// Where the clients write their files instead of tmpfs: a directory on a real disk,
    /// where what durability costs (`fsync`) shows.
    files_in: Option<std::path::PathBuf>,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        n: 1000,
        conc: 32,
        peers: vec!["lego".into(), "certbot".into()],
        peer_n: None,
        peer_conc: 32,
        seq: 20,
        files_in: None,
    };
    let mut p = BenchArgs::new(args, USAGE);
    while let Some(a) = p.next_option() {
        match a {
            "--n" => o.n = p.number("--n")?,
            "--conc" => o.conc = p.number("--conc")?,
            "--peer-n" => o.peer_n = Some(p.number("--peer-n")?),
            "--peer-conc" => o.peer_conc = p.number("--peer-conc")?,
            "--seq" => o.seq = p.number("--seq")?,
            "--peers" => o.peers = p.list("--peers")?,
            "--files-in" => o.files_in = Some(p.value("--files-in")?.into()),
            other => return Err(p.unknown(other)),
        }
    }
    if o.n == 0 || o.conc == 0 || o.peer_conc == 0 {
        bail!("--n, --conc and --peer-conc must be at least 1");
    }
    // Pebble 2.4 deadlocks with ~64 orders in flight (shared/docs/spec-notes.md §6).
    if o.conc > 32 || o.peer_conc > 32 {
        bail!("keep at most 32 orders in flight against Pebble 2.4");
    }
    for p in &o.peers {
        if !["lego", "certbot"].contains(&p.as_str()) {
            bail!("--peers: unknown peer `{p}` (expected lego and/or certbot)");
        }
    }
    if let Some(dir) = &o.files_in
        && !dir.is_dir()
    {
        bail!(
            "--files-in {}: not a directory (expected an existing directory on the disk to measure)",
            dir.display()
        );
    }
    Ok(o)
}

pub fn run(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    let shared = shared_bench_dir()?;
    step("packages for the benchmark", || ensure_tools(BENCH_TOOLS))?;
    step("cargo build --release -p certfleet-cli", || {
        run_cmd(cargo().args(["build", "--release", "-p", "certfleet-cli"]))
    })?;
    let bin = target_dir().join("release/certfleet");
    let state = target_dir().join("xtask/bench-batch");
    let run_dir = run_dir_for_files(&state, o.files_in.as_deref())?;
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir)
            .with_context(|| format!("removing {}", run_dir.display()))?;
    }
    std::fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
    let results = state.join("results.tsv");
    let sequential = state.join("sequential.tsv");
    for f in [&results, &sequential] {
        if f.exists() {
            std::fs::remove_file(f).with_context(|| format!("removing {}", f.display()))?;
        }
    }
    let batch_script = workspace_root().join("xtask/bench/peer-certfleet-batch.sh");
    let mut clients = vec![("certfleet-batch", batch_script, o.n, o.conc)];
    for p in &o.peers {
        clients.push((
            p.as_str(),
            shared.join(format!("peer-{p}.sh")),
            o.peer_n.unwrap_or(o.n),
            o.peer_conc,
        ));
    }
    // Throughput: every client on its own fresh Pebble (its new-order slows as it grows).
    let env = BenchEnv::new(&shared, &state, &bin, &results)?.with_run_dir(&run_dir);
    for (name, script, n, conc) in &clients {
        timed_on_fresh_pebble(&env, name, script, *n, *conc)?;
    }
    // Latency of one certificate on its own: S certificates one at a time.
    // certfleet as the peers run: one `certfleet issue` process per certificate, so the
    // harness times each certificate on its own (median latency).
    if o.seq > 0 {
        let env = BenchEnv::new(&shared, &state, &bin, &sequential)?.with_run_dir(&run_dir);
        let single = workspace_root().join("xtask/bench/peer-certfleet.sh");
        timed_on_fresh_pebble(&env, "certfleet", &single, o.seq, 1)?;
        for (name, script, _, _) in clients.iter().skip(1) {
            timed_on_fresh_pebble(&env, name, script, o.seq, 1)?;
        }
    }
    step("summary: throughput", || {
        run_cmd(env.script("summarize.sh").arg(&results))
    })?;
    ratios(&results, "certfleet-batch")?;
    if o.seq > 0 {
        step("summary: sequential", || {
            run_cmd(env.script("summarize.sh").arg(&sequential))
        })?;
    }
    println!(
        "raw results: {} and {}",
        results.display(),
        sequential.display()
    );
    // The clients' certificates on tmpfs take memory until removed; in a directory the
    // user named they are litter.
    if run_dir.starts_with("/dev/shm") || o.files_in.is_some() {
        std::fs::remove_dir_all(&run_dir)
            .with_context(|| format!("removing {}", run_dir.display()))?;
    }
    Ok(())
}

fn timed_on_fresh_pebble(
    env: &BenchEnv,
    name: &str,
    script: &std::path::Path,
    n: u32,
    conc: u32,
) -> Result<()> {
    step(&format!("pebble up (always valid) for {name}"), || {
        run_cmd(env.script("pebble-up.sh").arg("--always-valid"))
    })?;
    let outcome = step(&format!("{name} N={n} CONC={conc}"), || {
        run_cmd(env.command(script).arg(n.to_string()).arg(conc.to_string()))
    });
    let down = run_cmd(&mut env.script("pebble-down.sh"));
    outcome?;
    down
}

/// Where the clients write their certificates: `files_in` (`--files-in`, a disk, to see what
/// `fsync` costs there), else tmpfs when the machine has one. On ext4 without a journal
/// (this machine's root file system) a file created within a minute of mass deletions — the
/// previous run's thousands of certificate files — makes the kernel scan for an inode not
/// recently freed (`find_inode_bit` → `recently_deleted`); profiled, that was ~45 % of
/// certfleet's CPU in back-to-back runs, noise unrelated to any client. Every client writes
/// to the same place, so the comparison stays fair.
fn run_dir_for_files(
    state: &std::path::Path,
    files_in: Option<&std::path::Path>,
) -> Result<std::path::PathBuf> {
    let run = format!("certfleet-bench-batch-{}", std::process::id());
    let shm = std::path::Path::new("/dev/shm");
    Ok(match files_in {
        Some(dir) => std::path::absolute(dir)
            .with_context(|| format!("--files-in {}", dir.display()))?
            .join(run),
        None if shm.is_dir() => shm.join(run),
        None => state.join("run"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn files_in_names_an_existing_directory() {
        let err = parse(&args(&["--files-in", "/nonexistent/certfleet-bench"]))
            .expect_err("a missing directory is refused");
        assert!(
            err.to_string().contains("/nonexistent/certfleet-bench"),
            "{err}"
        );
        let dir = std::env::temp_dir();
        let o = parse(&args(&["--files-in", &dir.display().to_string()])).expect("accepted");
        assert_eq!(o.files_in.as_deref(), Some(dir.as_path()));
    }
}
