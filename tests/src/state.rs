//! What a detached Pebble leaves behind (`cargo xtask pebble up`), and stopping it safely.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, anyhow};
use serde_json::{Value, json};

/// A process recorded in a [`PebbleState`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessRecord {
    pub name: String,
    pub pid: u32,
    pub exe: PathBuf,
}

/// What a detached Pebble left behind: where it listens and which processes to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PebbleState {
    pub directory_url: String,
    pub management_url: String,
    pub challtestsrv_url: String,
    pub tls_root_pem: PathBuf,
    pub http01_port: u16,
    pub tls_alpn01_port: u16,
    pub dns_server: String,
    pub work_dir: PathBuf,
    pub processes: Vec<ProcessRecord>,
}

impl PebbleState {
    /// JSON form (written by `cargo xtask pebble up`).
    pub fn to_json(&self) -> Value {
        json!({
            "directory_url": self.directory_url,
            "management_url": self.management_url,
            "challtestsrv_url": self.challtestsrv_url,
            "tls_root_pem": self.tls_root_pem,
            "http01_port": self.http01_port,
            "tls_alpn01_port": self.tls_alpn01_port,
            "dns_server": self.dns_server,
            "work_dir": self.work_dir,
            "processes": self.processes.iter().map(|p| json!({
                "name": p.name, "pid": p.pid, "exe": p.exe,
            })).collect::<Vec<_>>(),
        })
    }

    /// Parses [`PebbleState::to_json`]'s output.
    pub fn from_json(v: &Value) -> Result<PebbleState> {
        let s = |k: &str| -> Result<String> {
            v.get(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("state: missing string `{k}`"))
        };
        let port = |k: &str| -> Result<u16> {
            v.get(k)
                .and_then(Value::as_u64)
                .and_then(|n| u16::try_from(n).ok())
                .ok_or_else(|| anyhow!("state: missing port `{k}`"))
        };
        let mut processes = Vec::new();
        for p in v
            .get("processes")
            .and_then(Value::as_array)
            .ok_or_else(|| anyhow!("state: missing `processes`"))?
        {
            processes.push(ProcessRecord {
                name: p
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_owned(),
                pid: p
                    .get("pid")
                    .and_then(Value::as_u64)
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| anyhow!("state: process without pid"))?,
                exe: PathBuf::from(
                    p.get("exe")
                        .and_then(Value::as_str)
                        .ok_or_else(|| anyhow!("state: process without exe"))?,
                ),
            });
        }
        Ok(PebbleState {
            directory_url: s("directory_url")?,
            management_url: s("management_url")?,
            challtestsrv_url: s("challtestsrv_url")?,
            tls_root_pem: PathBuf::from(s("tls_root_pem")?),
            http01_port: port("http01_port")?,
            tls_alpn01_port: port("tls_alpn01_port")?,
            dns_server: s("dns_server")?,
            work_dir: PathBuf::from(s("work_dir")?),
            processes,
        })
    }

    /// True if `pid` still runs the recorded binary (guards against pid reuse).
    pub fn is_running(p: &ProcessRecord) -> bool {
        fs::read_link(format!("/proc/{}/exe", p.pid)).is_ok_and(|cur| cur == p.exe)
    }

    /// Stops exactly the recorded processes: SIGTERM to each one whose `/proc/<pid>/exe`
    /// still is the recorded binary, up to 5 s for them to go, then SIGKILL. Returns one
    /// line per process saying what happened.
    pub fn stop(&self) -> Vec<String> {
        let mut report = Vec::new();
        let mut signalled = Vec::new();
        for p in &self.processes {
            if !Self::is_running(p) {
                report.push(format!(
                    "{} ({}) is not running {} any more: left alone",
                    p.name,
                    p.pid,
                    p.exe.display()
                ));
                continue;
            }
            if signal(p.pid, libc::SIGTERM) {
                report.push(format!("sent TERM to {} ({})", p.name, p.pid));
                signalled.push(p);
            }
        }
        for _ in 0..50 {
            if signalled.iter().all(|p| !Self::is_running(p)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for p in signalled {
            if Self::is_running(p) && signal(p.pid, libc::SIGKILL) {
                report.push(format!("sent KILL to {} ({})", p.name, p.pid));
            }
        }
        report
    }
}

fn signal(pid: u32, sig: libc::c_int) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill(2) with a positive pid signals just that process.
    unsafe { libc::kill(pid, sig) == 0 }
}
