//! Files are written atomically: a process killed at any moment leaves either no file or a
//! complete one.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use certfleet_testenv::{certfleet_command, require_tool};

/// At most this many kill rounds …
const ROUNDS: u32 = 10;
/// … started within this much time.
const BUDGET: Duration = Duration::from_secs(40);
/// Longest a single generation may take before the test gives up on it.
const GENERATE_TIMEOUT: Duration = Duration::from_secs(120);

/// xorshift64*, seeded from the clock: a different kill schedule every run.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15);
        Rng(nanos ^ (u64::from(std::process::id()) << 32) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `[0, max)`.
    fn below(&mut self, max: Duration) -> Duration {
        let nanos = max.as_nanos().max(1) as u64;
        Duration::from_nanos(self.next() % nanos)
    }
}

fn generate(out: &Path) -> Command {
    let mut cmd = certfleet_command();
    cmd.args(["key", "generate", "--alg", "rs4096", "--out"])
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// `Ok` if `path` holds a complete private key openssl can read.
fn check_complete_key(path: &Path) -> Result<(), String> {
    let out = Command::new("openssl")
        .args(["pkey", "-noout", "-in"])
        .arg(path)
        .output()
        .map_err(|e| format!("cannot run openssl: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        Err(format!(
            "{} ({len} bytes) is not a readable key: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[test]
fn key_generate_killed_at_random_moments_leaves_no_file_or_a_complete_key() {
    if !require_tool("openssl", "openssl") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");

    // Calibrate: how long one rs4096 generation takes here.
    let first = tmp.path().join("calibration.pem");
    let started = Instant::now();
    let status = generate(&first).status().expect("run certfleet");
    let full = started.elapsed();
    assert!(
        status.success(),
        "key generate --alg rs4096 failed: {status}"
    );
    check_complete_key(&first).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        std::fs::metadata(&first)
            .expect("stat")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert!(full <= GENERATE_TIMEOUT, "one generation took {full:?}");

    let mut rng = Rng::new();
    // RSA generation time varies several-fold with the primes drawn, so one calibration
    // run can be far longer than the next: a round that finished before its kill halves
    // the window, a killed one widens it again (never past the calibration).
    let widest = full + full / 10;
    let mut window = widest;
    let (mut killed_running, mut finished, mut absent, mut complete) = (0, 0, 0, 0);
    let budget = Instant::now();
    for round in 0..ROUNDS {
        if budget.elapsed() > BUDGET {
            break;
        }
        let out = tmp.path().join(format!("key-{round}.pem"));
        let mut child = generate(&out).spawn().expect("spawn certfleet");
        std::thread::sleep(rng.below(window));
        match child.try_wait().expect("try_wait") {
            Some(status) => {
                assert!(status.success(), "round {round}: exited with {status}");
                finished += 1;
                window /= 2;
            }
            None => {
                child.kill().expect("SIGKILL");
                child.wait().expect("wait");
                killed_running += 1;
                window = (window + window / 2).min(widest);
            }
        }
        if out.exists() {
            check_complete_key(&out).unwrap_or_else(|e| panic!("round {round}: {e}"));
            complete += 1;
        } else {
            absent += 1;
        }
    }
    eprintln!(
        "one generation {full:?}; killed while running {killed_running}, finished {finished}; \
         file absent {absent}, complete {complete}"
    );
    assert!(
        killed_running >= 1,
        "no round killed the process while it was running; the test proved nothing"
    );
}
