//! Hooks of a batch run. After the run, each certificate this run issued gets its deploy
//! hook (the entry's `deploy_hook`, else `--deploy-hook`, else `[hooks] deploy`), one at a
//! time in batch-file order, with the variables of `certfleet issue`'s hook; the hook is
//! also recorded in the renewal inventory so `renew` runs it. Then the batch hook
//! (`--batch-hook`, else `[hooks] batch`) runs once with the list of changed certificates,
//! if there is any. A failing hook is reported; the certificates stay.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use certfleet_batch::batch_file::BatchFile;
use certfleet_batch::{Job, JobStatus};
use certfleet_issue::output::PRIVKEY_FILE;
use time::OffsetDateTime;

use crate::context::Context;
use crate::hooks::{Deployed, run_deploy_hook, run_hook};

/// The key of a certificate's hook: its names as stored in the job.
pub fn names_key(names: &[String]) -> String {
    names.join(" ")
}

/// The hooks of one run.
#[derive(Debug, Default)]
pub struct BatchHooks {
    /// Per certificate (names key): the entry's hook or `--deploy-hook`.
    per_cert: HashMap<String, String>,
    /// `[hooks] deploy`, for certificates without one (not recorded: `renew` falls back
    /// to it as well).
    fallback: Option<String>,
    batch: Option<String>,
    timeout: std::time::Duration,
}

/// A certificate this run issued.
#[derive(Debug)]
struct Changed {
    names: Vec<String>,
    dir: PathBuf,
    serial: String,
    not_after: OffsetDateTime,
    key_ref: String,
}

/// What the hooks did: how many ran and how many failed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HookOutcome {
    pub ran: usize,
    pub failed: usize,
}

impl BatchHooks {
    /// `batch` carries the entries' hooks (the `--deploy-hook` flag is already their
    /// default); `[hooks] deploy` covers the rest.
    pub fn new(ctx: &Context, batch: &BatchFile, batch_hook: Option<&str>) -> BatchHooks {
        let per_cert = batch
            .certs
            .iter()
            .filter_map(|c| Some((names_key(&c.names), c.deploy_hook.clone()?)))
            .collect();
        BatchHooks {
            per_cert,
            fallback: ctx
                .settings
                .hooks
                .deploy
                .clone()
                .filter(|h| !h.trim().is_empty()),
            batch: batch_hook
                .map(str::to_owned)
                .or_else(|| ctx.settings.hooks.batch.clone())
                .filter(|h| !h.trim().is_empty()),
            timeout: ctx.settings.hooks.timeout(),
        }
    }

    /// The deploy hook each certificate names (for the renewal inventory).
    pub fn per_cert(&self) -> &HashMap<String, String> {
        &self.per_cert
    }
}

/// Collects the certificates a run issued, then runs the hooks.
#[derive(Debug)]
pub struct HookRun<'a> {
    hooks: &'a BatchHooks,
    run_started: OffsetDateTime,
    changed: Vec<Changed>,
}

impl<'a> HookRun<'a> {
    pub fn new(hooks: &'a BatchHooks, run_started: OffsetDateTime) -> HookRun<'a> {
        HookRun {
            hooks,
            run_started,
            changed: Vec::new(),
        }
    }

    /// Notes `j` if this run issued it.
    pub fn note(&mut self, j: &Job) {
        let (JobStatus::Issued, Some(issued)) = (j.status, &j.issued) else {
            return;
        };
        if j.updated_at < self.run_started {
            return;
        }
        self.changed.push(Changed {
            names: j.spec.names.clone(),
            dir: PathBuf::from(&issued.cert_dir),
            serial: issued.serial.clone(),
            not_after: issued.not_after,
            key_ref: j.cert_key.clone().unwrap_or_default(),
        });
    }

    /// Runs the deploy hooks, then the batch hook; failures are logged and counted.
    pub async fn finish(self, ca: &str, file: &Path, report: Option<&Path>) -> HookOutcome {
        let mut out = HookOutcome::default();
        for c in &self.changed {
            let Some(hook) = self
                .hooks
                .per_cert
                .get(&names_key(&c.names))
                .or(self.hooks.fallback.as_ref())
            else {
                continue;
            };
            let key_in_dir = c
                .key_ref
                .parse::<certfleet_keys::KeyRef>()
                .ok()
                .and_then(|k| k.file_path())
                == Some(c.dir.join(PRIVKEY_FILE));
            let cert = Deployed {
                event: "issued",
                names: &c.names,
                lineage: &c.dir,
                serial: &c.serial,
                not_after: c.not_after,
                key_ref: c.key_ref.clone(),
                key_in_dir,
                ca,
            };
            out.ran += 1;
            if let Err(e) = run_deploy_hook(hook, &cert, self.hooks.timeout).await {
                out.failed += 1;
                tracing::error!(
                    "the certificate for {} was issued and written to {}, but {e:#}",
                    c.names.join(", "),
                    c.dir.display()
                );
            }
        }
        if let Some(hook) = &self.hooks.batch
            && !self.changed.is_empty()
        {
            out.ran += 1;
            let env = batch_env(&self.changed, ca, file, report);
            if let Err(e) = run_hook("batch hook", hook, "batch", &env, self.hooks.timeout).await {
                out.failed += 1;
                tracing::error!("{e:#}");
            }
        }
        out
    }
}

/// The batch hook's variables: one line per changed certificate in the lists.
fn batch_env(
    changed: &[Changed],
    ca: &str,
    file: &Path,
    report: Option<&Path>,
) -> Vec<(&'static str, String)> {
    let lines =
        |f: &dyn Fn(&Changed) -> String| changed.iter().map(f).collect::<Vec<_>>().join("\n");
    let mut env = vec![
        ("CERTFLEET_EVENT", "batch".to_owned()),
        ("CERTFLEET_BATCH_FILE", file.display().to_string()),
        ("CERTFLEET_CHANGED_COUNT", changed.len().to_string()),
        (
            "CERTFLEET_CHANGED_DIRS",
            lines(&|c| c.dir.display().to_string()),
        ),
        ("CERTFLEET_CHANGED_NAMES", lines(&|c| c.names.join(" "))),
        ("CERTFLEET_CA", ca.to_owned()),
    ];
    if let Some(r) = report {
        env.push(("CERTFLEET_REPORT", r.display().to_string()));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batch_hook_gets_one_line_per_changed_certificate() {
        let c = |n: &str| Changed {
            names: vec![n.to_owned(), format!("www.{n}")],
            dir: PathBuf::from(format!("/certs/{n}")),
            serial: "01".into(),
            not_after: OffsetDateTime::UNIX_EPOCH,
            key_ref: String::new(),
        };
        let env = batch_env(
            &[c("a.test"), c("b.test")],
            "https://ca/dir",
            Path::new("/b.toml"),
            Some(Path::new("/r.json")),
        );
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("CERTFLEET_CHANGED_COUNT"), Some("2"));
        assert_eq!(
            get("CERTFLEET_CHANGED_DIRS"),
            Some("/certs/a.test\n/certs/b.test")
        );
        assert_eq!(
            get("CERTFLEET_CHANGED_NAMES"),
            Some("a.test www.a.test\nb.test www.b.test")
        );
        assert_eq!(get("CERTFLEET_REPORT"), Some("/r.json"));
        assert_eq!(get("CERTFLEET_EVENT"), Some("batch"));
    }
}
