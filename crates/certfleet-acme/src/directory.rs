//! The directory object ([RFC 8555 §7.1.1](https://www.rfc-editor.org/rfc/rfc8555#section-7.1.1)),
//! with `renewalInfo` ([RFC 9773 §3](https://www.rfc-editor.org/rfc/rfc9773#section-3)) and
//! `meta.profiles` (ACME profiles draft). Unknown fields are ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// Where the CA's resources live. Always discovered, never guessed: Pebble's paths differ
/// from Boulder's on purpose.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Directory {
    pub new_nonce: String,
    pub new_account: String,
    pub new_order: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_authz: Option<String>,
    /// Empty if the CA does not advertise revocation.
    #[serde(default)]
    pub revoke_cert: String,
    /// Empty if the CA does not advertise key rollover.
    #[serde(default)]
    pub key_change: String,
    /// ARI base URL (RFC 9773).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_info: Option<String>,
    #[serde(default)]
    pub meta: DirectoryMeta,
}

/// The directory's `meta` object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectoryMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terms_of_service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub website: Option<String>,
    #[serde(default)]
    pub caa_identities: Vec<String>,
    #[serde(default)]
    pub external_account_required: bool,
    /// Profile name → description (a URL or text). Non-string descriptions are kept as
    /// their JSON text.
    #[serde(default, deserialize_with = "profiles")]
    pub profiles: BTreeMap<String, String>,
}

fn profiles<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let raw = Option::<BTreeMap<String, serde_json::Value>>::deserialize(d)?;
    Ok(raw
        .unwrap_or_default()
        .into_iter()
        .map(|(name, v)| match v {
            serde_json::Value::String(s) => (name, s),
            other => (name, other.to_string()),
        })
        .collect())
}

impl Directory {
    /// Parses a directory document.
    pub fn from_json(body: &[u8]) -> Result<Directory, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// Does the CA support ARI (RFC 9773)?
    pub fn supports_ari(&self) -> bool {
        self.renewal_info.is_some()
    }

    /// Does the CA advertise the profile `name`?
    pub fn has_profile(&self, name: &str) -> bool {
        self.meta.profiles.contains_key(name)
    }
}

#[cfg(test)]
mod tests;
