//! ACME Renewal Information ([RFC 9773](https://www.rfc-editor.org/rfc/rfc9773)): the CertID
//! of a certificate (§4.1), the suggested renewal window (§4.2) and the unauthenticated
//! GET that fetches it.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use der::Decode;
use der::asn1::OctetString;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use x509_cert::ext::pkix::AuthorityKeyIdentifier;

use crate::x509::LenientCertificate;
use crate::{AcmeClient, AcmeError, RetryAfter};

/// Shortest and longest wait before asking for renewal information again (RFC 9773 §4.3:
/// clients clamp `Retry-After` to a sensible range).
pub const ARI_MIN_RECHECK: Duration = Duration::from_secs(60);
pub const ARI_MAX_RECHECK: Duration = Duration::from_secs(24 * 3600);
/// Wait when the server gives no `Retry-After`.
pub const ARI_DEFAULT_RECHECK: Duration = Duration::from_secs(6 * 3600);

/// A certificate identifier: `base64url(AKI keyIdentifier) "." base64url(serial)`, the
/// serial as its DER content octets (a leading `0x00` kept), no padding (RFC 9773 §4.1).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CertId(String);

impl CertId {
    /// The CertID of a DER certificate. It must carry an Authority Key Identifier with a
    /// `keyIdentifier`.
    pub fn from_certificate_der(der: &[u8]) -> Result<CertId, AcmeError> {
        let invalid = |detail: String| AcmeError::InvalidCertificate { detail };
        let cert = LenientCertificate::parse(der).map_err(|e| {
            invalid(format!(
                "cannot parse the certificate for its ARI CertID: {e}"
            ))
        })?;
        let aki_oid = const_oid::db::rfc5280::ID_CE_AUTHORITY_KEY_IDENTIFIER;
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.extn_id == aki_oid)
            .ok_or_else(|| {
                invalid("the certificate has no Authority Key Identifier, so no ARI CertID".into())
            })?;
        let aki = AuthorityKeyIdentifier::from_der(ext.extn_value.as_bytes())
            .map_err(|e| invalid(format!("bad Authority Key Identifier extension: {e}")))?;
        let key_id: OctetString = aki.key_identifier.ok_or_else(|| {
            invalid("the Authority Key Identifier has no keyIdentifier, so no ARI CertID".into())
        })?;
        Ok(CertId::from_parts(key_id.as_bytes(), cert.serial_content()))
    }

    /// From the raw AKI keyIdentifier and the serial's DER content octets.
    pub fn from_parts(key_identifier: &[u8], serial_der_content: &[u8]) -> CertId {
        CertId(format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(key_identifier),
            URL_SAFE_NO_PAD.encode(serial_der_content)
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CertId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A string that is not `base64url "." base64url`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid ARI CertID {0:?}: expected base64url(keyIdentifier) \".\" base64url(serial)")]
pub struct InvalidCertId(pub String);

impl FromStr for CertId {
    type Err = InvalidCertId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = s.split_once('.').is_some_and(|(a, b)| {
            !a.is_empty()
                && !b.is_empty()
                && URL_SAFE_NO_PAD.decode(a).is_ok()
                && URL_SAFE_NO_PAD.decode(b).is_ok()
        });
        if ok {
            Ok(CertId(s.to_owned()))
        } else {
            Err(InvalidCertId(s.to_owned()))
        }
    }
}

impl TryFrom<String> for CertId {
    type Error = InvalidCertId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<CertId> for String {
    fn from(c: CertId) -> String {
        c.0
    }
}

/// The suggested window: renew at a random instant in `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewalWindow {
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub end: OffsetDateTime,
}

impl RenewalWindow {
    /// The instant `fraction` of the way through the window (`fraction` in `[0, 1)`,
    /// clamped; NaN is 0). Pass a uniform random number to spread renewals (§4.2).
    pub fn random_instant_in(&self, fraction: f64) -> OffsetDateTime {
        let f = if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        let span = self.end - self.start;
        let instant = self.start + span * f;
        if instant >= self.end && span.is_positive() {
            self.end - time::Duration::NANOSECOND
        } else {
            instant
        }
    }

    /// `start <= now < end`.
    pub fn contains(&self, now: OffsetDateTime) -> bool {
        self.start <= now && now < self.end
    }

    /// Is the window (at least partly) in the past: should renewal start now?
    pub fn has_started(&self, now: OffsetDateTime) -> bool {
        now >= self.start
    }
}

/// A renewalInfo response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenewalInfo {
    pub window: RenewalWindow,
    pub explanation_url: Option<String>,
    /// When to ask again, from the response's `Retry-After`.
    pub retry_after: Option<RetryAfter>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireRenewalInfo {
    suggested_window: RenewalWindow,
    #[serde(default, rename = "explanationURL")]
    explanation_url: Option<String>,
}

impl RenewalInfo {
    /// Parses a renewalInfo body; a window with `end <= start` is invalid (§4.2).
    pub fn from_json(
        url: &str,
        body: &[u8],
        retry_after: Option<RetryAfter>,
    ) -> Result<RenewalInfo, AcmeError> {
        let wire: WireRenewalInfo =
            serde_json::from_slice(body).map_err(|cause| AcmeError::Json {
                url: url.to_owned(),
                cause,
            })?;
        let w = wire.suggested_window;
        if w.end <= w.start {
            return Err(AcmeError::InvalidResponse {
                url: url.to_owned(),
                detail: format!(
                    "renewal window ends ({}) before or when it starts ({})",
                    w.end, w.start
                ),
            });
        }
        Ok(RenewalInfo {
            window: w,
            explanation_url: wire.explanation_url,
            retry_after,
        })
    }

    /// When to fetch renewal information again: `Retry-After` clamped to
    /// [1 min, 1 day], or 6 h without one.
    pub fn next_check(&self, now: OffsetDateTime) -> OffsetDateTime {
        let wait = self
            .retry_after
            .map(|ra| ra.delay_from(now).clamp(ARI_MIN_RECHECK, ARI_MAX_RECHECK))
            .unwrap_or(ARI_DEFAULT_RECHECK);
        now + wait
    }
}

/// The renewalInfo URL for `cert_id` under `base`.
pub(crate) fn renewal_info_url(base: &str, cert_id: &CertId) -> String {
    format!("{}/{}", base.trim_end_matches('/'), cert_id)
}

impl AcmeClient {
    /// Fetches renewal information (unauthenticated GET, RFC 9773 §4.1). Errs with
    /// [`AcmeError::Unsupported`] when the directory has no `renewalInfo`.
    pub async fn renewal_info(&self, cert_id: &CertId) -> Result<RenewalInfo, AcmeError> {
        let base = self
            .directory()
            .renewal_info
            .as_deref()
            .ok_or(AcmeError::Unsupported {
                feature: "ACME Renewal Information (RFC 9773)",
                field: "renewalInfo",
            })?;
        let url = renewal_info_url(base, cert_id);
        let resp = self.transport().get(&url, "application/json").await?;
        if !resp.status.is_success() {
            return Err(resp.into_error());
        }
        RenewalInfo::from_json(&url, &resp.body, resp.retry_after())
    }
}

#[cfg(test)]
mod tests;
