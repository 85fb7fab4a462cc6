//! A batch run that ends before its certificates are done on purpose: stopped by SIGINT or
//! SIGTERM (exit 130/143), or by `--max-wait` with nothing due soon (exit 75). The report
//! is already written; the message says how far the batch got and how to continue.

use std::time::Duration;

use anyhow::{Context as _, Result};
use certfleet_batch::{BatchId, JobStatus, StateStore, StatusCounts};
use time::OffsetDateTime;

use super::report::rfc3339;
use crate::cli::BatchRunArgs;
use crate::stop::{Exit, Stop};

/// Exit status of a run that `--max-wait` stopped (EX_TEMPFAIL: try again later).
pub const MAX_WAIT_EXIT: u8 = 75;

/// `--max-wait`, parsed.
pub fn max_wait(args: &BatchRunArgs) -> Result<Option<Duration>> {
    args.max_wait
        .as_deref()
        .map(|w| {
            certfleet_batch::parse_duration(w).with_context(|| {
                format!("--max-wait {w:?}: expected a duration such as 30s, 1m, 2h or 1d")
            })
        })
        .transpose()
}

/// `Err(Exit)` if the run was stopped by a signal or by `--max-wait`.
pub async fn early_exit(
    stop: &Stop,
    stopped_early: bool,
    counts: &StatusCounts,
    store: &dyn StateStore,
    batch: BatchId,
    args: &BatchRunArgs,
) -> Result<()> {
    let issued = counts.get(JobStatus::Issued);
    let report_note = args.report.as_ref().map_or_else(
        || " (no --report given)".to_owned(),
        |p| format!("; report written to {}", p.display()),
    );
    if let Some(signal) = stop.requested() {
        return Err(Exit(
            signal.0,
            format!(
                "batch stopped by {}: {issued} of {} certificates issued{report_note}; run the \
                 same command again to continue",
                signal.1,
                counts.total()
            ),
        )
        .into());
    }
    if stopped_early {
        let next = store.next_due(batch, OffsetDateTime::now_utc()).await?;
        return Err(Exit(
            MAX_WAIT_EXIT,
            format!(
                "nothing is due within --max-wait {}: {issued} of {} certificates issued, {} \
                 deferred, the next due at {}{report_note}; run the same command again then \
                 to continue",
                args.max_wait.as_deref().unwrap_or_default(),
                counts.total(),
                counts.get(JobStatus::Deferred),
                next.map_or_else(|| "(unknown)".to_owned(), rfc3339)
            ),
        )
        .into());
    }
    Ok(())
}
