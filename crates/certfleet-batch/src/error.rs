//! The crate's error types: [`StoreError`] for the state store (shared by every backend),
//! [`BatchFileError`] for batch input, [`LimitsError`] for rate-limit configuration.

use std::fmt;
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

    /// The store's worker is gone (it panicked or the store was closed).
    #[error("the state store {location} is closed")]
    Closed { location: String },
}

/// One problem found in a batch file, with its 1-based line (and column when known).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub line: usize,
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.column {
            Some(c) => write!(f, "line {}, column {}: {}", self.line, c, self.message),
            None => write!(f, "line {}: {}", self.line, self.message),
        }
    }
}

/// A batch file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BatchFileError {
    #[error("cannot read the batch file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Every problem found, in line order; nothing may be started.
    #[error("{source_name}: {} problem(s):\n{}", problems.len(), DiagnosticList(problems))]
    Invalid {
        source_name: String,
        problems: Vec<Diagnostic>,
    },
}

struct DiagnosticList<'a>(&'a [Diagnostic]);

impl fmt::Display for DiagnosticList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "  {d}")?;
        }
        Ok(())
    }
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

/// Why a batch run (or one step of a job) stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An ACME, CSR, solver or certificate error of one job's step.
    #[error(transparent)]
    Issue(#[from] certfleet_issue::IssueError),
    #[error(transparent)]
    Key(#[from] certfleet_keys::KeyError),
    /// A coalesced DNS-01 present, propagation check or cleanup failed for every order in
    /// the round.
    #[error("dns-01: {0}")]
    Dns01(std::sync::Arc<certfleet_dns01::Dns01Error>),
    /// The job needs a solver the run was not given.
    #[error("job {job}: no {challenge} solver is configured for this run")]
    NoSolver { job: JobId, challenge: String },
    /// The stored job cannot be carried out as written.
    #[error("job {job}: {detail}")]
    InvalidJob { job: JobId, detail: String },
    /// The zone batcher is gone (the run is shutting down).
    #[error("the dns-01 batcher has stopped")]
    BatcherClosed,
    /// A job task panicked or was cancelled.
    #[error("job task ended abnormally: {0}")]
    Task(String),
}

impl From<certfleet_acme::AcmeError> for RunError {
    fn from(e: certfleet_acme::AcmeError) -> Self {
        RunError::Issue(certfleet_issue::IssueError::from(e))
    }
}

impl RunError {
    /// The ACME error inside, if any.
    pub fn acme(&self) -> Option<&certfleet_acme::AcmeError> {
        match self {
            RunError::Issue(certfleet_issue::IssueError::Acme(e)) => Some(e),
            _ => None,
        }
    }
}
