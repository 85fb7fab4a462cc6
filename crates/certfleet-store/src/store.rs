//! The durable state of batches: the [`StateStore`] trait, shared by the embedded SQLite
//! store (`certfleet-store-sqlite`) and the server-backed store (`certfleet-store-postgres`,
//! several orchestrator nodes on one batch).
//!
//! # The contract
//! **Write before the network step.** Every job is a persisted state machine
//! ([`JobStatus`]). The orchestrator writes the status that names a network step *before*
//! taking it, and writes what the step returned *before* the next one:
//! - `ordering` before sending newOrder (a crash here costs at most one extra order);
//! - `authorizing` with the order URL and authorization URLs as soon as newOrder returns,
//!   before any authorization is fetched — from then on a resumed job continues **the same
//!   order** and never creates another;
//! - `validating` before responding to challenges;
//! - `finalizing` with the certificate key reference before sending finalize — a resumed
//!   job first re-reads the order and finalizes only if it is still `ready`, so a name set
//!   is finalized at most once;
//! - `issued` after the certificate is on disk; `deferred` (with the time and the status to
//!   resume at) whenever a rate limit, a 503 or a backoff says "later" — rate limits never
//!   make a job `failed`.
//!
//! **Leases and fencing.** Work is taken with [`StateStore::claim_jobs`]: each claimed job
//! gets a [`Lease`] (node, expiry) and a new [`FencingToken`], strictly greater than any
//! before it for that job. Every later write ([`StateStore::update_job`],
//! [`StateStore::renew_lease`], [`StateStore::release_job`]) carries the lease and is
//! refused with [`StoreError::Fenced`] when the job has been claimed again since, so a node
//! that lost its lease (paused, partitioned, killed and restarted) cannot overwrite the new
//! owner's progress. A job whose lease has expired is claimable by anyone and continues
//! from its stored status and order URL. Writes under an expired but not yet re-claimed
//! lease are accepted (no other owner exists to protect).
//!
//! **Run lock.** [`StateStore::begin_run`] starts a run. A single-writer store (SQLite)
//! grants it to one process at a time, refuses others with [`StoreError::Locked`] naming
//! the holder (node, pid, host, start time), and — because no other writer can be alive —
//! ends the leases left by dead runs so their jobs can be claimed at once. A shared store
//! (PostgreSQL) registers the node and lets several runs work side by side; leases and
//! fencing then do the coordination.
//!
//! **Rate buckets.** [`StateStore::take_tokens`] debits several buckets atomically, all or
//! nothing, with the shared arithmetic of [`crate::gcra::decide`], so any number of nodes
//! together stay within one account's limits.
//!
//! The reusable conformance suite (`certfleet_store::conformance`, feature `conformance`)
//! checks all of this for any backend.

mod job;
mod shared;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use job::{
    BatchId, FencingToken, GOVERNOR_DEFERRAL, IssuedCert, Job, JobId, JobSpec, JobStatus,
    JobUpdate, LeaseInfo, NewJob, encode_json,
};
pub use shared::{Deployment, StoredBundle};

use crate::error::StoreError;
use crate::gcra::{BucketKey, DenyCause, TokenRequest};

/// The newest schema version this build reads and writes.
pub const SCHEMA_VERSION: i64 = 1;

/// Who runs: written into the run lock and into every lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunHolder {
    /// Unique per run: `host/pid/random`.
    pub node: String,
    pub pid: u32,
    pub host: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
}

impl RunHolder {
    /// This process on `host`, now (the caller finds the host name: libraries do not read
    /// the environment).
    pub fn this_process(now: OffsetDateTime, host: &str) -> RunHolder {
        let host = host.to_owned();
        let pid = std::process::id();
        let nonce = now.unix_timestamp_nanos() as u64 ^ u64::from(pid).rotate_left(32);
        RunHolder {
            node: format!("{host}/{pid}/{:08x}", nonce as u32),
            pid,
            host,
            started_at: now,
        }
    }
}

impl fmt::Display for RunHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let started = self
            .started_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| self.started_at.to_string());
        write!(
            f,
            "pid {} on host {} (node {}), started at {started}",
            self.pid, self.host, self.node
        )
    }
}

/// Proof of a started run; dropping it ends the run (releases the lock of a single-writer
/// store).
pub struct RunGuard {
    holder: RunHolder,
    _release: Box<dyn Send + Sync>,
}

impl RunGuard {
    /// A guard that runs nothing on drop but keeps `release` alive until then.
    pub fn new(holder: RunHolder, release: Box<dyn Send + Sync>) -> RunGuard {
        RunGuard {
            holder,
            _release: release,
        }
    }

    pub fn holder(&self) -> &RunHolder {
        &self.holder
    }
}

impl fmt::Debug for RunGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunGuard")
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

/// A batch to open: the same `name` and `digest` (of the validated input) resume it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewBatch {
    pub name: String,
    pub digest: String,
}

/// A stored batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchRecord {
    pub id: BatchId,
    pub name: String,
    pub digest: String,
    pub created_at: OffsetDateTime,
}

