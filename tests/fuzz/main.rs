//! Bounded mutation fuzzing of every parser that reads outside input (runs on stable Rust:
//! cargo-fuzz needs nightly). Each target starts from real seeds (Pebble's and the RFCs'
//! documents, PEM chains, batch files), mutates them (bit flips, byte and block edits,
//! splices, JSON-aware value swaps) with a seeded xorshift generator, and checks that the
//! parser returns instead of panicking, and the target's property holds (e.g. a parsed
//! problem never displays a control character).
//!
//! Time per target: `CERTFLEET_FUZZ_SECS` (default 1 s, so `cargo test` stays quick);
//! `cargo xtask fuzz [--secs N]` runs longer. The seed of a failing run is printed;
//! `CERTFLEET_FUZZ_SEED` replays it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

const ACME_TESTDATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../crates/certfleet-acme/testdata"
);

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING: &[&[u8]] = &[
    b"\x1b[2J",
    b"\r\nerror: ",
    b"null",
    b"true",
    b"-1",
    b"18446744073709551616",
    b"1e999",
    b"\"\"",
    b"[]",
    b"{}",
    b"\\u0000",
    b"\xff\xfe",
    b"-----BEGIN CERTIFICATE-----",
    b"-----END CERTIFICATE-----",
    b"\"urn:ietf:params:acme:error:malformed\"",
    b"*.",
    b"..",
    b"[[cert]]",
    b"names = [",
    "\u{202e}".as_bytes(),
];

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], input: &mut Vec<u8>) {
    for _ in 0..=rng.below(4) {
        let len = input.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = rng.next() as u8;
            }
            2 if len > 0 => {
                let a = rng.below(len);
                let b = (a + rng.below(16).max(1)).min(len);
                input.drain(a..b);
            }
            3 => {
                let at = rng.below(len + 1);
                let piece = INTERESTING[rng.below(INTERESTING.len())];
                input.splice(at..at, piece.iter().copied());
            }
            4 if len > 0 => {
                // Duplicate a block (nesting, repeated keys).
                let a = rng.below(len);
                let b = (a + rng.below(64).max(1)).min(len);
                let block = input[a..b].to_vec();
                let at = rng.below(input.len() + 1);
                input.splice(at..at, block);
            }
            5 => {
                // Splice with another seed.
                let other = &seeds[rng.below(seeds.len())];
                if !other.is_empty() {
                    let cut = rng.below(len + 1);
                    let from = rng.below(other.len());
                    input.truncate(cut);
                    input.extend_from_slice(&other[from..]);
                }
            }
            _ => {
                // JSON-aware: replace a quoted string value.
                if let Some(q) = input.iter().position(|&c| c == b':') {
                    let piece = INTERESTING[rng.below(INTERESTING.len())];
                    let end = (q + 1 + rng.below(24)).min(input.len());
                    input.splice(q + 1..end, piece.iter().copied());
                }
            }
        }
    }
}

fn budget() -> Duration {
    let secs: f64 = std::env::var("CERTFLEET_FUZZ_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    Duration::from_secs_f64(secs)
}

/// Runs `check` on mutations of `seeds` for the time budget; panics name the input.
fn fuzz(name: &str, seeds: Vec<Vec<u8>>, check: impl Fn(&[u8])) {
    assert!(!seeds.is_empty(), "{name}: no seeds");
    let seed = std::env::var("CERTFLEET_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut runs = 0u64;
    // Seeds first, unmutated.
    for s in &seeds {
        check(s);
    }
    while started.elapsed() < budget() {
        let mut input = seeds[rng.below(seeds.len())].clone();
        mutate(&mut rng, &seeds, &mut input);
        input.truncate(1 << 16);
        let outcome = catch_unwind(AssertUnwindSafe(|| check(&input)));
        if outcome.is_err() {
            panic!(
                "{name}: panicked on input {:?} (CERTFLEET_FUZZ_SEED={seed})",
                String::from_utf8_lossy(&input)
            );
        }
        runs += 1;
    }
    eprintln!(
        "{name}: {runs} inputs in {:?}, seed {seed}",
        started.elapsed()
    );
    assert!(runs > 0, "{name}: no input ran");
}

fn files(dir: &str, ext: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for d in [
        dir.to_owned(),
        format!("{dir}/pebble-2.4.0"),
        format!("{dir}/chains"),
    ] {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == ext) {
                out.push(std::fs::read(e.path()).expect("seed"));
            }
        }
    }
    out
}

