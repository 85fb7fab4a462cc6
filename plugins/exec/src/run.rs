//! Running the hook: clean environment, own process group, bounded time and output.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The only variables of certfleet's environment the hook inherits: certfleet's own may
/// hold cloud credentials, database passwords, PINs and TSIG secrets meant for it alone.
pub(crate) const INHERITED_ENV: [&str; 4] = ["PATH", "HOME", "LANG", "TZ"];
/// Most output (stdout and stderr together) kept from one run; the rest is discarded.
pub(crate) const OUTPUT_CAP: usize = 64 * 1024;
/// How often a running program is checked for exit (bounded by the timeout).
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// How long to wait for the output pipes to close after the group was killed (a process
/// that left the group with `setsid` could keep them open forever).
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// How a run ended.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// The exit status, or why there is none (timed out, could not wait).
    pub status: Result<ExitStatus, String>,
    /// The first [`OUTPUT_CAP`] bytes of output, lossily decoded.
    pub output: String,
    /// Set when output was discarded or stragglers had to be killed.
    pub discarded_note: Option<String>,
}

#[derive(Default)]
struct Capture {
    kept: Vec<u8>,
    discarded: u64,
}

/// Runs `command` with a cleared environment (plus [`INHERITED_ENV`] and `env`) in a new
/// process group, killing the whole group when `timeout` passes.
pub(crate) fn run(
    mut command: Command,
    env: &BTreeMap<String, String>,
    timeout: Duration,
) -> std::io::Result<Outcome> {
    command.env_clear();
    for name in INHERITED_ENV {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let started = Instant::now();
    let deadline = started + timeout;
    let mut child = command.spawn()?;
    // process_group(0): the group id is the child's pid.
    let group = i32::try_from(child.id()).unwrap_or(i32::MAX);
    let capture = Arc::new(Mutex::new(Capture::default()));
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let mut readers = 0;
    if let Some(out) = child.stdout.take() {
        drain(out, Arc::clone(&capture), done_tx.clone());
        readers += 1;
    }
    if let Some(err) = child.stderr.take() {
        drain(err, Arc::clone(&capture), done_tx.clone());
        readers += 1;
    }
    drop(done_tx);

    let mut notes = Vec::new();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() >= deadline => {
                kill_group(group);
                let _ = child.wait();
                break Err(format!(
                    "did not finish within {timeout:?}; killed it and its process group"
                ));
            }
            Ok(None) => std::thread::sleep(POLL_INTERVAL),
            Err(e) => {
                kill_group(group);
                let _ = child.wait();
                break Err(format!("cannot wait for it: {e}"));
            }
        }
    };
    // The program is gone, but a background process it started may still hold the output
    // pipes open: wait for them until the deadline, then kill the group.
    let mut killed_stragglers = false;
    while readers > 0 {
        let now = Instant::now();
        let wait = if killed_stragglers || now >= deadline {
            if !killed_stragglers {
                kill_group(group);
                killed_stragglers = true;
                notes.push(format!(
                    "processes it left running still held its output open at the {timeout:?} timeout; killed its process group"
                ));
            }
            DRAIN_GRACE
        } else {
            deadline - now
        };
        match done_rx.recv_timeout(wait) {
            Ok(()) => readers -= 1,
            Err(mpsc::RecvTimeoutError::Timeout) if killed_stragglers => {
                notes.push("its output pipes stayed open; stopped reading them".to_owned());
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let capture = capture.lock().unwrap_or_else(|p| p.into_inner());
    if capture.discarded > 0 {
        notes.push(format!(
            "kept the first {} KiB of its output, discarded {} more bytes",
            OUTPUT_CAP / 1024,
            capture.discarded
        ));
    }
    Ok(Outcome {
        status,
        output: String::from_utf8_lossy(&capture.kept).into_owned(),
        discarded_note: (!notes.is_empty()).then(|| notes.join("; ")),
    })
}

fn kill_group(group: i32) {
    // SAFETY: kill has no memory preconditions; a negative pid names the process group
    // (ours, created for this run). ESRCH (already gone) is fine.
    unsafe { libc::kill(-group, libc::SIGKILL) };
}

/// Reads `r` to its end on a thread, keeping what fits under [`OUTPUT_CAP`]; the rest is
/// read and dropped so the program never blocks on a full pipe.
fn drain<R: Read + Send + 'static>(mut r: R, capture: Arc<Mutex<Capture>>, done: mpsc::Sender<()>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut c = capture.lock().unwrap_or_else(|p| p.into_inner());
                    let room = OUTPUT_CAP.saturating_sub(c.kept.len()).min(n);
                    c.kept.extend_from_slice(&buf[..room]);
                    c.discarded += (n - room) as u64;
                }
            }
        }
        let _ = done.send(());
    });
}

#[cfg(test)]
mod tests;
