//! Developer tasks, run as `cargo xtask <task>`:
//!
//! ```text
//! cargo xtask advisories [check]     Cargo.lock against the RustSec data in xtask/advisories (offline)
//! cargo xtask advisories refresh [--from DIR]  rewrite that data from an advisory-db copy
//! cargo xtask bench [--n N --conc C]  certfleet vs lego/certbot against a local Pebble
//! cargo xtask bench dns [--records N]  1,000 TXT records on BIND: certfleet's rfc2136 vs lego
//! cargo xtask bench dns --lab [...]   wildcard in the namespace DNS lab vs lego; 1,000-cert dns-01 batch vs lego's
//! cargo xtask bench batch [--n N]     1,000 certificates in one certfleet process vs lego/certbot
//! cargo xtask bench keys [--millis M]  signatures/s of file, SoftHSM and swtpm keys at 1/2/4 signers
//! cargo xtask ci                      fmt, clippy, build, tests (CI=1: end-to-end tests never skip)
//! cargo xtask fuzz [--secs N]        bounded mutation fuzzing of every outside-input parser
//! cargo xtask demo [--dir D]          Pebble + certfleet: register, issue, openssl verify
//! cargo xtask pebble up [options]     start Pebble + challtestsrv in the background
//! cargo xtask pebble down             stop exactly those processes
//! cargo xtask pebble status           show what runs and where
//! ```

mod advisories;
mod bench;
mod bench_args;
mod bench_batch;
mod bench_dns;
mod bench_dns_lab;
mod bench_keys;
mod bench_store;
mod ci;
mod demo;
mod dist;
mod fuzz;
mod pebble;
mod tidy;
mod util;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  advisories [check]          Cargo.lock against the RustSec advisory data kept in
                              xtask/advisories/db.toml (offline); reasoned exceptions in
                              xtask/advisories/ignore.toml
  advisories refresh [--from DIR]
                              rewrite db.toml from an advisory-db git checkout (DIR), or clone
                              github.com/rustsec/advisory-db when online
  bench [--n N] [--conc C] [--peers lego,certbot] [--runs R]
                              certfleet beside lego/certbot against one local Pebble, through
                              ../shared/bench (defaults: 50 certificates, 1 at a time, lego)
  bench dns [--records N] [--lego-records M] [--no-lego]
  bench dns --lab [--runs N] [--batch N] [--lego-batch N] [--no-lego]   (also: bench dns-lab)
                              present and verify N (1000) TXT records in one zone on a private
                              BIND with the rfc2136 plugin, beside lego's rfc2136 provider doing
                              M (50) names in one order; UPDATE messages and DNS queries per record
  bench batch [--n N] [--conc C] [--peers lego,certbot] [--peer-n M] [--peer-conc P] [--seq S]
                              N (1000) certificates from ONE `certfleet batch run` process with C
                              (32) orders in flight beside the peers (M certificates, P parallel
                              processes) on a fresh always-valid Pebble each, plus a sequential
                              run of S (20) certificates per client for the median latency
  bench store [--jobs N] [--claim C] [--e2e N]
                              PostgreSQL store: claims/s, p99 claim latency, round-trips per
                              certificate, 1 vs 3 nodes (store level and end to end)
  bench keys [--millis M]     signatures per second of a file, a SoftHSM2 and a swtpm P-256 key
                              at 1, 2 and 4 concurrent signers (release build, M ms per level,
                              default 2000), the SoftHSM 4-vs-1 ratio, signatures per certificate
  ci                          install missing Debian packages (as root), then tidy, cargo fmt
                              --check, clippy -D warnings, build, test (with CI=1)
  dist [--dev] [--no-build] [--from DIR] [--out DIR] [--no-deb]
                              install artifacts in <target>/dist: a tarball to unpack at / and
                              a .deb (dpkg-deb): certfleet, the real DNS plugins in
                              /usr/lib/certfleet/plugins, certfleet-renew.service + .timer
  tidy                        the architecture's invariants: dependency arrows (cargo metadata),
                              no environment, printing, sleeping or concrete backends in
                              libraries but where allowed (xtask/src/tidy.rs)
  fuzz [--secs N]             mutation-fuzz the parsers of outside input (ACME JSON, JWS, PEM,
                              Link headers, plugin JSON, batch files), N (30) seconds each
  demo [--dir DIR]            start BIND and Pebble, register an account, issue a certificate
                              for demo.certfleet.test + *.demo.certfleet.test by dns-01
                              through the rfc2136 plugin (TSIG), verify it with openssl, then
                              a batch of 200 certificates (progress bar, JSON report)
                              (DIR defaults to <target>/demo)
  pebble up [OPTIONS]         start Pebble + pebble-challtestsrv on free loopback ports in the
                              background; state under <target>/xtask/pebble/
      --nonce-reject PCT      PEBBLE_WFE_NONCEREJECT (default 0; Pebble's own default is 5)
      --authz-reuse PCT       PEBBLE_AUTHZREUSE (default 0)
      --alternate-roots N     PEBBLE_ALTERNATE_ROOTS
      --chain-length N        PEBBLE_CHAIN_LENGTH
      --always-valid          PEBBLE_VA_ALWAYS_VALID=1
      --eab KID:B64URLKEY     require external account binding with this MAC key (repeatable)
      --dns HOST:PORT         DNS server for Pebble (default: challtestsrv's)
  pebble down                 stop the processes `pebble up` started
  pebble status               print the state of `pebble up`

<target> is $CARGO_TARGET_DIR, else target/ in the workspace.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("advisories") => advisories::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("ci") => ci::run(&args[1..]),
        Some("demo") => demo::run(&args[1..]),
        Some("fuzz") => fuzz::run(&args[1..]),
        Some("dist") => dist::run(&args[1..]),
        Some("pebble") => pebble::run(&args[1..]),
        Some("tidy") => tidy::run(&args[1..]),
        Some("help" | "-h" | "--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("error: unknown task `{other}`\n\n{USAGE}");
            return ExitCode::from(2);
        }
        None => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
