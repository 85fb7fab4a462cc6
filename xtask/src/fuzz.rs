//! `cargo xtask fuzz [--secs N]`: the bounded mutation fuzzers of `tests/fuzz` (problem,
//! directory/order/authorization/JWS, PEM chains and Link headers, the plugin JSON boundary,
//! batch files), N seconds per target (default 30), optimised. `cargo test` runs the same
//! targets for 1 s each.

use anyhow::{Context, Result, bail};

use crate::util::{cargo, run_cmd};

pub fn run(args: &[String]) -> Result<()> {
    let secs: f64 = match args {
        [] => 30.0,
        [flag, n] if flag == "--secs" => n.parse().context("--secs takes a number")?,
        other => bail!("usage: cargo xtask fuzz [--secs N] (got {other:?})"),
    };
    if !(secs > 0.0 && secs <= 86_400.0) {
        bail!("--secs {secs}: expected a number of seconds between 0 and 86400");
    }
    run_cmd(
        cargo()
            .args([
                "test",
                "-p",
                "certfleet-testenv",
                "--test",
                "fuzz",
                "--",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("CERTFLEET_FUZZ_SECS", secs.to_string()),
    )
}
