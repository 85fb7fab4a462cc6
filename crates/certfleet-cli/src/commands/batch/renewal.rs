//! Running a batch again renews its certificates that are due: ARI when the CA offers
//! `renewalInfo` (a stable point inside the CA's window), else a third of the lifetime
//! left — the same decision as `certfleet renew`. Due jobs go back to `queued` keeping the
//! certificate they replace; the job driver orders with `replaces` from its meta.json.

use std::path::Path;

use anyhow::Result;
use certfleet_acme::AcmeClient;
use certfleet_batch::{BatchId, Job, JobId, JobStatus, StateStore};
use certfleet_issue::output::CertificateMeta;
use certfleet_issue::renewal::{RenewalDecision, RenewalWindows, decide};
use futures::StreamExt as _;
use time::OffsetDateTime;

/// renewalInfo requests in flight at once while checking a large batch.
const ARI_CONCURRENCY: usize = 16;

/// What the check found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RenewalCheck {
    /// Issued earlier and due now: queued again.
    pub requeued: usize,
    /// Issued earlier and not due.
    pub up_to_date: usize,
}

impl std::ops::AddAssign for RenewalCheck {
    fn add_assign(&mut self, other: RenewalCheck) {
        self.requeued += other.requeued;
        self.up_to_date += other.up_to_date;
    }
}

/// Requeues the issued certificates among `jobs` that are due.
pub async fn requeue_due(
    client: &AcmeClient,
    store: &dyn StateStore,
    batch: BatchId,
    jobs: &[Job],
) -> Result<RenewalCheck> {
    let now = OffsetDateTime::now_utc();
    let issued: Vec<&Job> = jobs
        .iter()
        .filter(|j| j.status == JobStatus::Issued)
        .collect();
    let windows = RenewalWindows::default();
    let windows = &windows;
    let due: Vec<Option<JobId>> = futures::stream::iter(issued.iter().copied())
        .map(|job| async move {
            is_due(client, store, job, now, windows)
                .await
                .then_some(job.id)
        })
        .buffer_unordered(ARI_CONCURRENCY)
        .collect()
        .await;
    windows.finish();
    let due: Vec<JobId> = due.into_iter().flatten().collect();
    let requeued = if due.is_empty() {
        0
    } else {
        store.requeue_issued(batch, &due, now).await?
    };
    Ok(RenewalCheck {
        requeued,
        up_to_date: issued.len() - requeued,
    })
}

/// Whether an issued job's certificate is due. On a fleet's store the decision comes from
/// the stored bundle, never from this host's files (the certificate may have been issued on
/// another host); a certificate without a stored bundle is read from its directory, and
/// there a directory that cannot be read (moved, deleted) is due on a single-host store —
/// the batch promises the certificate is there — but not on a fleet's.
async fn is_due(
    client: &AcmeClient,
    store: &dyn StateStore,
    job: &Job,
    now: OffsetDateTime,
    windows: &RenewalWindows,
) -> bool {
    let Some(issued) = &job.issued else {
        return false;
    };
    let first = job.spec.names.first().map_or("?", String::as_str);
    let stored = match store.bundle(job.id).await {
        Ok(b) => b.and_then(|b| serde_json::from_str::<CertificateMeta>(&b.meta_json).ok()),
        Err(e) => {
            // Unknown is not due: a store that cannot answer must not cause a re-issue.
            tracing::warn!("{first}: cannot read the stored certificate ({e}); not renewing now");
            return false;
        }
    };
    let meta = match stored {
        Some(m) => m,
        None => match CertificateMeta::read(Path::new(&issued.cert_dir)) {
            Ok(m) => m,
            Err(e) if store.shares_bundles() => {
                tracing::warn!(
                    "{first}: no stored bundle and {e}; issued on another node, deciding by \
                     its recorded lifetime"
                );
                return lifetime_due(now, issued.not_after);
            }
            Err(e) => {
                tracing::warn!("{first}: {e}; issuing it again");
                return true;
            }
        },
    };
    let window = windows
        .window(client, meta.ari_cert_id.as_deref(), first)
        .await;
    match decide(
        now,
        meta.not_before,
        meta.not_after,
        window.as_ref(),
        &meta.serial,
    ) {
        RenewalDecision::Due(why) => {
            tracing::info!("{first}: renewing: {why}");
            true
        }
        RenewalDecision::NotYet { renew_at, .. } => {
            tracing::debug!("{first}: up to date; renews from {renew_at}");
            false
        }
    }
}

/// Due when less than a third of a 90-day lifetime is left (no notBefore known).
fn lifetime_due(now: OffsetDateTime, not_after: OffsetDateTime) -> bool {
    not_after - now < time::Duration::days(30)
}
