//! Deploy hooks: a shell command run after a certificate was written (issue, renew) with
//! the certbot-compatible `RENEWED_LINEAGE` / `RENEWED_DOMAINS` and `CERTFLEET_*`
//! variables describing it. A failing hook is reported; the certificate stays in place.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use certfleet_issue::output::{CERT_FILE, CHAIN_FILE, FULLCHAIN_FILE, PRIVKEY_FILE};

use crate::logging::to_second;

/// What a deploy hook is told about the certificate it deploys.
#[derive(Debug, Clone)]
pub struct Deployed<'a> {
    /// `issued` or `renewed`.
    pub event: &'a str,
    pub names: &'a [String],
    /// The stable certificate directory (a link to the current version).
    pub lineage: &'a Path,
    pub serial: &'a str,
    pub not_after: time::OffsetDateTime,
    /// The key reference (`file:…`, `pkcs11:…` with any PIN redacted, `tpm:…`).
    pub key_ref: String,
    /// `privkey.pem` is in the directory (certfleet made the key).
    pub key_in_dir: bool,
    /// The CA's directory URL.
    pub ca: &'a str,
}

impl Deployed<'_> {
    /// The environment a hook gets, in addition to certfleet's own.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let dir = self.lineage;
        let path = |f: &str| dir.join(f).display().to_string();
        let mut env = vec![
            ("RENEWED_LINEAGE", dir.display().to_string()),
            ("RENEWED_DOMAINS", self.names.join(" ")),
            ("CERTFLEET_EVENT", self.event.to_owned()),
            ("CERTFLEET_NAMES", self.names.join(" ")),
            ("CERTFLEET_CERT_DIR", dir.display().to_string()),
            ("CERTFLEET_CERT_PATH", path(CERT_FILE)),
            ("CERTFLEET_CHAIN_PATH", path(CHAIN_FILE)),
            ("CERTFLEET_FULLCHAIN_PATH", path(FULLCHAIN_FILE)),
            ("CERTFLEET_SERIAL", self.serial.to_owned()),
            ("CERTFLEET_NOT_AFTER", to_second(self.not_after)),
            ("CERTFLEET_KEY_REF", self.key_ref.clone()),
            ("CERTFLEET_CA", self.ca.to_owned()),
        ];
        if self.key_in_dir {
            env.push(("CERTFLEET_KEY_PATH", path(PRIVKEY_FILE)));
        }
        env
    }
}

/// Runs `command` with `/bin/sh -c`, its output on certfleet's stderr (stdout stays for
/// certfleet's own report), killed after `timeout`.
pub async fn run_deploy_hook(command: &str, cert: &Deployed<'_>, timeout: Duration) -> Result<()> {
    let first = cert.names.first().map(String::as_str).unwrap_or("");
    run_hook("deploy hook", command, first, &cert.env(), timeout).await
}

/// Runs `command` (the `what` of `subject`) with `/bin/sh -c` and `env` added, its output
/// on certfleet's stderr, killed after `timeout`.
pub async fn run_hook(
    what: &str,
    command: &str,
    subject: &str,
    env: &[(&'static str, String)],
    timeout: Duration,
) -> Result<()> {
    let first = subject;
    tracing::info!("{first}: running {what} `{command}`");
    let stderr = {
        use std::os::fd::AsFd;
        std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .context("duplicating stderr for the deploy hook")?
    };
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stderr.try_clone()?))
        .stderr(Stdio::from(stderr))
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("{what} `{command}`: cannot start /bin/sh"))?;
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => status.with_context(|| format!("{what} `{command}`"))?,
        Err(_) => {
            let _ = child.kill().await;
            bail!(
                "{what} `{command}` for {first} did not finish within {}s and was killed",
                timeout.as_secs()
            );
        }
    };
    if !status.success() {
        bail!("{what} `{command}` for {first} failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(names: &'a [String], dir: &'a Path) -> Deployed<'a> {
        Deployed {
            event: "renewed",
            names,
            lineage: dir,
            serial: "0a1b",
            not_after: time::OffsetDateTime::from_unix_timestamp(1_796_318_055).expect("t"),
            key_ref: "file:/x/privkey.pem".into(),
            key_in_dir: true,
            ca: "https://ca.test/dir",
        }
    }

    #[tokio::test]
    async fn the_hook_sees_certbot_and_certfleet_variables_and_failures_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let names = vec!["a.test".to_owned(), "b.test".to_owned()];
        let cert = sample(&names, dir.path());
        let out = dir.path().join("env.txt");
        let cmd = format!(
            "printf '%s|%s|%s|%s|%s' \"$RENEWED_LINEAGE\" \"$RENEWED_DOMAINS\" \"$CERTFLEET_SERIAL\" \"$CERTFLEET_NOT_AFTER\" \"$CERTFLEET_FULLCHAIN_PATH\" > {}",
            out.display()
        );
        run_deploy_hook(&cmd, &cert, Duration::from_secs(30))
            .await
            .expect("hook runs");
        let seen = std::fs::read_to_string(&out).expect("hook wrote");
        let d = dir.path().display();
        assert_eq!(
            seen,
            format!("{d}|a.test b.test|0a1b|2026-12-03T17:14:15Z|{d}/fullchain.pem")
        );
        let err = run_deploy_hook("exit 3", &cert, Duration::from_secs(30))
            .await
            .expect_err("exit 3 fails");
        assert!(format!("{err}").contains("exit status: 3"), "{err}");
        let err = run_deploy_hook("sleep 5", &cert, Duration::from_millis(200))
            .await
            .expect_err("timeout");
        assert!(format!("{err}").contains("did not finish"), "{err}");
    }
}
