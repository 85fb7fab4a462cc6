//! A software TPM 2.0 (`swtpm socket`) on loopback for tests and xtask.
//!
//! Each [`Swtpm`] has its own state directory and two adjacent free loopback ports (commands
//! and control: the swtpm TCTI finds the control channel at the command port + 1), runs with
//! `--flags not-need-init,startup-clear` so it is usable at once, and is a
//! [`ServerProcess`]: checked for readiness by connecting to its command port, retried on
//! fresh ports after a port clash, killed on drop (and with the test process). Clients reach
//! it through the TCTI string [`Swtpm::tcti`]: `swtpm:host=127.0.0.1,port=PORT`.

use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::ports::free_tcp_port;
use crate::server_process::{ServerProcess, StartAttempts};

/// How long swtpm may take to listen.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one readiness probe may wait for a connection.
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);

/// Whether `swtpm` and its TCTI library are installed; a missing install skips locally and
/// fails under CI (see [`crate::require_tool`]).
pub fn require_swtpm() -> bool {
    crate::require_tool("swtpm", "swtpm") && crate::require_tool("swtpm_ioctl", "swtpm-tools")
}

/// A running `swtpm socket --tpm2`.
#[derive(Debug)]
pub struct Swtpm {
    // Dropped first: the process goes before its state directory.
    process: ServerProcess,
    dir: TempDir,
    port: u16,
    ctrl_port: u16,
    pid: u32,
}

impl Swtpm {
    /// Starts swtpm with a fresh state directory and waits until it accepts connections.
    pub fn start() -> Result<Swtpm> {
        let dir = tempfile::Builder::new()
            .prefix("certfleet-swtpm-")
            .tempdir()
            .context("creating the swtpm state directory")?;
        let mut attempts = StartAttempts::default();
        while attempts.another() {
            match Self::launch(dir.path()) {
                Ok((process, port, ctrl_port)) => {
                    let pid = process.pid().context("swtpm is running")?;
                    return Ok(Swtpm {
                        process,
                        dir,
                        port,
                        ctrl_port,
                        pid,
                    });
                }
                Err(e) => attempts.failed(e),
            }
        }
        Err(attempts.into_error("swtpm"))
    }

    /// One start on fresh ports: the process and its command and control ports.
    fn launch(dir: &Path) -> Result<(ServerProcess, u16, u16)> {
        let (port, ctrl_port) = free_port_pair()?;
        let state = dir.join("state");
        let log = dir.join("swtpm.log");
        std::fs::create_dir_all(&state).context("creating the swtpm state directory")?;
        let mut cmd = Command::new("swtpm");
        cmd.args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", state.display()))
            .arg("--server")
            .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={ctrl_port},bindaddr=127.0.0.1"))
            .args(["--flags", "not-need-init,startup-clear"])
            // The file its stdout and stderr go to (swtpm appends; a bind error such as
            // "Address already in use" is written there, not to stderr).
            .arg("--log")
            .arg(format!("file={},level=1", log.display()));
        let process =
            ServerProcess::spawn("swtpm", cmd, &log).context("apt-get install -y swtpm")?;
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        process.wait_ready_blocking(&format!("listen on {addr}"), READY_TIMEOUT, || {
            TcpStream::connect_timeout(&addr.into(), PROBE_TIMEOUT).is_ok()
        })?;
        Ok((process, port, ctrl_port))
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
        self.process.log().to_path_buf()
    }

    /// Kills swtpm now (also done on drop).
    pub fn kill(&mut self) {
        self.process.kill();
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
