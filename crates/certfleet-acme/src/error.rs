//! The crate's one error type.

use certfleet_keys::KeyError;

use crate::{
    InvalidEabKey, InvalidIdentifier, OrderStatus, PollExhausted, Problem, ProblemKind, RetryAfter,
};

/// Everything an ACME operation can fail with. Variants carry the URL involved and, for
/// server errors, the typed [`Problem`] with its subproblems.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcmeError {
    /// Local configuration is unusable (bad PEM roots, no TLS crypto provider).
    #[error("invalid ACME client configuration: {detail}")]
    Config { detail: String },

    /// The directory could not be fetched after bounded retries.
    #[error("ACME directory {url} unreachable after {attempts} attempt(s): {source}")]
    DirectoryUnreachable {
        url: String,
        attempts: u32,
        #[source]
        source: Box<AcmeError>,
    },

    /// Transport failure: connect, TLS, timeout, body read. The message names the cause
    /// (reqwest's own text only repeats the URL), so it is not chained again as a source.
    #[error("request to {url} failed: {}", transport_cause(cause))]
    Http { url: String, cause: reqwest::Error },

    /// The server answered with a problem document (or a bare error status, kept as an
    /// `about:blank` problem). `retry_after` is the response's `Retry-After`, if any (rate
    /// limits, 503).
    #[error("{url}: {problem}")]
    Api {
        url: String,
        problem: Problem,
        retry_after: Option<RetryAfter>,
    },

    /// Every nonce was rejected with `badNonce`.
    #[error("{url}: the server rejected the anti-replay nonce {attempts} times in a row")]
    BadNonceExhausted { url: String, attempts: u32 },

    /// The server's answer does not follow the protocol.
    #[error("invalid response from {url}: {detail}")]
    InvalidResponse { url: String, detail: String },

    /// A required response header is missing.
    #[error("response from {url} lacks the {header} header")]
    MissingHeader { url: String, header: &'static str },

    /// A response body is not the expected JSON. The parser's message may quote the
    /// CA's text, so it is shown escaped and not chained as a source.
    #[error("cannot parse the JSON response from {url}: {}", crate::escape::escape_ca_text(&.cause.to_string()))]
    Json {
        url: String,
        cause: serde_json::Error,
    },

    /// A response body exceeded its cap; reading stopped there.
    #[error(
        "the response from {url} is larger than {limit} bytes ({what}); stopped reading it (a broken or hostile CA?)"
    )]
    ResponseTooLarge {
        url: String,
        limit: usize,
        /// What was being read: `JSON`, `certificate chain`.
        what: &'static str,
    },

    /// The server answered with a redirect. RFC 8555 has none, and a signed request must
    /// reach the URL it was signed for; following could send it elsewhere, even in clear.
    #[error(
        "{url} answered HTTP {status} redirecting to {location}; certfleet does not follow redirects from an ACME server"
    )]
    Redirect {
        url: String,
        status: u16,
        /// The `Location` header, escaped.
        location: String,
    },

    /// A plain `http://` URL without `allow_http` (`--insecure-http-directory`).
    #[error(
        "{url} is plain http://: ACME requests (signed, with account and order data) would travel unencrypted; use an https:// directory (for a local test CA only: --insecure-http-directory)"
    )]
    InsecureHttp { url: String },

    /// The signing key failed.
    #[error(transparent)]
    Key(#[from] KeyError),

    /// The order is not in a state that allows the request (finalize needs `ready`).
    #[error("order {url} is {status}, not ready")]
    NotReady { url: String, status: OrderStatus },

    /// Polling gave up (raised by the caller's poll loop).
    #[error("polling {url}: {source}")]
    PollExhausted {
        url: String,
        #[source]
        source: PollExhausted,
    },

    /// The CA requires external account binding and none was given.
    #[error(
        "the CA at {url} requires external account binding: pass the key id and HMAC key it \
         gave you (--eab-kid and --eab-hmac-key) ({problem})"
    )]
    ExternalAccountRequired { url: String, problem: Problem },

    /// The account is deactivated (irreversible): create a new account.
    #[error(
        "the ACME account is deactivated and can no longer be used; register a new account \
         ({url}: {problem})"
    )]
    AccountDeactivated { url: String, problem: Problem },

    /// Key rollover refused: the new key already belongs to an account (409 Conflict).
    #[error("{url}: the new key is already used by account {}", existing_account.as_deref().unwrap_or("(not named)"))]
    KeyInUse {
        url: String,
        existing_account: Option<String>,
    },

    /// The directory does not advertise the resource the operation needs.
    #[error("the CA does not support {feature} (no {field:?} in its directory)")]
    Unsupported {
        feature: &'static str,
        field: &'static str,
    },

    /// A certificate given to the client could not be used.
    #[error("invalid certificate: {detail}")]
    InvalidCertificate { detail: String },

    /// A request could not be built from the arguments given.
    #[error("invalid request: {detail}")]
    InvalidRequest { detail: String },

    /// An identifier was refused locally.
    #[error(transparent)]
    InvalidIdentifier(#[from] InvalidIdentifier),

    /// An EAB key could not be decoded.
    #[error(transparent)]
    InvalidEabKey(#[from] InvalidEabKey),
}

impl AcmeError {
    /// The server's problem document, if this error carries one.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            AcmeError::Api { problem, .. }
            | AcmeError::ExternalAccountRequired { problem, .. }
            | AcmeError::AccountDeactivated { problem, .. } => Some(problem),
            AcmeError::DirectoryUnreachable { source, .. } => source.problem(),
            _ => None,
        }
    }

    /// The problem's kind, if this error carries a problem.
    pub fn problem_kind(&self) -> Option<&ProblemKind> {
        self.problem().map(|p| &p.kind)
    }

    /// `Retry-After` of the failed response, if it had one.
    pub fn retry_after(&self) -> Option<&RetryAfter> {
        match self {
            AcmeError::Api { retry_after, .. } => retry_after.as_ref(),
            _ => None,
        }
    }

    /// Worth retrying later unchanged: rate limits, 5xx, transport failures, nonce
    /// exhaustion. Not: malformed requests, unauthorized, rejected identifiers.
    pub fn is_transient(&self) -> bool {
        match self {
            AcmeError::Http { .. }
            | AcmeError::BadNonceExhausted { .. }
            | AcmeError::DirectoryUnreachable { .. } => true,
            AcmeError::Api { problem, .. } => {
                matches!(
                    problem.kind,
                    ProblemKind::RateLimited | ProblemKind::ServerInternal
                ) || problem.status.is_some_and(|s| s == 429 || s >= 500)
            }
            _ => false,
        }
    }
}

/// What went wrong under a reqwest error: "timed out", or its innermost causes.
fn transport_cause(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".to_owned();
    }
    let mut causes = Vec::new();
    let mut next = std::error::Error::source(e);
    while let Some(cause) = next {
        causes.push(cause.to_string());
        next = cause.source();
    }
    if causes.is_empty() {
        e.to_string()
    } else {
        causes.join(": ")
    }
}