#[test]
fn fuzz_problem_documents() {
    let seeds: Vec<Vec<u8>> = files(ACME_TESTDATA, "json")
        .into_iter()
        .filter(|s| String::from_utf8_lossy(s).contains("\"type\""))
        .collect();
    fuzz("problem", seeds, |input| {
        if let Ok(p) = certfleet_acme::Problem::from_json(input) {
            let shown = p.to_string();
            assert!(
                !shown.chars().any(char::is_control),
                "control char in {shown:?}"
            );
        }
    });
}

#[test]
fn fuzz_directory_order_authorization_and_jws() {
    fuzz("acme objects", files(ACME_TESTDATA, "json"), |input| {
        let _ = certfleet_acme::Directory::from_json(input);
        let _ = serde_json::from_slice::<certfleet_acme::OrderState>(input);
        let _ = serde_json::from_slice::<certfleet_acme::AuthorizationState>(input);
        if let Ok(jws) = serde_json::from_slice::<certfleet_acme::FlattenedJws>(input) {
            let _ = jws.protected_header();
        }
    });
}

#[test]
fn fuzz_pem_chains_and_link_headers() {
    let mut seeds = files(ACME_TESTDATA, "pem");
    seeds.push(b"<https://ca.test/cert/1/alt>;rel=\"alternate\", </up>; rel=up".to_vec());
    fuzz("pem+link", seeds, |input| {
        let text = String::from_utf8_lossy(input);
        if let Ok(chain) = certfleet_acme::CertificateChain::from_pem(&text) {
            assert!(!chain.certs_der.is_empty());
            let _ = chain.top_issuer_common_name();
        }
        let _ = certfleet_acme::parse_link_value(&text);
    });
}

#[test]
fn fuzz_plugin_json_boundary() {
    let seeds = vec![
        br#"{"records":[{"fqdn":"_acme-challenge.a.example.","value":"abc","zone":null}]}"#
            .to_vec(),
        br#"{"kind":"auth","message":"denied","records":[]}"#.to_vec(),
        br#"{"checks":[{"name":"api","ok":true,"detail":"fine"}]}"#.to_vec(),
        br#"{"metrics":{"calls":3}}"#.to_vec(),
    ];
    fuzz("plugin wire", seeds, |input| {
        use certfleet_plugin_abi as wire;
        let _ = serde_json::from_slice::<wire::RecordsInput>(input);
        let _ = serde_json::from_slice::<wire::ErrorBody>(input);
        let _ = serde_json::from_slice::<wire::CheckReport>(input);
        let _ = serde_json::from_slice::<wire::MetricsReport>(input);
    });
}

#[test]
fn fuzz_batch_files() {
    let seeds = vec![
        b"[defaults]\nchallenge = \"dns-01\"\ndns_plugin = \"rfc2136\"\n\n[[cert]]\nnames = [\"a.example.com\", \"www.a.example.com\"]\n\n[[cert]]\nnames = [\"*.b.example.net\"]\nkey = \"file:/k.pem\"\n".to_vec(),
        b"a.example.com www.a.example.com\n# comment\nb.example.com, c.example.com\n".to_vec(),
    ];
    fuzz("batch file", seeds, |input| {
        use certfleet_batch::batch_file::{BatchFile, Format, ParseOptions};
        let text = String::from_utf8_lossy(input);
        let options = ParseOptions::default();
        for format in [Format::Toml, Format::List] {
            if let Ok(b) = BatchFile::parse(&text, format, "fuzz", &options) {
                assert!(b.certs.iter().all(|c| !c.names.is_empty()));
            }
        }
    });
}
