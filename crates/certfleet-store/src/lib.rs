//! The batch state store seam: the [`StateStore`] trait and its contract ([`store`]), the
//! persisted job state machine, GCRA rate buckets ([`gcra`]), their errors, and (feature
//! `conformance`) the conformance suite every backend must pass. Backends:
//! `certfleet-store-sqlite` (embedded) and `certfleet-store-postgres` (several nodes). The
//! orchestrator (`certfleet-batch`) sees only the trait; the CLI picks the backend.
//!
//! This crate neither sleeps nor reads the clock: every time-dependent call takes `now`.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod duration;
mod error;
pub mod fence;
pub mod gcra;
pub mod store;

pub use error::{LimitsError, StoreError};
pub use store::{
    BatchId, BatchRecord, ClaimRequest, ClaimedJob, Deployment, FencingToken, GOVERNOR_DEFERRAL,
    IssuanceRecord, IssuedCert, Job, JobId, JobSpec, JobStatus, JobUpdate, Lease, LeaseInfo,
    NewBatch, NewJob, RunGuard, RunHolder, SCHEMA_VERSION, StateStore, StatusCounts, StoredBundle,
    TakeOutcome,
};
