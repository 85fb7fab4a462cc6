//! tpm2-pkcs11 over a private swtpm, with or without a resource manager in between.
//!
//! Tokens and keys are made by the admin's tool, `tpm2_ptool`, which needs a resource
//! manager (straight to swtpm it runs out of object slots): a `tpm2-abrmd --session` on a
//! private D-Bus session bus (`dbus-daemon --session`), both killed on drop. Clients pick
//! their path with [`Tpm2Pkcs11::env_abrmd`] or, after [`Tpm2Pkcs11::stop_abrmd`],
//! [`Tpm2Pkcs11::env_direct`] (the TPM itself: what a client leaves loaded stays loaded).

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::swtpm::Swtpm;

/// Debian's tpm2-pkcs11 module.
pub const TPM2_PKCS11_MODULE: &str = "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so";
/// How long the bus and the resource manager may take to come up.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// The TCTI of the resource manager on the session bus.
const TABRMD_TCTI: &str = "tabrmd:bus_type=session";

/// Whether tpm2-pkcs11, its tools, tpm2-abrmd and swtpm are installed (skip locally, fail
/// under CI).
pub fn require_tpm2_pkcs11() -> bool {
    crate::swtpm::require_swtpm()
        && crate::require_tool(TPM2_PKCS11_MODULE, "libtpm2-pkcs11-1")
        && crate::require_tool("tpm2_ptool", "libtpm2-pkcs11-tools")
        && crate::require_tool("tpm2-abrmd", "tpm2-abrmd")
        && crate::require_tool(
            "/usr/lib/x86_64-linux-gnu/libtss2-tcti-tabrmd.so.0",
            "libtss2-tcti-tabrmd0",
        )
        && crate::require_tool("dbus-daemon", "dbus-daemon")
        && crate::require_tool("tpm2_getcap", "tpm2-tools")
}

/// A swtpm, a tpm2-pkcs11 store and (until stopped) a resource manager.
#[derive(Debug)]
pub struct Tpm2Pkcs11 {
    swtpm: Swtpm,
    dir: TempDir,
    bus: Child,
    bus_address: String,
    abrmd: Option<Child>,
}

