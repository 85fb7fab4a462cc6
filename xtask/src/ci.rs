//! `cargo xtask ci`: what CI runs, in order, stopping at the first failure.

use std::time::Instant;

use anyhow::{Result, bail};

use crate::util::{
    cargo, ensure_a2c, ensure_moto, ensure_packages, fmt_duration, run_cmd, step, target_dir,
};

/// The feature that compiles the e2e tests' hooks into the debug binary.
const TEST_HOOKS: &str = "certfleet-cli/test-hooks";

pub fn run(args: &[String]) -> Result<()> {
    if let Some(a) = args.first() {
        bail!("`cargo xtask ci` takes no arguments (got `{a}`)");
    }
    let started = Instant::now();
    println!("target directory: {}", target_dir().display());
    step(
        "Debian packages (Pebble, BIND, PowerDNS, PostgreSQL, SoftHSM, swtpm, …)",
        ensure_packages,
    )?;
    step("moto (AWS API emulator) in a venv", ensure_moto)?;
    step("acme2certifier (second ACME server) in a venv", ensure_a2c)?;
    step("tidy: the architecture's invariants", || {
        crate::tidy::run(&[])
    })?;
    step("cargo fmt --all --check", || {
        run_cmd(cargo().args(["fmt", "--all", "--check"]))
    })?;
    step(
        "cargo clippy --workspace --all-targets --features certfleet-cli/test-hooks -- -D warnings",
        || {
            run_cmd(cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--features",
                TEST_HOOKS,
                "--",
                "-D",
                "warnings",
            ]))
        },
    )?;
    step(
        "cargo doc --workspace --no-deps (RUSTDOCFLAGS=-Dwarnings)",
        || {
            run_cmd(
                cargo()
                    .args(["doc", "--workspace", "--no-deps"])
                    .env("RUSTDOCFLAGS", "-Dwarnings"),
            )
        },
    )?;
    step(
        "cargo xtask advisories check (RustSec, offline)",
        crate::advisories::check,
    )?;
    // The e2e tests run the debug binary built here: with the test hooks (a release build,
    // `cargo xtask dist`, has none).
    step(
        "cargo build --workspace --features certfleet-cli/test-hooks",
        || run_cmd(cargo().args(["build", "--workspace", "--features", TEST_HOOKS])),
    )?;
    step(
        "cargo test --workspace --features certfleet-cli/test-hooks (CI=1)",
        || {
            run_cmd(
                cargo()
                    .args(["test", "--workspace", "--features", TEST_HOOKS])
                    .env("CI", "1"),
            )
        },
    )?;
    println!(
        "ci: all steps passed in {}",
        fmt_duration(started.elapsed())
    );
    Ok(())
}
