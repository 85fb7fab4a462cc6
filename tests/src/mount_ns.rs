//! A private mount namespace for software that keeps its state in fixed system paths
//! (openCryptoki: `/etc/opencryptoki`, `/var/lib/opencryptoki`, `/run`; p11-kit's module
//! registry: `/usr/share/p11-kit/modules`). Directories of the test are bind-mounted over
//! those paths inside the namespace only, so tests never touch the machine's own state.
//!
//! A holder process (`unshare -m --propagation private`, then `cat` reading a pipe) keeps
//! the namespace alive; commands enter it with `nsenter -t PID -m`. Dropping the value
//! closes the pipe and kills the holder; the mounts go with the namespace.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// How long setting up the namespace may take.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Whether private mount namespaces can be made here (root, `unshare`, `nsenter`); a
/// missing capability skips locally and fails under CI, like [`crate::require_tool`].
pub fn require_mount_namespaces() -> bool {
    if !crate::require_tool("unshare", "util-linux")
        || !crate::require_tool("nsenter", "util-linux")
    {
        return false;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if crate::in_ci() {
        panic!("private mount namespaces need root (bind mounts); run the tests as root");
    }
    eprintln!("SKIPPED: private mount namespaces need root");
    false
}

/// A mount namespace with some directories bind-mounted over system paths.
#[derive(Debug)]
pub struct PrivateMounts {
    holder: Child,
    pid: u32,
}

impl PrivateMounts {
    /// Makes the namespace: each `(source, target)` is bind-mounted (the target must exist).
    pub fn start(binds: &[(PathBuf, PathBuf)]) -> Result<PrivateMounts> {
        let mut script = String::from("set -e\n");
        for (source, target) in binds {
            script.push_str(&format!(
                "mount --bind {} {}\n",
                quote(source),
                quote(target)
            ));
        }
        script.push_str("echo READY\nexec cat\n");
        let mut holder = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running unshare (util-linux)")?;
        let stdout = holder.stdout.take().context("holder stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) if line.trim() == "READY" => {}
            other => {
                let _ = holder.kill();
                let out = holder.wait_with_output().ok();
                let stderr = out
                    .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                    .unwrap_or_default();
                bail!("the private mount namespace did not come up ({other:?}): {stderr}");
            }
        }
        let pid = holder.id();
        Ok(PrivateMounts { holder, pid })
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t")
            .arg(self.pid.to_string())
            .arg("-m")
            .arg("--")
            .arg(program);
        cmd
    }

    /// The `nsenter` prefix (program and arguments) for async runners.
    pub fn prefix(&self) -> Vec<String> {
        vec![
            "nsenter".to_owned(),
            "-t".to_owned(),
            self.pid.to_string(),
            "-m".to_owned(),
            "--".to_owned(),
        ]
    }
}

fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', "'\\''"))
}

impl Drop for PrivateMounts {
    fn drop(&mut self) {
        drop(self.holder.stdin.take());
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}