/// The holder's copy of a lease; every write about the job carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub job: JobId,
    pub node: String,
    pub token: FencingToken,
    pub expires_at: OffsetDateTime,
}

/// A job taken by [`StateStore::claim_jobs`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedJob {
    pub job: Job,
    pub lease: Lease,
}

/// What [`StateStore::claim_jobs`] may take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimRequest {
    pub batch: BatchId,
    pub node: String,
    pub now: OffsetDateTime,
    /// How long the lease lasts before others may take the job over.
    pub lease_for: Duration,
    pub max_jobs: usize,
}

/// Jobs per status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusCounts(pub BTreeMap<JobStatus, u64>);

impl StatusCounts {
    pub fn get(&self, status: JobStatus) -> u64 {
        self.0.get(&status).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

/// One issued certificate, for the governor (same-set renewal exemption) and reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuanceRecord {
    /// The name-set key of the certificate's names (`certfleet_batch::governor::NameSet::key`).
    pub name_set: String,
    pub names: Vec<String>,
    pub account: String,
    pub serial: String,
    pub issued_at: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub replaces: Option<String>,
}

/// The result of [`StateStore::take_tokens`] and [`StateStore::peek_tokens`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TakeOutcome {
    /// Taken (or, for a peek, would be taken now).
    Granted,
    /// Not before `retry_at` (`None`: never, the cost exceeds the bucket) because of `key`.
    Wait {
        key: BucketKey,
        cause: DenyCause,
        retry_at: Option<OffsetDateTime>,
    },
}

/// Durable state of batches, jobs, rate buckets and issuance history. Object-safe; see the
/// [module documentation](self) for the contract every backend keeps.
#[async_trait]
pub trait StateStore: Send + Sync + fmt::Debug {
    /// Where the store lives, for messages (never contains a password).
    fn location(&self) -> String;

    /// Starts a run for `holder`. Single-writer stores refuse a second concurrent run with
    /// [`StoreError::Locked`] and end leases of earlier (dead) runs.
    async fn begin_run(&self, holder: &RunHolder) -> Result<RunGuard, StoreError>;

    /// Marks the run ended (written before the process exits; dropping the guard alone
    /// may race the exit).
    async fn end_run(&self, holder: &RunHolder) -> Result<(), StoreError> {
        let _ = holder;
        Ok(())
    }

    /// Opens the batch with this name and digest, creating it if needed; `true` if created.
    async fn open_batch(
        &self,
        batch: &NewBatch,
        now: OffsetDateTime,
    ) -> Result<(BatchRecord, bool), StoreError>;

    /// All batches, oldest first.
    async fn batches(&self) -> Result<Vec<BatchRecord>, StoreError>;

    /// Adds jobs as `queued`; keys that exist in the batch are skipped. Returns how many
    /// were added.
    async fn add_jobs(
        &self,
        batch: BatchId,
        jobs: &[NewJob],
        now: OffsetDateTime,
    ) -> Result<usize, StoreError>;

    /// Claims up to `max_jobs` jobs that are `queued`, `deferred` with `deferred_until <=
    /// now`, or active with no lease or an expired one — oldest due first. Each gets a
    /// lease to `node` until `now + lease_for` and a new fencing token. Statuses are not
    /// changed (a claimed deferred job is resumed by the orchestrator's next update).
    async fn claim_jobs(&self, req: &ClaimRequest) -> Result<Vec<ClaimedJob>, StoreError>;

    /// Extends a lease to `now + lease_for` (same token); [`StoreError::Fenced`] if lost.
    async fn renew_lease(
        &self,
        lease: &Lease,
        now: OffsetDateTime,
        lease_for: Duration,
    ) -> Result<Lease, StoreError>;

    /// Gives a lease up without changing the job; [`StoreError::Fenced`] if already lost.
    async fn release_job(&self, lease: &Lease) -> Result<(), StoreError>;

    /// Applies `update` if `lease` is current (fencing) and the transition is allowed;
    /// returns the job as stored afterwards. The lease is kept unless the job became
    /// `issued`, `failed` or `deferred`.
    async fn update_job(
        &self,
        lease: &Lease,
        update: &JobUpdate,
        now: OffsetDateTime,
    ) -> Result<Job, StoreError>;

    /// One job.
    async fn job(&self, id: JobId) -> Result<Option<Job>, StoreError>;

