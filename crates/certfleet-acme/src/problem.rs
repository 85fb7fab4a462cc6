//! Problem documents: [RFC 7807] with the ACME error types of [RFC 8555 §6.7], subproblems
//! ([§6.7.1]) and the extension types `alreadyReplaced` ([RFC 9773 §7.4]) and
//! `invalidProfile` (ACME profiles draft).
//!
//! [RFC 7807]: https://www.rfc-editor.org/rfc/rfc7807
//! [RFC 8555 §6.7]: https://www.rfc-editor.org/rfc/rfc8555#section-6.7
//! [§6.7.1]: https://www.rfc-editor.org/rfc/rfc8555#section-6.7.1
//! [RFC 9773 §7.4]: https://www.rfc-editor.org/rfc/rfc9773#section-7.4

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Identifier;
use crate::escape::{escape_ca_text, escaped};

/// The URN prefix of every ACME error type.
pub const ACME_ERROR_PREFIX: &str = "urn:ietf:params:acme:error:";

/// An ACME error type ([RFC 8555 §6.7](https://www.rfc-editor.org/rfc/rfc8555#section-6.7)),
/// decoded from the problem's `type` URI.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProblemKind {
    AccountDoesNotExist,
    AlreadyRevoked,
    BadCsr,
    BadNonce,
    BadPublicKey,
    BadRevocationReason,
    BadSignatureAlgorithm,
    Caa,
    Compound,
    Connection,
    Dns,
    ExternalAccountRequired,
    IncorrectResponse,
    InvalidContact,
    Malformed,
    OrderNotReady,
    RateLimited,
    RejectedIdentifier,
    ServerInternal,
    Tls,
    Unauthorized,
    UnsupportedContact,
    UnsupportedIdentifier,
    UserActionRequired,
    /// RFC 9773: the certificate named in `replaces` was already replaced.
    AlreadyReplaced,
    /// ACME profiles: the requested profile is unknown.
    InvalidProfile,
    /// Any other type URI (including `about:blank`), kept verbatim.
    Other(String),
}

const KINDS: &[(&str, ProblemKind)] = &[
    ("accountDoesNotExist", ProblemKind::AccountDoesNotExist),
    ("alreadyRevoked", ProblemKind::AlreadyRevoked),
    ("badCSR", ProblemKind::BadCsr),
    ("badNonce", ProblemKind::BadNonce),
    ("badPublicKey", ProblemKind::BadPublicKey),
    ("badRevocationReason", ProblemKind::BadRevocationReason),
    ("badSignatureAlgorithm", ProblemKind::BadSignatureAlgorithm),
    ("caa", ProblemKind::Caa),
    ("compound", ProblemKind::Compound),
    ("connection", ProblemKind::Connection),
    ("dns", ProblemKind::Dns),
    (
        "externalAccountRequired",
        ProblemKind::ExternalAccountRequired,
    ),
    ("incorrectResponse", ProblemKind::IncorrectResponse),
    ("invalidContact", ProblemKind::InvalidContact),
    ("malformed", ProblemKind::Malformed),
    ("orderNotReady", ProblemKind::OrderNotReady),
    ("rateLimited", ProblemKind::RateLimited),
    ("rejectedIdentifier", ProblemKind::RejectedIdentifier),
    ("serverInternal", ProblemKind::ServerInternal),
    ("tls", ProblemKind::Tls),
    ("unauthorized", ProblemKind::Unauthorized),
    ("unsupportedContact", ProblemKind::UnsupportedContact),
    ("unsupportedIdentifier", ProblemKind::UnsupportedIdentifier),
    ("userActionRequired", ProblemKind::UserActionRequired),
    ("alreadyReplaced", ProblemKind::AlreadyReplaced),
    ("invalidProfile", ProblemKind::InvalidProfile),
];

impl ProblemKind {
    /// Decodes a `type` URI. ACME types are matched on the exact name after
    /// `urn:ietf:params:acme:error:`; anything else is [`ProblemKind::Other`].
    pub fn from_type_uri(uri: &str) -> ProblemKind {
        uri.strip_prefix(ACME_ERROR_PREFIX)
            .and_then(|name| KINDS.iter().find(|(n, _)| *n == name))
            .map(|(_, kind)| kind.clone())
            .unwrap_or_else(|| ProblemKind::Other(uri.to_owned()))
    }

    /// The full type URI for this kind.
    pub fn type_uri(&self) -> String {
        match self {
            ProblemKind::Other(uri) => uri.clone(),
            known => {
                let name = KINDS
                    .iter()
                    .find(|(_, k)| k == known)
                    .map(|(n, _)| *n)
                    // Every variant but `Other` is listed in KINDS.
                    .unwrap_or("unknown");
                format!("{ACME_ERROR_PREFIX}{name}")
            }
        }
    }
}

