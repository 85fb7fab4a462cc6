//! The token administrator's own tools, driven the way an admin would: `pkcs11-tool`
//! (OpenSC) makes key pairs, `p11tool` (GnuTLS) prints the RFC 7512 URIs admins paste, and
//! OpenSC's `pkcs11-spy.so` logs every PKCS#11 call a program makes (to count `C_Login`).
//!
//! Each helper takes how to build its command (`Command::new` or a namespace's
//! `command`) and the environment that selects the token (SoftHSM's configuration,
//! tpm2-pkcs11's store and TCTI).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// OpenSC's call-logging wrapper module.
pub const PKCS11_SPY_MODULE: &str = "/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so";

fn output(mut cmd: Command, what: &str) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// A token as the admin's tools reach it.
pub struct ToolTarget<'a> {
    /// Builds the tool's command (`Command::new`, or a namespace's `command`).
    pub make: &'a dyn Fn(&str) -> Command,
    /// The environment that selects the token (SoftHSM's configuration, …).
    pub envs: &'a [(OsString, OsString)],
    pub module: &'a Path,
    pub token: &'a str,
    pub pin: &'a str,
}

impl std::fmt::Debug for ToolTarget<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolTarget")
            .field("module", &self.module)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

/// `pkcs11-tool --keypairgen --key-type KEY_TYPE --label LABEL --id ID` on the token.
pub fn pkcs11_tool_keypair(
    t: &ToolTarget<'_>,
    key_type: &str,
    label: &str,
    id_hex: &str,
) -> Result<()> {
    let mut cmd = (t.make)("pkcs11-tool");
    cmd.envs(t.envs.iter().map(|(k, v)| (k, v)))
        .arg("--module")
        .arg(t.module)
        .args([
            "--token-label",
            t.token,
            "--login",
            "--pin",
            t.pin,
            "--keypairgen",
        ])
        .args(["--key-type", key_type, "--label", label, "--id", id_hex]);
    output(cmd, "pkcs11-tool --keypairgen (apt-get install opensc)").map(drop)
}

/// `p11tool --generate-privkey KIND` (`ECDSA` with `--curve secp256r1`, `RSA` with
/// `--bits 2048`) labelled `label` on the token.
pub fn p11tool_keypair(t: &ToolTarget<'_>, kind: &str, label: &str) -> Result<()> {
    let mut cmd = (t.make)("p11tool");
    cmd.envs(t.envs.iter().map(|(k, v)| (k, v)))
        .arg("--provider")
        .arg(t.module)
        .args([
            "--login",
            "--set-pin",
            t.pin,
            "--generate-privkey",
            kind,
            "--label",
            label,
        ]);
    if kind == "ECDSA" {
        cmd.args(["--curve", "secp256r1"]);
    } else {
        cmd.args(["--bits", "2048"]);
    }
    cmd.arg(token_url(t.token));
    output(
        cmd,
        "p11tool --generate-privkey (apt-get install gnutls-bin)",
    )
    .map(drop)
}

/// `pkcs11:token=LABEL` with the label percent-encoded.
fn token_url(label: &str) -> String {
    let mut out = String::from("pkcs11:token=");
    for b in label.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The private keys `p11tool --list-privkeys --login` shows on the token: `(URL, label)`
/// pairs, URLs exactly as printed (with `--detailed-url` when asked).
pub fn p11tool_private_key_urls(
    t: &ToolTarget<'_>,
    detailed: bool,
) -> Result<Vec<(String, String)>> {
    let mut cmd = (t.make)("p11tool");
    cmd.envs(t.envs.iter().map(|(k, v)| (k, v)))
        .arg("--provider")
        .arg(t.module)
        .args(["--list-privkeys", "--login", "--set-pin", t.pin]);
    if detailed {
        cmd.arg("--detailed-url");
    }
    let token_url = token_url(t.token);
    cmd.arg(&token_url);
    let text = output(cmd, "p11tool --list-privkeys (apt-get install gnutls-bin)")?;
    let mut found = Vec::new();
    let mut url = None;
    for line in text.lines().map(str::trim) {
        if let Some(u) = line.strip_prefix("URL: ") {
            url = Some(u.to_owned());
        } else if let Some(label) = line.strip_prefix("Label: ")
            && let Some(u) = url.take()
        {
            found.push((u, label.to_owned()));
        }
    }
    if found.is_empty() {
        bail!("p11tool listed no private key on {token_url}: {text}");
    }
    Ok(found)
}

/// `pkcs11-spy.so` in front of a module, logging to a file.
#[derive(Debug)]
pub struct SpyLog {
    pub real: PathBuf,
    pub log: PathBuf,
}

impl SpyLog {
    pub fn new(real: &Path, log: &Path) -> SpyLog {
        SpyLog {
            real: real.to_owned(),
            log: log.to_owned(),
        }
    }

    /// The module path to give a client instead of the real one.
    pub fn module(&self) -> PathBuf {
        PathBuf::from(PKCS11_SPY_MODULE)
    }

    /// The environment that points the spy at the real module and the log.
    pub fn env(&self) -> Vec<(OsString, OsString)> {
        vec![
            ("PKCS11SPY".into(), self.real.clone().into()),
            ("PKCS11SPY_OUTPUT".into(), self.log.clone().into()),
        ]
    }

    /// How many times `function` was called (the spy logs `N: C_Name` per call), over every
    /// process that appended to the log.
    pub fn calls(&self, function: &str) -> usize {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter(|l| {
                l.split_once(": ")
                    .is_some_and(|(n, f)| n.trim().parse::<u64>().is_ok() && f.trim() == function)
            })
            .count()
    }

    /// The whole log, for searching (no PIN may be in it: the spy masks nothing, so this
    /// also shows what a module received).
    pub fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
