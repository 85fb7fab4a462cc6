//! A TPM administrator's tpm2-tools, straight to a TPM without a resource manager: keys
//! made with `tpm2_create` and made persistent with `tpm2_evictcontrol`, and the handle
//! counts `tpm2_getcap` shows (what a test checks to see that nothing was left loaded).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Runs a tpm2-tools command against the TPM `tcti` in `dir`; returns its stdout.
pub fn tpm2_tools(tcti: &str, dir: &Path, args: &[&str]) -> Result<String> {
    let (program, rest) = args.split_first().context("no tpm2-tools command")?;
    let out = Command::new(program)
        .args(rest)
        .env("TPM2TOOLS_TCTI", tcti)
        .env("TSS2_LOG", "all+none")
        .current_dir(dir)
        .output()
        .with_context(|| format!("running {program} (apt-get install tpm2-tools)"))?;
    if !out.status.success() {
        bail!(
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `tpm2_create -G ALG` (optionally `-a ATTRIBUTES`) under a fresh owner primary, made
/// persistent at `handle` as an admin does. Without a resource manager tpm2-tools leave
/// their objects and sessions loaded: flushed after each step.
pub fn admin_persistent_key(
    tcti: &str,
    dir: &Path,
    alg: &str,
    attributes: Option<&str>,
    handle: &str,
) -> Result<()> {
    let mut create = vec![
        "tpm2_create",
        "-C",
        "p.ctx",
        "-G",
        alg,
        "-u",
        "k.pub",
        "-r",
        "k.priv",
    ];
    if let Some(a) = attributes {
        create.extend(["-a", a]);
    }
    let steps: [&[&str]; 4] = [
        &["tpm2_createprimary", "-C", "o", "-c", "p.ctx"],
        &create,
        &[
            "tpm2_load",
            "-C",
            "p.ctx",
            "-u",
            "k.pub",
            "-r",
            "k.priv",
            "-c",
            "k.ctx",
        ],
        &["tpm2_evictcontrol", "-C", "o", "-c", "k.ctx", handle],
    ];
    for step in steps {
        tpm2_tools(tcti, dir, step)?;
        tpm2_tools(tcti, dir, &["tpm2_flushcontext", "-t"])?;
        tpm2_tools(tcti, dir, &["tpm2_flushcontext", "-s"])?;
    }
    Ok(())
}

/// Transient objects, loaded sessions and saved sessions in the TPM, as `tpm2_getcap`
/// lists them through `tcti`.
pub fn tpm_handles_in_use(tcti: &str, dir: &Path) -> Result<(usize, usize, usize)> {
    let count = |what: &str| -> Result<usize> {
        Ok(tpm2_tools(tcti, dir, &["tpm2_getcap", what])?
            .lines()
            .filter(|l| l.trim_start().starts_with("- "))
            .count())
    };
    Ok((
        count("handles-transient")?,
        count("handles-loaded-session")?,
        count("handles-saved-session")?,
    ))
}
