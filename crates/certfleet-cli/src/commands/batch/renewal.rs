//! Running a batch again renews its certificates that are due: ARI when the CA offers
//! `renewalInfo` (a stable point inside the CA's window), else a third of the lifetime
//! left — the same decision as `certfleet renew`. Due jobs go back to `queued` keeping the
//! certificate they replace; the job driver orders with `replaces` from its meta.json.

use std::path::Path;

use anyhow::Result;
use certfleet_acme::{AcmeClient, CertId};
use certfleet_batch::{BatchId, Job, JobId, JobStatus, StateStore};
use certfleet_issue::output::CertificateMeta;
use certfleet_issue::renewal::{RenewalDecision, decide};
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
    let due: Vec<Option<JobId>> = futures::stream::iter(issued.iter().copied())
        .map(|job| async move { is_due(client, job, now).await.then_some(job.id) })
        .buffer_unordered(ARI_CONCURRENCY)
        .collect()
        .await;
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

/// Whether an issued job's certificate is due. A certificate directory that cannot be
/// read (moved, deleted) is due: the batch promises the certificate is there.
async fn is_due(client: &AcmeClient, job: &Job, now: OffsetDateTime) -> bool {
    let Some(issued) = &job.issued else {
        return false;
    };
    let first = job.spec.names.first().map_or("?", String::as_str);
    let meta = match CertificateMeta::read(Path::new(&issued.cert_dir)) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!("{first}: {e}; issuing it again");
            return true;
        }
    };
    let cert_id = meta
        .ari_cert_id
        .as_deref()
        .and_then(|id| id.parse::<CertId>().ok());
    let window = match (&cert_id, client.directory().renewal_info.is_some()) {
        (Some(id), true) => match client.renewal_info(id).await {
            Ok(info) => Some(info.window),
            Err(e) => {
                tracing::warn!(
                    "{first}: renewal info unavailable ({e}); using the certificate's lifetime"
                );
                None
            }
        },
        _ => None,
    };
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
