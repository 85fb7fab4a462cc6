use certfleet_acme::{AcmeError, Problem};
use certfleet_dns01::Dns01Error;
use certfleet_http01::Http01Error;
use certfleet_keys::KeyError;

/// Why an issuance did not produce a certificate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// Boxed: ACME errors carry whole problem documents, and errors travel through every
    /// `?` of the hot path.
    #[error(transparent)]
    Acme(Box<AcmeError>),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("http-01: {0}")]
    Http01(#[from] Http01Error),
    #[error("dns-01: {0}")]
    Dns01(#[from] Dns01Error),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error(
        "{name}: the CA offers no {wanted} challenge (offered: {offered}); choose another --challenge"
    )]
    ChallengeNotOffered {
        name: String,
        wanted: &'static str,
        offered: String,
    },
    #[error("{name}: {kind} validation failed: {problem}")]
    ValidationFailed {
        name: String,
        kind: &'static str,
        problem: Box<Problem>,
    },
    /// dns-persist-01 refused: the record this account needs (published, it authorizes
    /// every later order for the name).
    #[error(
        "{name}: dns-persist-01 validation failed: {problem}; the CA needs this TXT record for this account: {record} (publish it once: `certfleet persist records {name}` prints it; a record naming another account or CA does not count)"
    )]
    PersistRecordMissing {
        name: String,
        record: String,
        problem: Box<Problem>,
    },
    #[error("{name}: authorization is {status} (expected pending or valid)")]
    AuthorizationUnusable { name: String, status: String },
    #[error("order {url} became invalid{}", .problem.as_ref().map(|p| format!(": {p}")).unwrap_or_default())]
    OrderInvalid {
        url: String,
        problem: Option<Box<Problem>>,
    },
    #[error("gave up waiting for {what} at {url} after {attempts} polls ({waited_secs}s)")]
    PollTimeout {
        what: &'static str,
        url: String,
        attempts: u32,
        waited_secs: u64,
    },
    #[error("the CA returned a certificate that does not match the request: {detail}")]
    CertificateMismatch { detail: String },
    #[error("cannot read the issued certificate: {detail}")]
    BadCertificate { detail: String },
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<AcmeError> for IssueError {
    fn from(e: AcmeError) -> Self {
        IssueError::Acme(Box::new(e))
    }
}
