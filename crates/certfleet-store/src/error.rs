//! [`StoreError`] for the state store (shared by every backend) and [`LimitsError`] for
//! rate-limit configuration.

use std::path::PathBuf;

use crate::store::{FencingToken, JobId, JobStatus, RunHolder};

/// Everything a [`StateStore`](crate::StateStore) operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another run holds the store's exclusive run lock.
    #[error(
        "the state store {location} is in use by another run: {holder}; wait for it to finish \
         or stop it"
    )]
    Locked {
        location: String,
        holder: Box<RunHolder>,
    },

    /// The store was written by a newer certfleet with a schema this one does not know.
    #[error(
        "the state store {location} has schema version {found}, newer than version \
         {supported} that this certfleet understands; upgrade certfleet"
    )]
    SchemaTooNew {
        location: String,
        found: i64,
        supported: i64,
    },

    /// A write carried a fencing token that is no longer current: the job's lease was taken
    /// over by another claim, so this writer must stop working on the job.
    #[error(
        "job {job}: write refused, the lease with fencing token {presented} is stale (the job \
         is now held with token {current} by {holder})"
    )]
    Fenced {
        job: JobId,
        presented: FencingToken,
        current: FencingToken,
        holder: String,
    },

    /// A job update asked for a transition the state machine does not allow.
    #[error("job {job}: invalid transition from {from} to {to}")]
    InvalidTransition {
        job: JobId,
        from: JobStatus,
        to: JobStatus,
    },

    /// An update is inconsistent on its own (for example `deferred` without a time).
    #[error("job {job}: invalid update: {detail}")]
    InvalidUpdate { job: JobId, detail: &'static str },

    /// The job does not exist.
    #[error("job {0} does not exist")]
    NoSuchJob(JobId),

    /// A stored value could not be decoded (the database was edited or is corrupt).
    #[error("the state store {location} holds an invalid value: {detail}")]
    Corrupt { location: String, detail: String },

    /// The database engine failed.
    #[error("state store {location}: {source}")]
    Database {
        location: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A file next to the database (directory, lock file) could not be used.
    #[error("state store {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The backend does not keep what was asked for (a single-host store and a fleet
    /// operation).
    #[error("the state store {location} does not support {what}; use a server-backed store")]
    Unsupported {
        location: String,
        what: &'static str,
    },

    /// The store's worker is gone (it panicked or the store was closed).
    #[error("the state store {location} is closed")]
    Closed { location: String },
}

/// Rate-limit configuration that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitsError {
    #[error("unknown rate-limit preset {0:?} (expected letsencrypt, letsencrypt-staging or none)")]
    UnknownPreset(String),
    #[error("invalid rate limit {name}: {detail}")]
    Invalid { name: String, detail: String },
}
