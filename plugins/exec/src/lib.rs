//! `exec`: a certfleet DNS-01 plugin that runs an external program for every record, with
//! lego's `exec` provider convention, so existing provider scripts can be reused:
//!
//! ```text
//! PROGRAM present _acme-challenge.www.example.com. VALUE
//! PROGRAM cleanup _acme-challenge.www.example.com. VALUE
//! ```
//! Exit status 0 means done. Settings (`[plugins.exec]`): `command` (required; absolute path
//! or a name on PATH), `timeout_secs` (default 60, per run), `env` (extra environment
//! variables for the program; their values are treated as secrets and never logged or
//! quoted in errors, and are blanked out of the program's output before it is reported).
//!
//! The program gets a clean environment: only `PATH`, `HOME`, `LANG` and `TZ` from
//! certfleet's own (which may hold API tokens, database passwords, PINs and TSIG secrets),
//! plus `env`. It runs in a process group of its own; at the timeout the whole group is
//! killed, so a background grandchild cannot keep certfleet waiting. At most 64 KiB of its
//! output is kept (the rest is read and discarded, with a note).

mod run;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use certfleet_plugin_abi::{
    CheckResult, ErrorKind, Logger, Plugin, PluginError, TxtRecord, export_plugin,
};
use serde::Deserialize;

/// Most output kept from a failing program for the error message.
const OUTPUT_TAIL: usize = 600;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    command: String,
    #[serde(default = "default_timeout")]
    timeout_secs: u64,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

fn default_timeout() -> u64 {
    60
}

/// The `exec` plugin instance.
pub struct Exec {
    command: PathBuf,
    timeout: Duration,
    env: BTreeMap<String, String>,
    log: Logger,
    runs: AtomicU64,
}

impl std::fmt::Debug for Exec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exec")
            .field("command", &self.command)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Plugin for Exec {
    const NAME: &'static str = "exec";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn create(config: serde_json::Value, log: Logger) -> Result<Self, PluginError> {
        let config: Config = serde_json::from_value(config)
            .map_err(|e| PluginError::config(format!("[plugins.exec]: {e}")))?;
        if config.command.trim().is_empty() {
            return Err(PluginError::config("command: must name a program"));
        }
        let command = resolve(&config.command).ok_or_else(|| {
            PluginError::config(format!(
                "command = {:?}: no such executable (absolute path, or a name on PATH)",
                config.command
            ))
        })?;
        if config.timeout_secs == 0 {
            return Err(PluginError::config("timeout_secs: must be at least 1"));
        }
        Ok(Exec {
            command,
            timeout: Duration::from_secs(config.timeout_secs),
            env: config.env,
            log,
            runs: AtomicU64::new(0),
        })
    }

    fn present(&self, records: &[TxtRecord]) -> Result<(), PluginError> {
        for r in records {
            self.run("present", r)?;
        }
        Ok(())
    }

    fn cleanup(&self, records: &[TxtRecord]) -> Result<(), PluginError> {
        // Every record gets its cleanup even when one fails; the first failure is reported.
        let mut first = None;
        for r in records {
            if let Err(e) = self.run("cleanup", r) {
                self.log.warn(&e.message);
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn check(&self) -> Result<Vec<CheckResult>, PluginError> {
        Ok(vec![CheckResult::ok(
            format!("program {}", self.command.display()),
            "exists and is executable (it is not run by a check)",
        )])
    }

    fn metrics(&self) -> BTreeMap<String, u64> {
        BTreeMap::from([("commands_run".to_owned(), self.runs.load(Ordering::Relaxed))])
    }
}

impl Exec {
    fn run(&self, action: &str, record: &TxtRecord) -> Result<(), PluginError> {
        let shown = format!("{} {action} {}", self.command.display(), record.fqdn);
        self.log.debug(&format!("running {shown} VALUE"));
        self.runs.fetch_add(1, Ordering::Relaxed);
        let mut command = Command::new(&self.command);
        command.arg(action).arg(&record.fqdn).arg(&record.value);
        let outcome = run::run(command, &self.env, self.timeout).map_err(|e| {
            PluginError::new(ErrorKind::Provider, format!("cannot run {shown}: {e}"))
                .with_records(std::slice::from_ref(record))
        })?;
        if let Some(note) = &outcome.discarded_note {
            self.log.warn(&format!("{shown}: {note}"));
        }
        let failure = match outcome.status {
            Ok(s) if s.success() => return Ok(()),
            Ok(s) => format!("exited with {s}"),
            Err(e) => e,
        };
        let output = self.redact(outcome.output.trim());
        let tail: String = output
            .chars()
            .rev()
            .take(OUTPUT_TAIL)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let detail = if tail.is_empty() {
            String::new()
        } else {
            format!("; output: {tail}")
        };
        Err(
            PluginError::new(ErrorKind::Provider, format!("{shown}: {failure}{detail}"))
                .with_records(std::slice::from_ref(record)),
        )
    }

    /// The program's output with every configured environment value blanked out.
    fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for v in self.env.values().filter(|v| v.len() >= 4) {
            out = out.replace(v.as_str(), "[redacted]");
        }
        out
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn resolve(command: &str) -> Option<PathBuf> {
    if command.contains('/') {
        let p = PathBuf::from(command);
        return is_executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(command))
        .find(|p| is_executable(p))
}

export_plugin!(Exec);
