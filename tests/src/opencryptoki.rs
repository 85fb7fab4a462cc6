//! A private openCryptoki soft token (`pkcsslotd` + the `swtok` STDLL) for tests.
//!
//! openCryptoki 3.8 has its paths compiled in (`/etc/opencryptoki/opencryptoki.conf`,
//! `/var/lib/opencryptoki`, the slot daemon's socket and pid file in `/run`, locks in
//! `/run/lock/opencryptoki`), so it runs in a [`PrivateMounts`] namespace with a temporary
//! directory bound over each: the machine's own openCryptoki state is never touched. Every
//! process that uses the token must run inside it ([`OpenCryptoki::command`]). The
//! configuration has one slot, [`SOFT_SLOT`], the soft token (Debian's build has no EC
//! mechanisms: RSA only). A p11-kit module registry can be bound too
//! ([`OpenCryptoki::start_with_p11kit`]), so `p11-kit-proxy.so` sees exactly the modules
//! a test registers.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::mount_ns::PrivateMounts;

/// Debian's openCryptoki PKCS#11 module.
pub const OPENCRYPTOKI_MODULE: &str = "/usr/lib/x86_64-linux-gnu/pkcs11/libopencryptoki.so";
/// p11-kit's proxy module.
pub const P11KIT_PROXY_MODULE: &str = "/usr/lib/x86_64-linux-gnu/p11-kit-proxy.so";
/// Where p11-kit reads its module registry.
const P11KIT_REGISTRY: &str = "/usr/share/p11-kit/modules";
/// The soft token's slot in the private configuration.
pub const SOFT_SLOT: u32 = 3;
/// The SO PIN of a fresh openCryptoki token.
const FACTORY_SO_PIN: &str = "87654321";
/// How long pkcsslotd may take to open its socket.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
const PROBE_INTERVAL: Duration = Duration::from_millis(20);

/// Whether openCryptoki and mount namespaces are available (skip locally, fail under CI).
pub fn require_opencryptoki() -> bool {
    crate::mount_ns::require_mount_namespaces()
        && crate::require_tool("pkcsslotd", "opencryptoki")
        && crate::require_tool("pkcsconf", "opencryptoki")
        && crate::require_tool(OPENCRYPTOKI_MODULE, "opencryptoki")
}

/// A running private `pkcsslotd` and its namespace.
#[derive(Debug)]
pub struct OpenCryptoki {
    dir: TempDir,
    ns: PrivateMounts,
}

impl OpenCryptoki {
    /// Starts the slot daemon on a fresh, uninitialized soft token.
    pub fn start() -> Result<OpenCryptoki> {
        Self::start_inner(None)
    }

    /// Like [`OpenCryptoki::start`], with a p11-kit registry holding exactly `modules`
    /// (`(name, module path)`; openCryptoki's own module can be one of them).
    pub fn start_with_p11kit(modules: &[(&str, &Path)]) -> Result<OpenCryptoki> {
        Self::start_inner(Some(modules))
    }

    fn start_inner(p11kit: Option<&[(&str, &Path)]>) -> Result<OpenCryptoki> {
        let dir = tempfile::Builder::new()
            .prefix("certfleet-ock-")
            .tempdir()
            .context("creating the openCryptoki directory")?;
        let d = dir.path();
        for sub in ["etc", "lib/swtok/TOK_OBJ", "run/lock/opencryptoki/swtok"] {
            std::fs::create_dir_all(d.join(sub)).with_context(|| format!("creating {sub}"))?;
        }
        std::fs::write(
            d.join("etc/opencryptoki.conf"),
            format!(
                "version opencryptoki-3.1\n\nslot {SOFT_SLOT}\n{{\nstdll = libpkcs11_sw.so\n\
                 tokname = swtok\n}}\n"
            ),
        )
        .context("writing opencryptoki.conf")?;
        // pkcsslotd and the module check that their directories belong to group pkcs11.
        run(Command::new("chgrp").args(["-R", "pkcs11"]).arg(d))?;
        run(Command::new("chmod").args(["-R", "0770"]).arg(d))?;
        let mut binds = vec![
            (d.join("etc"), PathBuf::from("/etc/opencryptoki")),
            (d.join("lib"), PathBuf::from("/var/lib/opencryptoki")),
            (d.join("run"), PathBuf::from("/run")),
        ];
        if let Some(modules) = p11kit {
            let registry = d.join("p11-kit-modules");
            std::fs::create_dir(&registry).context("creating the p11-kit registry")?;
            for (name, module) in modules {
                std::fs::write(
                    registry.join(format!("{name}.module")),
                    format!("module: {}\n", module.display()),
                )
                .context("writing a p11-kit module file")?;
            }
            binds.push((registry, PathBuf::from(P11KIT_REGISTRY)));
        }
        let ns = PrivateMounts::start(&binds)?;
        let ock = OpenCryptoki { dir, ns };
        run(&mut ock.command("pkcsslotd"))?;
        let socket = ock.dir.path().join("run/pkcsslotd.socket");
        let started = Instant::now();
        while !socket.exists() {
            if started.elapsed() > READY_TIMEOUT {
                bail!("pkcsslotd did not open {} in time", socket.display());
            }
            std::thread::sleep(PROBE_INTERVAL);
        }
        Ok(ock)
    }

    /// A command that runs `program` in the namespace (sees the private token).
    pub fn command(&self, program: &str) -> Command {
        self.ns.command(program)
    }

    /// The namespace, for async runners ([`PrivateMounts::prefix`]).
    pub fn namespace(&self) -> &PrivateMounts {
        &self.ns
    }

    /// Initializes the soft token as `pkcsconf` does: label, then SO PIN, then user PIN.
    pub fn init_token(&self, label: &str, so_pin: &str, user_pin: &str) -> Result<()> {
        let slot = SOFT_SLOT.to_string();
        self.pkcsconf(
            &["-c", &slot, "-I"],
            &format!("{FACTORY_SO_PIN}\n{label}\n"),
        )?;
        self.pkcsconf(
            &["-c", &slot, "-P"],
            &format!("{FACTORY_SO_PIN}\n{so_pin}\n{so_pin}\n"),
        )?;
        self.pkcsconf(
            &["-c", &slot, "-u"],
            &format!("{so_pin}\n{user_pin}\n{user_pin}\n"),
        )
    }

    fn pkcsconf(&self, args: &[&str], input: &str) -> Result<()> {
        let mut child = self
            .command("pkcsconf")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running pkcsconf")?;
        child
            .stdin
            .take()
            .context("pkcsconf stdin")?
            .write_all(input.as_bytes())
            .context("writing to pkcsconf")?;
        let out = child.wait_with_output().context("waiting for pkcsconf")?;
        if !out.status.success() {
            bail!(
                "pkcsconf {args:?} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

impl Drop for OpenCryptoki {
    fn drop(&mut self) {
        // pkcsslotd daemonized inside the namespace; its pid file is in our /run.
        let pid_file = self.dir.path().join("run/pkcsslotd.pid");
        if let Some(pid) = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
            .filter(|p| *p > 1)
        {
            // SAFETY: kill has no memory preconditions; the pid is our daemon's.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let started = Instant::now();
            // SAFETY: signal 0 only checks that the process exists.
            while unsafe { libc::kill(pid, 0) } == 0 && started.elapsed() < READY_TIMEOUT {
                std::thread::sleep(PROBE_INTERVAL);
            }
        }
    }
}
