//! Groundwork of the batch orchestrator: batch input, durable state, the rate governor
//! and the planner.
//!
//! - [`batch_file`]: the batch input (TOML with defaults and `[[cert]]` entries, or a plain
//!   list), validated whole with every problem reported with its line.
//! - [`StateStore`]: durable jobs (a persisted state machine with leases and fencing
//!   tokens), rate buckets and issuance history; [`SqliteStore`] is the embedded backend.
//!   The contract every backend keeps is in [`store`]; `conformance` (feature
//!   `conformance`) checks it.
//! - [`governor`]: Let's Encrypt-style token buckets (GCRA, [`gcra`]) persisted in the
//!   store, proactive reservations and reactive pauses from `rateLimited` 429s and 503s.
//! - [`plan`]: how many orders a batch needs and the earliest finish under the limits.
//!
//! Nothing here sleeps or reads the clock: every time-dependent call takes `now`.
//!
//! ```
//! use certfleet_batch::{batch_file::{BatchFile, ParseOptions}, plan, Limits, Preset};
//! let batch = BatchFile::parse_list("a.example.com www.a.example.com\nb.example.com\n",
//!     "list", &ParseOptions::default()).expect("valid");
//! let p = plan::plan(&batch.certs, &Limits::preset(Preset::LetsEncrypt),
//!     time::macros::datetime!(2026-01-01 0:00 UTC));
//! assert_eq!((p.orders, p.names), (2, 3));
//! ```

pub mod batch_file;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod error;
pub mod gcra;
pub mod governor;
mod limits;
pub mod plan;
mod sqlite;
pub mod store;

pub use error::{BatchFileError, Diagnostic, LimitsError, StoreError};
pub use limits::{Limits, Preset, format_duration, parse_duration};
pub use sqlite::{DB_FILE, LOCK_FILE, SqliteStore};
pub use store::{
    BatchId, BatchRecord, ClaimRequest, ClaimedJob, FencingToken, IssuanceRecord, IssuedCert, Job,
    JobId, JobSpec, JobStatus, JobUpdate, Lease, LeaseInfo, NewBatch, NewJob, RunGuard, RunHolder,
    SCHEMA_VERSION, StateStore, StatusCounts, TakeOutcome,
};
