//! The crate's error types: [`BatchFileError`] for batch input, [`RunError`] for a run;
//! [`StoreError`] and [`LimitsError`] come from `certfleet-store`.

use std::fmt;
use std::path::PathBuf;

pub use certfleet_store::{LimitsError, StoreError};

use crate::store::JobId;

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
    /// A sealed key could not be sealed or opened (the fleet's key-encryption key).
    #[error(transparent)]
    Kek(#[from] crate::kek::KekError),
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
