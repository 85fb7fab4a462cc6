//! `cargo xtask bench keys [--millis M]`: signatures per second of a file key, a SoftHSM2
//! key and a swtpm key at 1, 2 and 4 concurrent signers, through the release `certfleet`
//! binary (`certfleet key bench`, hidden), and the signatures one certificate costs.
//!
//! The SoftHSM P-256 line is the one with a target: 4 signers should reach at least 2.5×
//! the 1-signer rate of the same session pool (four sessions; one signer leaves the second
//! core idle while a signature goes to the blocking pool and back). Absolute numbers on a
//! shared 2-core machine are noise; the ratio is the result.

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use certfleet_testenv::{Pebble, PebbleOptions, SoftHsm, Swtpm};
use serde_json::Value;

use crate::util::{cargo, ensure_tools, output, run_cmd, runtime, step, target_dir};

const USAGE: &str = "usage: cargo xtask bench keys [--millis M]";
const PIN: &str = "1234";
const TARGET_RATIO: f64 = 2.5;

const TOOLS: &[(&str, &str)] = &[
    ("softhsm2-util", "softhsm2"),
    ("swtpm", "swtpm"),
    ("swtpm_ioctl", "swtpm-tools"),
    ("pebble", "pebble"),
    ("pebble-challtestsrv", "pebble"),
];

pub fn run(args: &[String]) -> Result<()> {
    let millis: u64 = match args {
        [] => 2000,
        [flag, m] if flag == "--millis" => m.parse().context("--millis: expected a number")?,
        _ => bail!(USAGE),
    };
    step("packages (softhsm2, swtpm, pebble)", || ensure_tools(TOOLS))?;
    step("cargo build --release -p certfleet-cli", || {
        run_cmd(cargo().args(["build", "--release", "-p", "certfleet-cli"]))
    })?;
    let bin = target_dir().join("release/certfleet");
    let work = target_dir().join("xtask/bench-keys");
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;

    let hsm = SoftHsm::new_in(&work)?;
    hsm.init_token("bench", PIN)?;
    let pin_file = hsm.pin_file("pin", PIN)?;
    let tpm = Swtpm::start()?;
    let hsm_env = [hsm.env()];
    let generate = |extra: &[&str], env: &[(OsString, OsString)]| -> Result<String> {
        let mut cmd = Command::new(&bin);
        cmd.args(["key", "generate", "--alg", "es256"])
            .args(extra)
            .envs(env.iter().map(|(k, v)| (k, v)));
        Ok(output(&mut cmd)?.trim().to_owned())
    };
    let file_out = work.join("file-es256.pem").to_string_lossy().into_owned();
    let tpm_out = work.join("tpm-es256.tpmkey").to_string_lossy().into_owned();
    let module = hsm.module_path().to_string_lossy().into_owned();
    let pin_source = format!("file:{}", pin_file.display());
    let keys = [
        ("file", generate(&["--out", &file_out], &[])?),
        (
            "softhsm",
            generate(
                &[
                    "--backend",
                    "pkcs11",
                    "--module",
                    &module,
                    "--token",
                    "bench",
                    "--label",
                    "bench",
                    "--pin-source",
                    &pin_source,
                ],
                &hsm_env,
            )?,
        ),
        (
            "swtpm",
            generate(
                &["--backend", "tpm", "--tcti", &tpm.tcti(), "--out", &tpm_out],
                &[],
            )?,
        ),
    ];

    let mut rows = Vec::new();
    for (backend, key_ref) in &keys {
        let lines = step(&format!("{backend} es256: 1, 2, 4 signers"), || {
            let mut cmd = Command::new(&bin);
            cmd.args([
                "-q",
                "key",
                "bench",
                key_ref,
                "--signers",
                "1,2,4",
                "--millis",
            ])
            .arg(millis.to_string())
            .envs(hsm_env.iter().map(|(k, v)| (k, v)));
            output(&mut cmd)
        })?;
        let levels: Vec<Value> = lines
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()
            .context("parsing `certfleet key bench` output")?;
        rows.push((*backend, levels));
    }

    println!("\nsignatures per second (es256, {millis} ms per level, release build):");
    println!(
        "  {:<9} {:>9} {:>9} {:>9} {:>7}",
        "backend", "1", "2", "4", "4/1"
    );
    let mut softhsm_ratio = None;
    for (backend, levels) in &rows {
        let rate = |n: u64| {
            levels
                .iter()
                .find(|l| l["signers"].as_u64() == Some(n))
                .and_then(|l| l["per_second"].as_f64())
                .unwrap_or(0.0)
        };
        let ratio = if rate(1) > 0.0 {
            rate(4) / rate(1)
        } else {
            0.0
        };
        if *backend == "softhsm" {
            softhsm_ratio = Some(ratio);
        }
        println!(
            "  {backend:<9} {:>9.0} {:>9.0} {:>9.0} {:>6.2}x",
            rate(1),
            rate(2),
            rate(4),
            ratio
        );
        if let Some(pool) = levels.last().and_then(|l| l.get("pool")) {
            println!("            session pool at 4 signers: {pool}");
        }
    }
    if let Some(ratio) = softhsm_ratio {
        let verdict = if ratio >= TARGET_RATIO {
            "met"
        } else {
            "NOT met"
        };
        println!(
            "SoftHSM P-256, 4 signers vs 1: {ratio:.2}x (target >= {TARGET_RATIO}x: {verdict})"
        );
    }

    let per_cert = step(
        "signatures per issued certificate (SoftHSM keys, Pebble)",
        || {
            runtime()?.block_on(signatures_per_certificate(
                &bin,
                &work,
                &keys[1].1,
                &hsm,
                &pin_source,
            ))
        },
    )?;
    println!("signatures per issued certificate: {per_cert}");
    Ok(())
}

