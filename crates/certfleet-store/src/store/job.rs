//! The persisted job: its state machine, the update a leaseholder writes, identifiers.

use std::fmt;
use std::str::FromStr;

use std::path::PathBuf;

use certfleet_keys::{KeyAlgorithm, KeyRef};
use certfleet_request::ChallengeKind;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::StoreError;

/// A batch in the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BatchId(pub i64);

/// A job (one certificate) in the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobId(pub i64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Fencing token of a lease: strictly increasing per job, bumped by every claim. A write
/// carrying an older token than the job's current one is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FencingToken(pub i64);

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where a job is in its life. The happy path is
/// `queued → ordering → authorizing → validating → finalizing → issued`; `failed` is
/// terminal until a new run re-queues it; `deferred` waits until
/// [`Job::deferred_until`] and then resumes at [`Job::resume_status`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Nothing sent yet.
    Queued,
    /// About to send (or sent) newOrder; the order URL is not known yet.
    Ordering,
    /// The order exists ([`Job::order_url`], [`Job::authorization_urls`] are set);
    /// fetching authorizations and presenting challenges.
    Authorizing,
    /// Challenges answered (or about to be); polling authorizations.
    Validating,
    /// Finalize sent (or about to be) with the certificate key [`Job::cert_key`]; polling
    /// the order and downloading.
    Finalizing,
    /// The certificate is on disk ([`Job::issued`]).
    Issued,
    /// Given up ([`Job::last_error`]); never used for rate limits.
    Failed,
    /// Waiting for a rate limit, a 503 or a retry backoff.
    Deferred,
}

impl JobStatus {
    /// Every status, in life-cycle order.
    pub const ALL: [JobStatus; 8] = [
        JobStatus::Queued,
        JobStatus::Ordering,
        JobStatus::Authorizing,
        JobStatus::Validating,
        JobStatus::Finalizing,
        JobStatus::Issued,
        JobStatus::Failed,
        JobStatus::Deferred,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Ordering => "ordering",
            JobStatus::Authorizing => "authorizing",
            JobStatus::Validating => "validating",
            JobStatus::Finalizing => "finalizing",
            JobStatus::Issued => "issued",
            JobStatus::Failed => "failed",
            JobStatus::Deferred => "deferred",
        }
    }

    /// `issued` or `failed`.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Issued | JobStatus::Failed)
    }

    /// A status that talks to the CA (`ordering` … `finalizing`).
    pub fn is_active(self) -> bool {
        matches!(
            self,
            JobStatus::Ordering
                | JobStatus::Authorizing
                | JobStatus::Validating
                | JobStatus::Finalizing
        )
    }

    /// Is `self → to` allowed? Active statuses may repeat (a new attempt), fall back to
    /// `ordering` (the order went invalid: a new order follows), be deferred or fail.
    /// `deferred` resumes at any non-terminal status; `issued` and `failed` can only be
    /// re-queued (a renewal, or a retry asked for by a new run).
    /// Every status that may become `self` ([`JobStatus::can_become`]): what a store's
    /// fenced write accepts as the current status, checked in the write itself.
    pub fn reachable_from(self) -> impl Iterator<Item = JobStatus> {
        JobStatus::ALL
            .into_iter()
            .filter(move |from| from.can_become(self))
    }

    pub fn can_become(self, to: JobStatus) -> bool {
        use JobStatus::*;
        match (self, to) {
            (Issued | Failed, Queued) => true,
            (Issued | Failed, _) => false,
            (_, Failed | Deferred) => true,
            (Queued, Ordering) => true,
            (Queued, _) => false,
            (Deferred, to) => !to.is_terminal(),
            (Ordering, Ordering | Authorizing) => true,
            (Authorizing, Ordering | Authorizing | Validating | Finalizing) => true,
            (Validating, Ordering | Validating | Finalizing) => true,
            (Finalizing, Ordering | Finalizing | Issued) => true,
            _ => false,
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<JobStatus, String> {
        JobStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown job status {s:?}"))
    }
}

/// What to issue: persisted with the job as JSON, so a resumed run (or another node)
/// needs nothing but the store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobSpec {
    /// Normalized DNS names, first = the certificate's directory name.
    pub names: Vec<String>,
    /// The certificate key (`file:…`, `pkcs11:…`, `tpm:…`), or
    pub key: Option<KeyRef>,
    /// the algorithm of a key to generate.
    pub key_algorithm: Option<KeyAlgorithm>,
    pub challenge: Option<ChallengeKind>,
    pub dns_plugin: Option<String>,
    pub profile: Option<String>,
    /// Parent of the certificate directory (`<output_dir>/<first name>`).
    pub output_dir: Option<PathBuf>,
    /// ARI CertID of the certificate this one replaces (renewals).
    pub replaces: Option<String>,
    /// Line of the batch file the job came from.
    pub source_line: Option<usize>,
    /// Issuer CN of the chain to prefer (left out when unset, so the digest of batches
    /// written before it existed stays the same).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_chain: Option<String>,
}

