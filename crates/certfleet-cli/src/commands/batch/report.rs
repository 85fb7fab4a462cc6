//! The end of a run, a page of jobs at a time so memory stays flat for large batches: the
//! JSON report (`--report`), the renewal inventory entries the issuance hook could not
//! write, and the certificates that were not issued.

use std::path::Path;

use anyhow::{Context as _, Result};
use certfleet_batch::{BatchId, Job, JobId, JobStatus, StateStore};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Jobs per page read from the store.
const PAGE: usize = 500;

/// Not-issued certificates printed one per line; the rest are counted.
const MAX_PRINTED: usize = 100;

/// The batch's jobs in id order, a page at a time.
pub struct JobPages<'a> {
    store: &'a dyn StateStore,
    batch: BatchId,
    after: Option<JobId>,
    done: bool,
}

impl<'a> JobPages<'a> {
    pub fn new(store: &'a dyn StateStore, batch: BatchId) -> JobPages<'a> {
        JobPages {
            store,
            batch,
            after: None,
            done: false,
        }
    }

    /// The next page; `None` at the end. Bounded: every page advances past the last id.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Job>>> {
        if self.done {
            return Ok(None);
        }
        let page = self.store.list_jobs(self.batch, self.after, PAGE).await?;
        match page.last() {
            Some(last) => {
                self.after = Some(last.id);
                Ok(Some(page))
            }
            None => {
                self.done = true;
                Ok(None)
            }
        }
    }
}

/// The JSON report, built entry by entry (`up_to_date`: issued before this run and not due).
pub struct Report {
    body: Vec<u8>,
    entries: usize,
    run_started: OffsetDateTime,
}

impl Report {
    pub fn new(run_started: OffsetDateTime) -> Report {
        Report {
            body: b"{\n  \"certificates\": [".to_vec(),
            entries: 0,
            run_started,
        }
    }

    pub fn push(&mut self, j: &Job) -> Result<()> {
        let dir = j.issued.as_ref().map(|i| Path::new(&i.cert_dir).to_owned());
        let entry = json!({
            "names": j.spec.names,
            "line": j.spec.source_line,
            "state": j.status.as_str(),
            "up_to_date": j.status == JobStatus::Issued && j.updated_at < self.run_started,
            "cert_dir": dir.as_ref().map(|d| d.display().to_string()),
            "fullchain": dir.as_ref().map(|d| d.join("fullchain.pem").display().to_string()),
            "serial": j.issued.as_ref().map(|i| i.serial.clone()),
            "not_after": j.issued.as_ref().map(|i| rfc3339(i.not_after)),
            "order_url": j.order_url,
            "attempts": j.attempts,
            "error": if j.status == JobStatus::Issued { None } else { j.last_error.clone() },
            "deferred_until": j.deferred_until.map(rfc3339),
        });
        self.body
            .extend_from_slice(if self.entries == 0 { b"\n" } else { b",\n" });
        serde_json::to_writer(&mut self.body, &entry)?;
        self.entries += 1;
        Ok(())
    }

    /// Writes the report atomically.
    pub fn write(mut self, path: &Path) -> Result<()> {
        self.body.extend_from_slice(b"\n  ]\n}\n");
        certfleet_keys::fs::write_atomic(path, &self.body, 0o644)
            .with_context(|| format!("writing the report {}", path.display()))
    }
}

/// Prints certificates that were not issued, the first [`MAX_PRINTED`] in full.
#[derive(Default)]
pub struct NotIssued {
    count: usize,
}

impl NotIssued {
    pub fn note(&mut self, j: &Job) {
        self.count += 1;
        if self.count <= MAX_PRINTED {
            let until = match (j.status, j.deferred_until) {
                (JobStatus::Deferred, Some(t)) => format!(" until {}", rfc3339(t)),
                _ => String::new(),
            };
            eprintln!(
                "{}: {}{until}{}",
                j.spec.names.join(","),
                j.status,
                j.last_error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
        }
    }

    pub fn finish(&self) {
        if self.count > MAX_PRINTED {
            eprintln!(
                "… and {} more not issued (see --report or `certfleet batch status --jobs`)",
                self.count - MAX_PRINTED
            );
        }
    }
}

/// RFC 3339 to the second.
pub(super) fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}
