//! A private SoftHSM2 token directory for tests and xtask.
//!
//! SoftHSM finds its tokens through the configuration file named by `SOFTHSM2_CONF` (else
//! `/etc/softhsm/softhsm2.conf`, which tests must never touch). [`SoftHsm::new`] makes a
//! temporary directory with its own configuration and token store; tokens are made with
//! `softhsm2-util --init-token --free`, found again by label (SoftHSM gives a new token a
//! random slot id). Child processes get the directory through [`SoftHsm::env`]. Everything
//! is removed when the value is dropped.
//!
//! SoftHSM reads `SOFTHSM2_CONF` once, at `C_Initialize`: a process that loads the module
//! itself sees only the directory that was in its environment at that moment.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

/// Where Debian (and upstream builds) put the SoftHSM2 PKCS#11 module.
const MODULE_CANDIDATES: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
];

/// Security-officer PIN of every token made here.
pub const SOFTHSM_SO_PIN: &str = "12345678";

/// The SoftHSM2 PKCS#11 module, if installed.
pub fn softhsm_module() -> Option<PathBuf> {
    MODULE_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Whether SoftHSM2 (module and `softhsm2-util`) is installed; like
/// [`crate::require_tool`], a missing install skips locally and fails under CI.
pub fn require_softhsm() -> bool {
    if !crate::require_tool("softhsm2-util", "softhsm2") {
        return false;
    }
    if softhsm_module().is_some() {
        return true;
    }
    if crate::in_ci() {
        panic!(
            "the SoftHSM2 module is missing (looked at {}); install it with: apt-get install -y softhsm2",
            MODULE_CANDIDATES.join(", ")
        );
    }
    eprintln!("SKIPPED: the SoftHSM2 module is not installed; apt-get install -y softhsm2");
    false
}

/// A SoftHSM2 configuration and token store of its own.
#[derive(Debug)]
pub struct SoftHsm {
    dir: TempDir,
    conf: PathBuf,
    module: PathBuf,
}

impl SoftHsm {
    /// Creates the directory and configuration (no token yet).
    pub fn new() -> Result<SoftHsm> {
        let module = softhsm_module().context("the SoftHSM2 module is not installed")?;
        let dir = tempfile::Builder::new()
            .prefix("certfleet-softhsm-")
            .tempdir()
            .context("creating the SoftHSM directory")?;
        Self::in_dir(dir, module)
    }

    /// Like [`SoftHsm::new`], inside `parent` (e.g. a target directory kept for a demo).
    pub fn new_in(parent: &Path) -> Result<SoftHsm> {
        let module = softhsm_module().context("the SoftHSM2 module is not installed")?;
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        let dir = tempfile::Builder::new()
            .prefix("softhsm-")
            .tempdir_in(parent)
            .with_context(|| format!("creating a SoftHSM directory in {}", parent.display()))?;
        Self::in_dir(dir, module)
    }

    fn in_dir(dir: TempDir, module: PathBuf) -> Result<SoftHsm> {
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).context("creating the token directory")?;
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n\
                 slots.removable = false\n",
                tokens.display()
            ),
        )
        .context("writing softhsm2.conf")?;
        Ok(SoftHsm { dir, conf, module })
    }

    /// Initializes a token labelled `label` with user PIN `pin` (SO PIN [`SOFTHSM_SO_PIN`]).
    pub fn init_token(&self, label: &str, pin: &str) -> Result<()> {
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &self.conf)
            .args(["--init-token", "--free", "--label", label])
            .args(["--so-pin", SOFTHSM_SO_PIN, "--pin", pin])
            .output()
            .context("running softhsm2-util (apt-get install -y softhsm2)")?;
        if !out.status.success() {
            bail!(
                "softhsm2-util --init-token --label {label} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Writes `pin` to a file (mode 0600) in the directory and returns its path, for
    /// `pin-source=file:…`.
    pub fn pin_file(&self, name: &str, pin: &str) -> Result<PathBuf> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.dir.path().join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        std::io::Write::write_all(&mut f, format!("{pin}\n").as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// `pkcs11:token=TOKEN;object=OBJECT?module-path=…&pin-source=file:PIN_FILE`.
    pub fn key_uri(&self, token: &str, object: &str, pin_file: &Path) -> String {
        format!(
            "pkcs11:token={token};object={object}?module-path={}&pin-source=file:{}",
            self.module.display(),
            pin_file.display()
        )
    }

    /// The configuration file (value for `SOFTHSM2_CONF`).
    pub fn conf_path(&self) -> &Path {
        &self.conf
    }

    /// The directory holding the configuration, the tokens and PIN files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The PKCS#11 module file.
    pub fn module_path(&self) -> &Path {
        &self.module
    }

    /// The environment a child process needs to see these tokens.
    pub fn env(&self) -> (OsString, OsString) {
        ("SOFTHSM2_CONF".into(), self.conf.clone().into_os_string())
    }
}
