//! Groundwork of the batch orchestrator: batch input, durable state, the rate governor
//! and the planner.
//!
//! - [`batch_file`]: the batch input (TOML with defaults and `[[cert]]` entries, or a plain
//!   list), validated whole with every problem reported with its line.
//! - [`StateStore`] (from `certfleet-store`): durable jobs (a persisted state machine with
//!   leases and fencing tokens), rate buckets and issuance history. The contract every
//!   backend keeps is in [`store`]; the backends (`certfleet-store-sqlite`,
//!   `certfleet-store-postgres`) are picked by the CLI.
//! - [`governor`]: Let's Encrypt-style token buckets (GCRA, [`gcra`]) persisted in the
//!   store, proactive reservations and reactive pauses from `rateLimited` 429s and 503s.
//! - [`plan`]: how many orders a batch needs and the earliest finish under the limits.
//! - [`Orchestrator`]: the run: claims jobs under leases, drives each order on its own
//!   task under the run's bounds ([`slots`]: work slots, pending authorizations, per DNS
//!   zone; waiting orders hold no work slot), coalesces dns-01 records of
//!   concurrent orders ([`zone_batcher`]), consults the governor before every new order
//!   and feeds it every 429/503.
//!
//! The groundwork modules neither sleep nor read the clock (every time-dependent call takes
//! `now`); only the orchestrator and its job drivers do.
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
mod error;
pub mod governor;
mod job_driver;
pub mod kek;
mod limits;
pub mod orchestrator;
mod order_gate;
pub mod plan;
pub mod slots;
pub mod zone_batcher;

/// The store seam and rate buckets live in `certfleet-store`; re-exported so the
/// orchestrator's users name one crate.
pub use certfleet_store::{gcra, store};

pub use certfleet_issue::MIN_POLL_INTERVAL;
pub use error::{BatchFileError, Diagnostic, LimitsError, RunError, StoreError};
pub use limits::{Limits, Preset, format_duration, parse_duration};
pub use orchestrator::{
    DEFAULT_CONCURRENCY, IssuedHook, Orchestrator, OrchestratorConfig, RunKeys, RunSolvers,
    RunSummary, WindowHook,
};
pub use slots::DEFAULT_PENDING_AUTHORIZATIONS;
pub use store::{
    BatchId, BatchRecord, ClaimRequest, ClaimedJob, FencingToken, IssuanceRecord, IssuedCert, Job,
    JobId, JobSpec, JobStatus, JobUpdate, Lease, LeaseInfo, NewBatch, NewJob, RunGuard, RunHolder,
    SCHEMA_VERSION, StateStore, StatusCounts, TakeOutcome,
};