/// A problem document returned by the server for a failed request, or embedded in an
/// order, authorization or challenge (`error` member).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "WireProblem", into = "WireProblem")]
pub struct Problem {
    /// The `type` URI as sent (`about:blank` when absent).
    pub type_uri: String,
    /// `type_uri` decoded.
    pub kind: ProblemKind,
    pub title: Option<String>,
    pub detail: Option<String>,
    /// HTTP status: from the document, else from the response that carried it.
    pub status: Option<u16>,
    pub instance: Option<String>,
    /// Per-identifier problems ([RFC 8555 §6.7.1](https://www.rfc-editor.org/rfc/rfc8555#section-6.7.1)).
    pub subproblems: Vec<Subproblem>,
}

/// One per-identifier problem inside a compound [`Problem`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "WireSubproblem", into = "WireSubproblem")]
pub struct Subproblem {
    pub kind: ProblemKind,
    pub type_uri: String,
    pub detail: Option<String>,
    pub identifier: Option<Identifier>,
}

impl Problem {
    /// A problem of the given kind, for synthesising errors and for tests.
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Problem {
        Problem {
            type_uri: kind.type_uri(),
            kind,
            title: None,
            detail: Some(detail.into()),
            status: None,
            instance: None,
            subproblems: Vec::new(),
        }
    }

    /// Parses a problem document (`application/problem+json`).
    pub fn from_json(body: &[u8]) -> Result<Problem, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// Is this a problem of `kind`?
    pub fn is(&self, kind: &ProblemKind) -> bool {
        &self.kind == kind
    }

    /// The identifiers the subproblems name: what to drop before re-ordering.
    pub fn failed_identifiers(&self) -> Vec<&Identifier> {
        self.subproblems
            .iter()
            .filter_map(|s| s.identifier.as_ref())
            .collect()
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.type_uri)?;
        match (&self.detail, &self.title) {
            (Some(detail), _) => write!(f, ": {detail}")?,
            (None, Some(title)) => write!(f, ": {title}")?,
            (None, None) => {}
        }
        if let Some(status) = self.status {
            write!(f, " (HTTP {status})")?;
        }
        for (i, sub) in self.subproblems.iter().enumerate() {
            f.write_str(if i == 0 { "; subproblems: " } else { "; " })?;
            write!(f, "{sub}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Subproblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(id) = &self.identifier {
            write!(f, "{}: ", escape_ca_text(&id.to_string()))?;
        }
        f.write_str(&self.type_uri)?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
struct WireProblem {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    type_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    instance: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    subproblems: Vec<Subproblem>,
}

/// Every text member of a problem comes from the CA and ends up on terminals and in logs:
/// escaped once, here, where it enters (escaping is idempotent, so stored problems read
/// back unchanged).
fn from_ca(text: Option<String>) -> Option<String> {
    text.map(|t| escaped(&t))
}

impl From<WireProblem> for Problem {
    fn from(w: WireProblem) -> Problem {
        // RFC 7807 §4.2: an absent type means "about:blank".
        let type_uri = escaped(w.type_uri.as_deref().unwrap_or("about:blank"));
        Problem {
            kind: ProblemKind::from_type_uri(&type_uri),
            type_uri,
            title: from_ca(w.title),
            detail: from_ca(w.detail),
            status: w.status,
            instance: from_ca(w.instance),
            subproblems: w.subproblems,
        }
    }
}

impl From<Problem> for WireProblem {
    fn from(p: Problem) -> WireProblem {
        WireProblem {
            type_uri: Some(p.type_uri),
            title: p.title,
            detail: p.detail,
            status: p.status,
            instance: p.instance,
            subproblems: p.subproblems,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct WireSubproblem {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    type_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    identifier: Option<Identifier>,
}

impl From<WireSubproblem> for Subproblem {
    fn from(w: WireSubproblem) -> Subproblem {
        let type_uri = escaped(w.type_uri.as_deref().unwrap_or("about:blank"));
        Subproblem {
            kind: ProblemKind::from_type_uri(&type_uri),
            type_uri,
            detail: from_ca(w.detail),
            identifier: w.identifier,
        }
    }
}

impl From<Subproblem> for WireSubproblem {
    fn from(s: Subproblem) -> WireSubproblem {
        WireSubproblem {
            type_uri: Some(s.type_uri),
            detail: s.detail,
            identifier: s.identifier,
        }
    }
}

#[cfg(test)]
mod tests;
