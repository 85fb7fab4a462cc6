//! One way to run a test server (BIND, Knot, PowerDNS, the KDC, moto, acme2certifier, swtpm,
//! PostgreSQL): spawned attached to the test process (it dies with it), stdin closed, stdout
//! and stderr into a log file, polled until ready while watching for an early exit, killed
//! on drop. Servers on ports picked at run time retry with fresh ports when another process
//! took one meanwhile ([`StartAttempts`]).

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, PoisonError, mpsc};
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
    pub fn spawn(name: &str, cmd: Command, log: &Path) -> Result<ServerProcess> {
        ServerProcess::start(name, cmd, log, false)
    }

    /// [`ServerProcess::spawn`], but in a process group of its own and not attached to the
    /// test process: it outlives it once [released](ServerProcess::release) (`cargo xtask
    /// pebble start`).
    pub fn spawn_detached(name: &str, cmd: Command, log: &Path) -> Result<ServerProcess> {
        ServerProcess::start(name, cmd, log, true)
    }

    fn start(name: &str, mut cmd: Command, log: &Path, detached: bool) -> Result<ServerProcess> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out));
        let child = if detached {
            cmd.process_group(0);
            cmd.spawn()
        } else {
            spawn_attached(cmd)
        }
        .with_context(|| format!("starting {name}"))?;
        Ok(ServerProcess {
            name: name.to_owned(),
            child: Mutex::new(Some(child)),
            log: log.to_path_buf(),
        })
    }

    /// Leaves the process running: neither this value nor its drop kills it.
    pub fn release(self) {
        self.child
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
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
    pub async fn wait_ready<F, Fut>(&self, what: &str, deadline: Duration, ready: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        ServerProcess::wait_all_ready(&[self], what, deadline, ready).await
    }

    /// [`ServerProcess::wait_ready`] for servers that only work together (Pebble and
    /// challtestsrv): an exit of any of them ends the wait; the first is named in errors.
    pub async fn wait_all_ready<F, Fut>(
        servers: &[&ServerProcess],
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
            for s in servers {
                s.check_running()?;
            }
            if ready_or_late(servers, ready().await, what, started, deadline)? {
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
            if ready_or_late(&[self], ready(), what, started, deadline)? {
                return Ok(());
            }
            std::thread::sleep(READY_INTERVAL);
        }
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

/// One poll's verdict: `Ok(true)` ready, `Ok(false)` poll again, `Err` past `deadline`
/// (naming the first server, with every server's log tail).
fn ready_or_late(
    servers: &[&ServerProcess],
    ready: bool,
    what: &str,
    started: Instant,
    deadline: Duration,
) -> Result<bool> {
    if ready {
        return Ok(true);
    }
    if started.elapsed() > deadline {
        let name = servers.first().map_or("the server", |s| s.name.as_str());
        let tails: String = servers
            .iter()
            .map(|s| {
                format!(
                    "\n--- {} ({}):\n{}",
                    s.name,
                    s.log.display(),
                    s.log_tail(TAIL_LINES)
                )
            })
            .collect();
        bail!("{name} did not {what} within {deadline:?}:{tails}");
    }
    Ok(false)
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

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` so that it is killed when this process dies (even by SIGKILL), so a crashed
/// or killed test run leaves no Pebble behind.
///
/// The parent-death signal fires when the *thread* that forked exits, so every process is
/// forked from one helper thread that lives as long as the process.
fn spawn_attached(mut cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let parent = std::process::id();
    // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) run between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("testenv-spawner".into())
            .spawn(move || {
                // Ends when every sender is gone, i.e. never before the process exits.
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .map(|_| ())
            .unwrap_or_else(|e| eprintln!("testenv: cannot start the spawner thread: {e}"));
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    {
        let tx = tx
            .lock()
            .map_err(|_| io::Error::other("spawner lock poisoned"))?;
        tx.send((cmd, reply_tx))
            .map_err(|_| io::Error::other("spawner thread is gone"))?;
    }
    reply_rx
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| io::Error::other("spawner thread did not answer"))?
}
