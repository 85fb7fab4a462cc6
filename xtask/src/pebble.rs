//! `cargo xtask pebble up|down|status`: a Pebble in the background for manual testing.
//!
//! `up` starts Pebble + challtestsrv through the test harness (fresh TLS CA, free loopback
//! ports), detaches them, and records them under `<target>/xtask/pebble/`:
//! `state.json` (ports, paths, pids), `pebble.pid`, `challtestsrv.pid`, and `run/` (config,
//! TLS files, logs). `down` stops exactly the recorded pids, and only while
//! `/proc/<pid>/exe` is still the recorded binary.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use certfleet_testenv::{Pebble, PebbleOptions, PebbleState};

use crate::util::{runtime, target_dir};

fn state_dir() -> PathBuf {
    target_dir().join("xtask").join("pebble")
}

fn state_file() -> PathBuf {
    state_dir().join("state.json")
}

pub fn run(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("up") => up(&args[1..]),
        Some("down") => down(),
        Some("status") => status(),
        Some(other) => bail!("unknown `pebble` subcommand `{other}` (up, down, status)"),
        None => bail!("usage: cargo xtask pebble up [options] | down | status"),
    }
}

fn parse_options(args: &[String]) -> Result<PebbleOptions> {
    let mut options = PebbleOptions::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .with_context(|| format!("{flag} needs a value"))
        };
        let number = |v: String| -> Result<u32> {
            v.parse()
                .with_context(|| format!("{flag}: `{v}` is not a number"))
        };
        match flag.as_str() {
            "--nonce-reject" => options = options.nonce_reject(number(value()?)?),
            "--authz-reuse" => options = options.authz_reuse(number(value()?)?),
            "--alternate-roots" => options = options.alternate_roots(number(value()?)?),
            "--chain-length" => options = options.chain_length(number(value()?)?),
            "--always-valid" => options = options.always_valid(true),
            "--dns" => options = options.dns_server(value()?),
            "--eab" => {
                let v = value()?;
                let Some((kid, key)) = v.split_once(':') else {
                    bail!("--eab takes KID:B64URLKEY, got `{v}`");
                };
                options = options.external_account_binding(kid, key);
            }
            other => bail!("unknown option `{other}` for `pebble up` (see cargo xtask help)"),
        }
    }
    Ok(options)
}

fn read_state() -> Result<Option<PebbleState>> {
    let path = state_file();
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let json =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(Some(PebbleState::from_json(&json).with_context(|| {
        format!("{}: not a pebble state file", path.display())
    })?))
}

fn up(args: &[String]) -> Result<()> {
    let options = parse_options(args)?;
    if let Some(state) = read_state()?
        && state.processes.iter().any(PebbleState::is_running)
    {
        bail!(
            "a Pebble from `cargo xtask pebble up` is still running ({}); \
             run `cargo xtask pebble down` first",
            state.directory_url
        );
    }
    let dir = state_dir();
    let work = dir.join("run");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let state = runtime()?.block_on(async {
        let pebble = Pebble::start(options.work_dir(&work).detached(true)).await?;
        anyhow::Ok(pebble.detach())
    })?;
    fs::write(
        state_file(),
        serde_json::to_vec_pretty(&state.to_json()).context("serializing state")?,
    )
    .with_context(|| format!("writing {}", state_file().display()))?;
    for p in &state.processes {
        let f = dir.join(format!("{}.pid", p.name));
        fs::write(&f, format!("{}\n", p.pid))
            .with_context(|| format!("writing {}", f.display()))?;
    }
    print_state(&state);
    println!("stop it with: cargo xtask pebble down");
    Ok(())
}

fn print_state(state: &PebbleState) {
    println!("directory:      {}", state.directory_url);
    println!(
        "--ca-root:      {}   (trust anchor for Pebble's HTTPS)",
        state.tls_root_pem.display()
    );
    println!("http-01 port:   {}   (127.0.0.1)", state.http01_port);
    println!("tls-alpn-01:    {}", state.tls_alpn01_port);
    println!(
        "management:     {}   (issuing root: {}/roots/0)",
        state.management_url, state.management_url
    );
    println!(
        "challtestsrv:   {}   DNS {}",
        state.challtestsrv_url, state.dns_server
    );
    println!("logs:           {}", state.work_dir.display());
    for p in &state.processes {
        let running = if PebbleState::is_running(p) {
            "running"
        } else {
            "not running"
        };
        println!("pid {:>7}      {} ({running})", p.pid, p.name);
    }
    println!(
        "try: certfleet --directory {} --ca-root {} account register --key KEYREF --agree-tos",
        state.directory_url,
        state.tls_root_pem.display()
    );
}

fn down() -> Result<()> {
    let Some(state) = read_state()? else {
        println!(
            "nothing to stop: no {} (was `cargo xtask pebble up` run with this CARGO_TARGET_DIR?)",
            state_file().display()
        );
        return Ok(());
    };
    for line in state.stop() {
        println!("{line}");
    }
    let still: Vec<_> = state
        .processes
        .iter()
        .filter(|p| PebbleState::is_running(p))
        .map(|p| format!("{} ({})", p.name, p.pid))
        .collect();
    if !still.is_empty() {
        bail!("still running: {}", still.join(", "));
    }
    let dir = state_dir();
    for p in &state.processes {
        let _ = fs::remove_file(dir.join(format!("{}.pid", p.name)));
    }
    fs::remove_file(state_file())
        .with_context(|| format!("removing {}", state_file().display()))?;
    println!("pebble stopped");
    Ok(())
}

fn status() -> Result<()> {
    match read_state()? {
        Some(state) => print_state(&state),
        None => println!("not started (no {})", state_file().display()),
    }
    Ok(())
}
