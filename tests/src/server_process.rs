//! One way to run a test server (BIND, Knot, PowerDNS, the KDC, moto, acme2certifier, swtpm,
//! PostgreSQL): spawned attached to the test process (it dies with it), stdin closed, stdout
//! and stderr into a log file, polled until ready while watching for an early exit, killed
//! on drop. Servers on ports picked at run time retry with fresh ports when another process
//! took one meanwhile ([`StartAttempts`]).

use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::{ports, tail_file};

/// Readiness polls are this far apart.
pub const READY_INTERVAL: Duration = Duration::from_millis(100);
/// Start attempts when a picked port was taken by another process.
pub const START_ATTEMPTS: u32 = 3;
/// Log lines an error carries.
const TAIL_LINES: usize = 20;

/// A running server process; killed on drop.
#[derive(Debug)]
pub struct ServerProcess {
    name: String,
    /// A mutex so readiness checks can borrow the harness that owns this process.
    child: Mutex<Option<Child>>,
    log: PathBuf,
}

impl ServerProcess {
    /// Starts `cmd` (named `name` in errors) with its output in `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<ServerProcess> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out));
        let child =
            crate::pebble::spawn_attached(cmd).with_context(|| format!("starting {name}"))?;
        Ok(ServerProcess {
            name: name.to_owned(),
            child: Mutex::new(Some(child)),
            log: log.to_path_buf(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file holding the process's stdout and stderr.
    pub fn log(&self) -> &Path {
        &self.log
    }

    pub fn log_tail(&self, lines: usize) -> String {
        tail_file(&self.log, lines)
    }

    /// An error naming the exit status and the log tail once the process has exited.
    pub fn check_running(&self) -> Result<()> {
        let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = child.as_mut()
            && let Some(status) = c.try_wait()?
        {
            bail!(
                "{} exited during start-up ({status}):\n{}",
                self.name,
                self.log_tail(TAIL_LINES)
            );
        }
        Ok(())
    }

    /// Polls `ready` every [`READY_INTERVAL`] until it answers true; errors when the process
    /// exits or `deadline` passes (`what` completes "NAME did not …", e.g. "answer on its API").
    pub async fn wait_ready<F, Fut>(
        &self,
        what: &str,
        deadline: Duration,
        mut ready: F,
    ) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let started = Instant::now();
        loop {
            self.check_running()?;
            if self.ready_or_late(ready().await, what, started, deadline)? {
                return Ok(());
            }
            tokio::time::sleep(READY_INTERVAL).await;
        }
    }

    /// [`ServerProcess::wait_ready`] for callers outside an async runtime (xtask, blocking
    /// start-ups run on `spawn_blocking`).
    pub fn wait_ready_blocking(
        &self,
        what: &str,
        deadline: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<()> {
        let started = Instant::now();
        loop {
            self.check_running()?;
            if self.ready_or_late(ready(), what, started, deadline)? {
                return Ok(());
            }
            std::thread::sleep(READY_INTERVAL);
        }
    }

    /// One poll's verdict: `Ok(true)` ready, `Ok(false)` poll again, `Err` past `deadline`.
    fn ready_or_late(
        &self,
        ready: bool,
        what: &str,
        started: Instant,
        deadline: Duration,
    ) -> Result<bool> {
        if ready {
            return Ok(true);
        }
        if started.elapsed() > deadline {
            bail!(
                "{} did not {what} within {deadline:?}:\n{}",
                self.name,
                self.log_tail(TAIL_LINES)
            );
        }
        Ok(false)
    }

    /// Its process id (`None` once killed).
    pub fn pid(&self) -> Option<u32> {
        let child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        child.as_ref().map(Child::id)
    }

    /// Kills the process now (also done on drop).
    pub fn kill(&self) {
        let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(mut c) = child.take() {
            // Errors mean it is gone already.
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Start attempts on fresh ports: retries (up to [`START_ATTEMPTS`]) only after a port clash.
///
/// ```no_run
/// # use certfleet_testenv::server_process::StartAttempts;
/// # struct Server;
/// # async fn launch() -> anyhow::Result<Server> { Ok(Server) }
/// # async fn start() -> anyhow::Result<Server> {
/// let mut attempts = StartAttempts::default();
/// while attempts.another() {
///     match launch().await {
///         Ok(server) => return Ok(server),
///         Err(e) => attempts.failed(e),
///     }
/// }
/// Err(attempts.into_error("pdns_server"))
/// # }
/// ```
#[derive(Debug, Default)]
pub struct StartAttempts {
    made: u32,
    last: Option<anyhow::Error>,
    give_up: bool,
}

impl StartAttempts {
    /// Whether to make another attempt: not after the last one, nor after a failure that was
    /// not a port clash.
    pub fn another(&mut self) -> bool {
        if self.give_up || self.made >= START_ATTEMPTS {
            return false;
        }
        self.made += 1;
        true
    }

    /// Records the failure of the current attempt.
    pub fn failed(&mut self, e: anyhow::Error) {
        self.give_up = !ports::is_port_clash(&e);
        self.last = Some(e.context(format!("start attempt {}", self.made)));
    }

    /// The last failure (or "WHAT did not start").
    pub fn into_error(self, what: &str) -> anyhow::Error {
        self.last.unwrap_or_else(|| anyhow!("{what} did not start"))
    }
}