/// Registers the token key as an account, issues one certificate with a second token key,
/// and reads certfleet's own count of account-key JWS signatures (plus the CSR's one).
async fn signatures_per_certificate(
    bin: &Path,
    work: &Path,
    account_key: &str,
    hsm: &SoftHsm,
    pin_source: &str,
) -> Result<String> {
    let pebble = Pebble::start(PebbleOptions::default().work_dir(work.join("pebble"))).await?;
    let state = work.join("state");
    let certfleet = |args: &[&str]| {
        let mut cmd = Command::new(bin);
        cmd.arg("--state-dir")
            .arg(&state)
            .arg("--directory")
            .arg(pebble.directory_url())
            .arg("--ca-root")
            .arg(pebble.tls_root_pem_path())
            .args(args)
            .envs([hsm.env()]);
        cmd
    };
    output(&mut certfleet(&[
        "account",
        "register",
        "--key",
        account_key,
        "--agree-tos",
    ]))?;
    let module = hsm.module_path().to_string_lossy().into_owned();
    let cert_key = output(&mut certfleet(&[
        "key",
        "generate",
        "--backend",
        "pkcs11",
        "--module",
        &module,
        "--token",
        "bench",
        "--label",
        "bench-cert",
        "--pin-source",
        pin_source,
    ]))?
    .trim()
    .to_owned();
    let listen = format!("127.0.0.1:{}", pebble.http01_port());
    let out_dir = work.join("cert").to_string_lossy().into_owned();
    let out = certfleet(&[
        "issue",
        "--name",
        "bench.certfleet.test",
        "--key",
        &cert_key,
        "--http-listen",
        &listen,
        "--out",
        &out_dir,
    ])
    .output()
    .context("running certfleet issue")?;
    let log = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("certfleet issue failed:\n{log}");
    }
    let signatures = log
        .lines()
        .find(|l| l.contains("protocol cost"))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("signatures="))
        })
        .context("certfleet logged no protocol cost")?;
    Ok(format!(
        "{signatures} account-key JWS signatures + 1 CSR signature by the certificate key"
    ))
}