/// A job to add to a batch. `key` identifies it within the batch: adding a job whose key
/// exists is a no-op, so re-running the same batch file resumes instead of duplicating.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewJob {
    pub key: String,
    pub spec: JobSpec,
}

/// The certificate an issued job produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCert {
    /// Serial number, lowercase hex.
    pub serial: String,
    pub not_after: OffsetDateTime,
    /// Directory the certificate was written to (on the issuing node).
    pub cert_dir: String,
    /// The node that issued it (left out when unknown: certificates issued before it
    /// was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// Who holds a job's lease right now (as stored; see [`crate::Lease`] for the holder's copy).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    pub node: String,
    pub expires_at: OffsetDateTime,
}

/// A job as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub id: JobId,
    pub batch: BatchId,
    pub key: String,
    pub spec: JobSpec,
    pub status: JobStatus,
    /// Set from `authorizing` on; kept across deferrals so a resumed job continues the
    /// same order.
    pub order_url: Option<String>,
    pub authorization_urls: Vec<String>,
    /// Reference of the certificate key, written before finalize.
    pub cert_key: Option<String>,
    /// Attempts counted by the orchestrator ([`JobUpdate::attempt`]).
    pub attempts: u32,
    pub last_error: Option<String>,
    /// Set while `deferred`.
    pub deferred_until: Option<OffsetDateTime>,
    /// The status a deferred job resumes at.
    pub resume_status: Option<JobStatus>,
    /// Current lease, if any (possibly expired).
    pub lease: Option<LeaseInfo>,
    /// The job's current fencing token.
    pub fence: FencingToken,
    pub issued: Option<IssuedCert>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// One write by the leaseholder. Build it with [`JobUpdate::to`] and the setters; fields
/// left `None` keep their stored value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobUpdate {
    pub status: JobStatus,
    pub order_url: Option<String>,
    pub authorization_urls: Option<Vec<String>>,
    /// Forget the order (URL and authorizations) because it went invalid or was never
    /// created; applied before `order_url`/`authorization_urls`.
    pub clear_order: bool,
    pub cert_key: Option<String>,
    /// Required with `deferred` (with `resume_status`); cleared by any other status.
    pub deferred_until: Option<OffsetDateTime>,
    pub resume_status: Option<JobStatus>,
    /// `Some` sets the last error; kept otherwise (cleared on `issued`).
    pub last_error: Option<String>,
    /// Count one more attempt.
    pub count_attempt: bool,
    /// Required with `issued`.
    pub issued: Option<IssuedCert>,
    /// Only with `issued`: the certificate's row of the issuance history, written in the
    /// same transaction as the status (a crash cannot leave one without the other).
    pub issuance: Option<super::IssuanceRecord>,
}

impl JobUpdate {
    /// An update to `status` that changes nothing else.
    pub fn to(status: JobStatus) -> JobUpdate {
        JobUpdate {
            status,
            order_url: None,
            authorization_urls: None,
            clear_order: false,
            cert_key: None,
            deferred_until: None,
            resume_status: None,
            last_error: None,
            count_attempt: false,
            issued: None,
            issuance: None,
        }
    }

    /// `authorizing` with the order just created.
    pub fn order_created(order_url: impl Into<String>, authorizations: Vec<String>) -> JobUpdate {
        let mut u = JobUpdate::to(JobStatus::Authorizing);
        u.order_url = Some(order_url.into());
        u.authorization_urls = Some(authorizations);
        u
    }

    /// `deferred` by the client's own rate governor (waiting for tokens of `bucket`), not by
    /// the CA: a later run re-evaluates it under its own limits
    /// ([`crate::StateStore::redue_governed`]).
    pub fn governed(until: OffsetDateTime, resume: JobStatus, bucket: &str) -> JobUpdate {
        JobUpdate::deferred(until, resume, format!("{GOVERNOR_DEFERRAL}{bucket}"))
    }

