//! Revocation ([RFC 8555 §7.6](https://www.rfc-editor.org/rfc/rfc8555#section-7.6)), by the
//! account key (`kid`) or by the certificate's own key (`jwk`).

use std::fmt;
use std::str::FromStr;

use certfleet_keys::SigningKey;
use serde_json::json;

use crate::client::Signer;
use crate::jws::b64;
use crate::{Account, AcmeClient, AcmeError};

/// CRL reason codes ([RFC 5280 §5.3.1](https://www.rfc-editor.org/rfc/rfc5280#section-5.3.1));
/// 7 is unused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RevocationReason {
    Unspecified = 0,
    KeyCompromise = 1,
    CaCompromise = 2,
    AffiliationChanged = 3,
    Superseded = 4,
    CessationOfOperation = 5,
    CertificateHold = 6,
    RemoveFromCrl = 8,
    PrivilegeWithdrawn = 9,
    AaCompromise = 10,
}

const REASONS: [(RevocationReason, &str); 10] = [
    (RevocationReason::Unspecified, "unspecified"),
    (RevocationReason::KeyCompromise, "keyCompromise"),
    (RevocationReason::CaCompromise, "cACompromise"),
    (RevocationReason::AffiliationChanged, "affiliationChanged"),
    (RevocationReason::Superseded, "superseded"),
    (
        RevocationReason::CessationOfOperation,
        "cessationOfOperation",
    ),
    (RevocationReason::CertificateHold, "certificateHold"),
    (RevocationReason::RemoveFromCrl, "removeFromCRL"),
    (RevocationReason::PrivilegeWithdrawn, "privilegeWithdrawn"),
    (RevocationReason::AaCompromise, "aACompromise"),
];

impl RevocationReason {
    /// The numeric reason code sent as `reason`.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The RFC 5280 name (`keyCompromise`, `cACompromise`, `removeFromCRL` …).
    pub fn as_str(self) -> &'static str {
        REASONS
            .iter()
            .find(|(r, _)| *r == self)
            .map(|(_, n)| *n)
            // Every variant is listed in REASONS.
            .unwrap_or("unspecified")
    }
}

impl fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown revocation reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown revocation reason {0:?}: expected one of unspecified, keyCompromise, \
     cACompromise, affiliationChanged, superseded, cessationOfOperation, certificateHold, \
     removeFromCRL, privilegeWithdrawn, aACompromise (or its code)"
)]
pub struct UnknownRevocationReason(pub String);

impl FromStr for RevocationReason {
    type Err = UnknownRevocationReason;

    /// Accepts the RFC 5280 names case-insensitively (`keyCompromise`, `key-compromise`,
    /// `key_compromise`, `caCompromise`) and the numeric codes.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm: String = s
            .trim()
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .map(|c| c.to_ascii_lowercase())
            .collect();
        REASONS
            .iter()
            .find(|(r, name)| name.to_ascii_lowercase() == norm || r.code().to_string() == norm)
            .map(|(r, _)| *r)
            .ok_or_else(|| UnknownRevocationReason(s.to_owned()))
    }
}

pub(crate) fn revocation_payload(cert_der: &[u8], reason: Option<RevocationReason>) -> String {
    let mut payload = json!({ "certificate": b64(cert_der) });
    if let Some(reason) = reason {
        payload["reason"] = json!(reason.code());
    }
    payload.to_string()
}

fn revoke_url(client: &AcmeClient) -> Result<String, AcmeError> {
    let url = &client.directory().revoke_cert;
    if url.is_empty() {
        return Err(AcmeError::Unsupported {
            feature: "revocation",
            field: "revokeCert",
        });
    }
    Ok(url.clone())
}

impl AcmeClient {
    /// Revokes a certificate with a request signed by the certificate's own key (`jwk`),
    /// for when the account is lost or the key is compromised.
    pub async fn revoke_with_certificate_key(
        &self,
        cert_key: &dyn SigningKey,
        cert_der: &[u8],
        reason: Option<RevocationReason>,
    ) -> Result<(), AcmeError> {
        let url = revoke_url(self)?;
        let payload = revocation_payload(cert_der, reason);
        self.post(&url, Signer::Jwk(cert_key), payload.as_bytes(), None)
            .await?;
        Ok(())
    }
}

impl Account {
    /// Revokes a certificate with the account key (`kid`). A repeat gets
    /// `alreadyRevoked`.
    pub async fn revoke(
        &self,
        cert_der: &[u8],
        reason: Option<RevocationReason>,
    ) -> Result<(), AcmeError> {
        let url = revoke_url(self.client())?;
        let payload = revocation_payload(cert_der, reason);
        self.post(&url, payload.as_bytes(), None).await?;
        Ok(())
    }
}