    /// Jobs of a batch in id order, `limit` at a time after `after` (paging keeps memory
    /// flat for large batches).
    async fn list_jobs(
        &self,
        batch: BatchId,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<Job>, StoreError>;

    /// Jobs of a batch per status.
    async fn status_counts(&self, batch: BatchId) -> Result<StatusCounts, StoreError>;

    /// The earliest instant after `now` at which a job of the batch becomes claimable
    /// (a deferral ends or a lease expires); `None` if nothing is waiting.
    async fn next_due(
        &self,
        batch: BatchId,
        now: OffsetDateTime,
    ) -> Result<Option<OffsetDateTime>, StoreError>;

    /// Re-queues the batch's `failed` jobs (a new run retries them). Returns how many.
    async fn requeue_failed(
        &self,
        batch: BatchId,
        now: OffsetDateTime,
    ) -> Result<usize, StoreError>;

    /// Makes the batch's jobs deferred by the client's rate governor (`last_error` starting
    /// with [`GOVERNOR_DEFERRAL`]) due at `now`, so this run re-evaluates them under its
    /// current limits (a looser preset must not keep them waiting; a stricter one defers
    /// them again). Deferrals by the CA (429/503) and retry backoffs are kept. Returns how
    /// many.
    async fn redue_governed(
        &self,
        batch: BatchId,
        now: OffsetDateTime,
    ) -> Result<usize, StoreError>;

    /// Moves these jobs of the batch from `issued` back to `queued` so they are renewed,
    /// keeping [`Job::issued`] (the certificate the renewal replaces). Jobs in any other
    /// status, or of another batch, are left alone. Returns how many moved.
    async fn requeue_issued(
        &self,
        batch: BatchId,
        jobs: &[JobId],
        now: OffsetDateTime,
    ) -> Result<usize, StoreError>;

    /// Debits all `requests` atomically if every bucket allows it at `now`.
    async fn take_tokens(
        &self,
        requests: &[TokenRequest],
        now: OffsetDateTime,
    ) -> Result<TakeOutcome, StoreError>;

    /// [`StateStore::take_tokens`] and, when they are granted, [`StateStore::update_job`]
    /// as one transaction: the tokens are spent exactly when the job says so (a refused job
    /// write spends none), and a job that starts an order costs one store round trip, not
    /// two. `Some(job)` (as stored) when granted; a denial writes nothing.
    async fn take_tokens_writing(
        &self,
        requests: &[TokenRequest],
        lease: &Lease,
        update: &JobUpdate,
        now: OffsetDateTime,
    ) -> Result<(TakeOutcome, Option<Job>), StoreError>;

    /// What [`StateStore::take_tokens`] would answer, without writing.
    async fn peek_tokens(
        &self,
        requests: &[TokenRequest],
        now: OffsetDateTime,
    ) -> Result<TakeOutcome, StoreError>;

    /// Gives back tokens taken earlier (an order that was never created or never issued).
    async fn refund_tokens(
        &self,
        requests: &[TokenRequest],
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// Pauses a bucket's scope until `until` (keeps a later pause already stored).
    async fn pause(&self, key: &BucketKey, until: OffsetDateTime) -> Result<(), StoreError>;

    /// Stored state of one bucket (for status displays and tests).
    async fn bucket(&self, key: &BucketKey) -> Result<crate::gcra::BucketState, StoreError>;

    /// Records an issued certificate.
    async fn record_issuance(&self, record: &IssuanceRecord) -> Result<(), StoreError>;

    /// The latest issuance of this name set ([`IssuanceRecord::name_set`]).
    async fn last_issuance(&self, name_set: &str) -> Result<Option<IssuanceRecord>, StoreError>;

    /// Whether the store holds the bundles and keys of a fleet (a server-backed store):
    /// then decisions (due, up to date) come from [`StateStore::bundle`], never from files
    /// of the node that issued, and generated keys are stored sealed
    /// ([`StateStore::put_job_key`]). Single-host stores keep bundles on disk only.
    fn shares_bundles(&self) -> bool {
        false
    }

    /// Stores the bundle of the leaseholder's job, fenced like [`StateStore::update_job`]
    /// (a stale lease writes nothing). Replaces an earlier bundle of the job.
    async fn put_bundle(&self, lease: &Lease, bundle: &StoredBundle) -> Result<(), StoreError> {
        let _ = (lease, bundle);
        Err(StoreError::Unsupported {
            location: self.location(),
            what: "storing certificate bundles",
        })
    }

    /// The stored bundle of a job (`None`: none stored, or the store keeps none).
    async fn bundle(&self, job: JobId) -> Result<Option<StoredBundle>, StoreError> {
        let _ = job;
        Ok(None)
    }

    /// Stores the sealed key the leaseholder's job will finalize with, fenced.
    async fn put_job_key(&self, lease: &Lease, sealed: &[u8]) -> Result<(), StoreError> {
        let _ = (lease, sealed);
        Err(StoreError::Unsupported {
            location: self.location(),
            what: "storing sealed keys",
        })
    }

    /// The sealed key stored for a job.
    async fn job_key(&self, job: JobId) -> Result<Option<Vec<u8>>, StoreError> {
        let _ = job;
        Ok(None)
    }

    /// Records that `deployment.host` materialised a bundle (one row per job and host).
    async fn record_deployment(&self, deployment: &Deployment) -> Result<(), StoreError> {
        let _ = deployment;
        Ok(())
    }

    /// Where the jobs of a batch were deployed.
    async fn deployments(&self, batch: BatchId) -> Result<Vec<Deployment>, StoreError> {
        let _ = batch;
        Ok(Vec::new())
    }
}