    /// `deferred` until `until`, then resume at `resume`.
    pub fn deferred(until: OffsetDateTime, resume: JobStatus, why: impl Into<String>) -> JobUpdate {
        let mut u = JobUpdate::to(JobStatus::Deferred);
        u.deferred_until = Some(until);
        u.resume_status = Some(resume);
        u.last_error = Some(why.into());
        u
    }

    /// `finalizing` with the certificate key that signs the CSR.
    pub fn finalizing(cert_key: impl Into<String>) -> JobUpdate {
        let mut u = JobUpdate::to(JobStatus::Finalizing);
        u.cert_key = Some(cert_key.into());
        u
    }

    /// `issued`.
    pub fn issued(cert: IssuedCert) -> JobUpdate {
        let mut u = JobUpdate::to(JobStatus::Issued);
        u.issued = Some(cert);
        u
    }

    /// Also record the certificate in the issuance history (with `issued` only).
    pub fn recording(mut self, issuance: super::IssuanceRecord) -> JobUpdate {
        self.issuance = Some(issuance);
        self
    }

    /// `failed` with its reason.
    pub fn failed(why: impl Into<String>) -> JobUpdate {
        let mut u = JobUpdate::to(JobStatus::Failed);
        u.last_error = Some(why.into());
        u
    }

    /// Also count an attempt.
    pub fn attempt(mut self) -> JobUpdate {
        self.count_attempt = true;
        self
    }

    /// Also forget the current order.
    pub fn clear_order(mut self) -> JobUpdate {
        self.clear_order = true;
        self
    }

    /// Also record an error.
    pub fn error(mut self, why: impl Into<String>) -> JobUpdate {
        self.last_error = Some(why.into());
        self
    }

    /// The checks every store makes before it writes this update to `job` in status
    /// `from` (`None`: the store checks the transition in its write and calls again with the
    /// status it found when nothing matched): the update on its own, then the transition.
    pub fn check_write(&self, job: JobId, from: Option<JobStatus>) -> Result<(), StoreError> {
        self.check()
            .map_err(|detail| StoreError::InvalidUpdate { job, detail })?;
        match from {
            Some(from) if !from.can_become(self.status) => Err(StoreError::InvalidTransition {
                job,
                from,
                to: self.status,
            }),
            _ => Ok(()),
        }
    }

    /// The update's JSON columns as every store keeps them (`authz_urls`, `issued`): `None`
    /// where the update leaves the column as it is. `location` names the store in errors.
    pub fn json_columns(
        &self,
        location: &str,
    ) -> Result<(Option<String>, Option<String>), StoreError> {
        let authz = self
            .authorization_urls
            .as_ref()
            .map(|a| encode_json(a, location))
            .transpose()?;
        let issued = self
            .issued
            .as_ref()
            .map(|i| encode_json(i, location))
            .transpose()?;
        Ok((authz, issued))
    }

    /// Whether the job stays leased after this update: not when it ends or is deferred (any
    /// node takes it up when it is due).
    pub fn keeps_lease(&self) -> bool {
        !(self.status.is_terminal() || self.status == JobStatus::Deferred)
    }

    /// Checks the update on its own; `Err` names what is wrong.
    pub fn check(&self) -> Result<(), &'static str> {
        match self.status {
            JobStatus::Deferred if self.deferred_until.is_none() => {
                Err("deferred needs deferred_until")
            }
            JobStatus::Deferred
                if self
                    .resume_status
                    .is_none_or(|s| s.is_terminal() || s == JobStatus::Deferred) =>
            {
                Err("deferred needs a non-terminal resume_status other than deferred")
            }
            JobStatus::Issued if self.issued.is_none() => Err("issued needs the certificate"),
            s if s != JobStatus::Issued && self.issuance.is_some() => {
                Err("an issuance record goes only with issued")
            }
            s if s != JobStatus::Deferred && self.deferred_until.is_some() => {
                Err("deferred_until is only for deferred")
            }
            _ => Ok(()),
        }
    }
}

/// How the `last_error` of a job deferred by the client's rate governor starts (see
/// [`JobUpdate::governed`]).
pub const GOVERNOR_DEFERRAL: &str = "waiting for rate limit ";

/// A value as the JSON text a store keeps; `location` names the store in the error.
pub fn encode_json<T: Serialize>(value: &T, location: &str) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt {
        location: location.to_owned(),
        detail: format!("cannot encode a value: {e}"),
    })
}
