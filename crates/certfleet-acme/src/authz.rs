//! Authorizations and challenges ([RFC 8555 §7.1.4](https://www.rfc-editor.org/rfc/rfc8555#section-7.1.4),
//! [§7.5](https://www.rfc-editor.org/rfc/rfc8555#section-7.5), [§8](https://www.rfc-editor.org/rfc/rfc8555#section-8)).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::json;
use time::OffsetDateTime;

use crate::{Account, AcmeError, Identifier, Problem, RetryAfter};

/// Authorization status (§7.1.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthorizationStatus {
    Pending,
    Valid,
    Invalid,
    Deactivated,
    Expired,
    Revoked,
}

impl AuthorizationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthorizationStatus::Pending => "pending",
            AuthorizationStatus::Valid => "valid",
            AuthorizationStatus::Invalid => "invalid",
            AuthorizationStatus::Deactivated => "deactivated",
            AuthorizationStatus::Expired => "expired",
            AuthorizationStatus::Revoked => "revoked",
        }
    }
}

impl fmt::Display for AuthorizationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Challenge status (§7.1.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChallengeStatus {
    Pending,
    Processing,
    Valid,
    Invalid,
}

/// Challenge type: `http-01`, `dns-01`, `tls-alpn-01`; others kept verbatim.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ChallengeType {
    Http01,
    Dns01,
    TlsAlpn01,
    /// dns-persist-01 (see [`crate::persist`]).
    DnsPersist01,
    Other(String),
}

impl ChallengeType {
    pub fn as_str(&self) -> &str {
        match self {
            ChallengeType::Http01 => "http-01",
            ChallengeType::Dns01 => "dns-01",
            ChallengeType::TlsAlpn01 => "tls-alpn-01",
            ChallengeType::DnsPersist01 => crate::persist::DNS_PERSIST_01,
            ChallengeType::Other(s) => s,
        }
    }
}

impl fmt::Display for ChallengeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ChallengeType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ChallengeType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "http-01" => ChallengeType::Http01,
            "dns-01" => ChallengeType::Dns01,
            "tls-alpn-01" => ChallengeType::TlsAlpn01,
            crate::persist::DNS_PERSIST_01 => ChallengeType::DnsPersist01,
            _ => ChallengeType::Other(s),
        })
    }
}

/// A challenge object (§7.1.5). Unknown fields are ignored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    #[serde(rename = "type")]
    pub kind: ChallengeType,
    pub url: String,
    pub status: ChallengeStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub validated: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Problem>,
    /// dns-persist-01: the issuer domain names the CA accepts in the record.
    #[serde(
        default,
        rename = "issuer-domain-names",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub issuer_domain_names: Vec<String>,
    /// dns-persist-01 (acme2certifier): the account URL the record must name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accounturi: Option<String>,
}

/// The authorization object as the server last returned it. For a wildcard order the
/// identifier is the base name with `wildcard: true`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationState {
    pub identifier: Identifier,
    pub status: AuthorizationStatus,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires: Option<OffsetDateTime>,
    #[serde(default)]
    pub challenges: Vec<Challenge>,
    #[serde(default)]
    pub wildcard: bool,
}

impl AuthorizationState {
    /// The first challenge of `kind`.
    pub fn challenge(&self, kind: &ChallengeType) -> Option<&Challenge> {
        self.challenges.iter().find(|c| &c.kind == kind)
    }

    /// The identifier as it appeared in the order (`*.` put back for wildcards).
    pub fn order_identifier(&self) -> Identifier {
        if self.wildcard && !self.identifier.value.starts_with("*.") {
            Identifier {
                kind: self.identifier.kind.clone(),
                value: format!("*.{}", self.identifier.value),
            }
        } else {
            self.identifier.clone()
        }
    }
}

/// An authorization: URL, state, and when to poll it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    pub url: String,
    pub state: AuthorizationState,
    pub retry_after: Option<RetryAfter>,
}

impl Account {
    /// Fetches an authorization (POST-as-GET).
    pub async fn authorization(&self, url: &str) -> Result<Authorization, AcmeError> {
        let resp = self.post_as_get(url, None).await?;
        Ok(Authorization {
            url: url.to_owned(),
            state: resp.json()?,
            retry_after: resp.retry_after(),
        })
    }

    /// Tells the server the challenge is ready to be validated (§7.5.1): payload `{}`.
    pub async fn respond_to_challenge(&self, challenge_url: &str) -> Result<Challenge, AcmeError> {
        let resp = self.post(challenge_url, b"{}", None).await?;
        resp.json()
    }

    /// Fetches a challenge (POST-as-GET).
    pub async fn challenge(&self, url: &str) -> Result<Challenge, AcmeError> {
        self.post_as_get(url, None).await?.json()
    }

    /// Deactivates an authorization (§7.5.2), e.g. to drop a validation no longer wanted.
    pub async fn deactivate_authorization(&self, url: &str) -> Result<Authorization, AcmeError> {
        let payload = json!({ "status": "deactivated" });
        let resp = self.post(url, payload.to_string().as_bytes(), None).await?;
        Ok(Authorization {
            url: url.to_owned(),
            state: resp.json()?,
            retry_after: resp.retry_after(),
        })
    }
}

#[cfg(test)]
mod tests;
