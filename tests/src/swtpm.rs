//! A software TPM 2.0 (`swtpm socket`) on loopback for tests and xtask.
//!
//! Each [`Swtpm`] has its own state directory and two adjacent free loopback ports (commands
//! and control: the swtpm TCTI finds the control channel at the command port + 1), runs with `--flags not-need-init,startup-clear` so it is usable at once, is
//! checked for readiness by connecting to its command port, and is killed on drop (and with
//! the test process). Clients reach it through the TCTI string [`Swtpm::tcti`]:
//! `swtpm:host=127.0.0.1,port=PORT`.

use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::ports::free_tcp_port;

/// How long swtpm may take to listen.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(20);
/// Fresh port pairs tried when swtpm cannot bind (someone took a port meanwhile).
const PORT_ATTEMPTS: usize = 3;

/// Whether `swtpm` and its TCTI library are installed; a missing install skips locally and
/// fails under CI (see [`crate::require_tool`]).
pub fn require_swtpm() -> bool {
    crate::require_tool("swtpm", "swtpm") && crate::require_tool("swtpm_ioctl", "swtpm-tools")
}

/// A running `swtpm socket --tpm2`.
#[derive(Debug)]
pub struct Swtpm {
    dir: TempDir,
    port: u16,
    ctrl_port: u16,
    child: Option<Child>,
    pid: u32,
}

impl Swtpm {
    /// Starts swtpm with a fresh state directory and waits until it accepts connections.
    pub fn start() -> Result<Swtpm> {
        let dir = tempfile::Builder::new()
            .prefix("certfleet-swtpm-")
            .tempdir()
            .context("creating the swtpm state directory")?;
        let mut failures = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            let (port, ctrl_port) = free_port_pair()?;
            let mut child = Self::spawn(dir.path(), port, ctrl_port)?;
            match wait_ready(&mut child, port) {
                Ok(()) => {
                    let pid = child.id();
                    return Ok(Swtpm {
                        dir,
                        port,
                        ctrl_port,
                        child: Some(child),
                        pid,
                    });
                }
                Err(e) => {
                    // Errors mean it is gone already.
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = crate::tail_file(&dir.path().join("swtpm.log"), 20);
                    // Another process took a port between the check and swtpm's bind:
                    // try fresh ports; anything else is reported at once.
                    if !log.contains("in use") {
                        return Err(e.context(format!("swtpm log:\n{log}")));
                    }
                    failures.push(e.to_string());
                }
            }
        }
        bail!(
            "swtpm could not bind free loopback ports in {PORT_ATTEMPTS} attempts: {}",
            failures.join("; ")
        )
    }

    fn spawn(dir: &Path, port: u16, ctrl_port: u16) -> Result<Child> {
        let state = dir.join("state");
        std::fs::create_dir_all(&state).context("creating the swtpm state directory")?;
        let mut cmd = Command::new("swtpm");
        cmd.args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", state.display()))
            .arg("--server")
            .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={ctrl_port},bindaddr=127.0.0.1"))
            .args(["--flags", "not-need-init,startup-clear"])
            .arg("--log")
            .arg(format!("file={},level=1", dir.join("swtpm.log").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        crate::pebble::spawn_attached(cmd).context("starting swtpm (apt-get install -y swtpm)")
    }

    /// The TCTI configuration for this TPM.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// Command and control ports.
    pub fn ports(&self) -> (u16, u16) {
        (self.port, self.ctrl_port)
    }

    /// The state directory (also holds `swtpm.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Process id of swtpm.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Its log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("swtpm.log")
    }

    /// Kills swtpm now (also done on drop).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Errors mean it is gone already.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Two adjacent free loopback ports: the swtpm TCTI reaches the control channel at the
/// command port + 1.
fn free_port_pair() -> Result<(u16, u16)> {
    for _ in 0..64 {
        let port = free_tcp_port()?;
        let Some(ctrl) = port.checked_add(1) else {
            continue;
        };
        if std::net::TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, ctrl)).is_ok() {
            return Ok((port, ctrl));
        }
    }
    bail!("no two adjacent free loopback ports found in 64 tries")
}

/// Polls the command port until it accepts a connection, bounded by [`READY_TIMEOUT`]; fails
/// at once if swtpm exits.
fn wait_ready(child: &mut Child, port: u16) -> Result<()> {
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    let started = Instant::now();
    while started.elapsed() < READY_TIMEOUT {
        if let Some(status) = child.try_wait().context("waiting for swtpm")? {
            bail!("swtpm exited early ({status})");
        }
        if TcpStream::connect_timeout(&addr.into(), PROBE_INTERVAL * 10).is_ok() {
            return Ok(());
        }
        std::thread::sleep(PROBE_INTERVAL);
    }
    bail!("swtpm did not listen on {addr} within {READY_TIMEOUT:?}")
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.kill();
    }
}