impl Tpm2Pkcs11 {
    /// Starts swtpm, a session bus, tpm2-abrmd, and makes an empty store.
    pub fn start() -> Result<Tpm2Pkcs11> {
        let swtpm = Swtpm::start()?;
        let dir = tempfile::Builder::new()
            .prefix("certfleet-tpm2-pkcs11-")
            .tempdir()
            .context("creating the tpm2-pkcs11 directory")?;
        std::fs::create_dir(dir.path().join("store")).context("creating the store")?;
        let mut bus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("running dbus-daemon")?;
        let mut line = String::new();
        BufReader::new(bus.stdout.take().context("dbus stdout")?)
            .read_line(&mut line)
            .context("reading the bus address")?;
        let bus_address = line.trim().to_owned();
        if bus_address.is_empty() {
            let _ = bus.kill();
            bail!("dbus-daemon printed no address");
        }
        let mut tpm = Tpm2Pkcs11 {
            swtpm,
            dir,
            bus,
            bus_address,
            abrmd: None,
        };
        let abrmd = Command::new("tpm2-abrmd")
            .args(["--session", "--allow-root"])
            .arg(format!("--tcti={}", tpm.swtpm.tcti()))
            .env("DBUS_SESSION_BUS_ADDRESS", &tpm.bus_address)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("running tpm2-abrmd")?;
        tpm.abrmd = Some(abrmd);
        let started = Instant::now();
        loop {
            let probe = tpm
                .tools_command("tpm2_getcap")
                .arg("properties-fixed")
                .output()
                .context("running tpm2_getcap")?;
            if probe.status.success() {
                break;
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "tpm2-abrmd did not answer in time: {}",
                    String::from_utf8_lossy(&probe.stderr)
                );
            }
            std::thread::sleep(PROBE_INTERVAL);
        }
        tpm.ptool(&["init"])?;
        Ok(tpm)
    }

    /// The tpm2-pkcs11 store directory.
    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub fn swtpm(&self) -> &Swtpm {
        &self.swtpm
    }

    /// `tpm2_ptool addtoken` (primary object 1, made by `init`).
    pub fn add_token(&self, label: &str, user_pin: &str, so_pin: &str) -> Result<()> {
        self.ptool(&[
            "addtoken",
            "--pid=1",
            &format!("--label={label}"),
            &format!("--userpin={user_pin}"),
            &format!("--sopin={so_pin}"),
        ])
    }

    /// `tpm2_ptool addkey --algorithm=ALG` (`ecc256`, `rsa2048`, …).
    pub fn add_key(
        &self,
        token: &str,
        algorithm: &str,
        key_label: &str,
        user_pin: &str,
    ) -> Result<()> {
        self.ptool(&[
            "addkey",
            &format!("--algorithm={algorithm}"),
            &format!("--label={token}"),
            &format!("--key-label={key_label}"),
            &format!("--userpin={user_pin}"),
        ])
    }

    fn ptool(&self, args: &[&str]) -> Result<()> {
        let out = self
            .tools_command("tpm2_ptool")
            .args(args)
            .arg(format!("--path={}", self.store().display()))
            .output()
            .context("running tpm2_ptool (apt-get install libtpm2-pkcs11-tools)")?;
        if !out.status.success() {
            bail!(
                "tpm2_ptool {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// A tpm2-tools command reaching the TPM the way clients do now (resource manager
    /// while it runs, else the TPM itself).
    pub fn tools_command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("TSS2_LOG", "all+none")
            .env("DBUS_SESSION_BUS_ADDRESS", &self.bus_address);
        match self.abrmd {
            Some(_) => cmd.env("TPM2TOOLS_TCTI", TABRMD_TCTI),
            None => cmd.env("TPM2TOOLS_TCTI", self.swtpm.tcti()),
        };
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Environment for a tpm2-pkcs11 client through the resource manager.
    pub fn env_abrmd(&self) -> Vec<(OsString, OsString)> {
        vec![
            ("TPM2_PKCS11_STORE".into(), self.store().into()),
            ("TPM2_PKCS11_TCTI".into(), TABRMD_TCTI.into()),
            (
                "DBUS_SESSION_BUS_ADDRESS".into(),
                self.bus_address.clone().into(),
            ),
            ("TSS2_LOG".into(), "all+none".into()),
        ]
    }

    /// Environment for a tpm2-pkcs11 client straight to the TPM.
    pub fn env_direct(&self) -> Vec<(OsString, OsString)> {
        vec![
            ("TPM2_PKCS11_STORE".into(), self.store().into()),
            ("TPM2_PKCS11_TCTI".into(), self.swtpm.tcti().into()),
            ("TSS2_LOG".into(), "all+none".into()),
        ]
    }

    /// Stops the resource manager: from now on clients talk to the TPM itself.
    pub fn stop_abrmd(&mut self) {
        if let Some(mut abrmd) = self.abrmd.take() {
            let _ = abrmd.kill();
            let _ = abrmd.wait();
        }
    }

    /// Transient objects, loaded sessions and saved sessions in the TPM itself
    /// (`tpm2_getcap`), once the resource manager is stopped (it holds the only connection
    /// swtpm serves).
    pub fn handles_in_use(&self) -> Result<(usize, usize, usize)> {
        if self.abrmd.is_some() {
            bail!("stop the resource manager first: it holds swtpm's connection");
        }
        crate::tpm_admin::tpm_handles_in_use(&self.swtpm.tcti(), self.dir.path())
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tpm2Pkcs11 {
    fn drop(&mut self) {
        self.stop_abrmd();
        let _ = self.bus.kill();
        let _ = self.bus.wait();
    }
}
