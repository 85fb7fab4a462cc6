//! Identifiers ([RFC 8555 §9.7.7](https://www.rfc-editor.org/rfc/rfc8555#section-9.7.7),
//! [RFC 8738](https://www.rfc-editor.org/rfc/rfc8738)) and local validation of DNS names
//! before they are sent to a CA.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest DNS name in presentation form without the trailing dot (RFC 1035 §2.3.4).
const MAX_NAME_LEN: usize = 253;
/// Longest DNS label (RFC 1035 §2.3.4).
const MAX_LABEL_LEN: usize = 63;

/// Identifier type: `dns` or `ip`; other types are kept verbatim.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdentifierType {
    Dns,
    Ip,
    Other(String),
}

impl IdentifierType {
    pub fn as_str(&self) -> &str {
        match self {
            IdentifierType::Dns => "dns",
            IdentifierType::Ip => "ip",
            IdentifierType::Other(s) => s,
        }
    }
}

impl Serialize for IdentifierType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for IdentifierType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "dns" => IdentifierType::Dns,
            "ip" => IdentifierType::Ip,
            _ => IdentifierType::Other(s),
        })
    }
}

/// An identifier in an order or authorization: `{"type": "dns", "value": "example.com"}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Identifier {
    #[serde(rename = "type")]
    pub kind: IdentifierType,
    pub value: String,
}

impl Identifier {
    /// A DNS identifier, taken as given (see [`normalize_dns_name`] to validate it).
    pub fn dns(name: impl Into<String>) -> Identifier {
        Identifier {
            kind: IdentifierType::Dns,
            value: name.into(),
        }
    }

    /// An IP identifier (RFC 8738).
    pub fn ip(addr: IpAddr) -> Identifier {
        Identifier {
            kind: IdentifierType::Ip,
            value: addr.to_string(),
        }
    }

    /// Is this a wildcard DNS identifier (`*.example.com`)?
    pub fn is_wildcard(&self) -> bool {
        self.kind == IdentifierType::Dns && self.value.starts_with("*.")
    }

    /// Whether `other` names the same thing, as a CA may spell it back: DNS names compare
    /// without case and one trailing dot, IP addresses as addresses (`::1` is
    /// `0:0:0:0:0:0:0:1`), other types verbatim.
    pub fn same_as(&self, other: &Identifier) -> bool {
        if self.kind != other.kind {
            return false;
        }
        match self.kind {
            IdentifierType::Dns => {
                fn bare(v: &str) -> &str {
                    v.strip_suffix('.').unwrap_or(v)
                }
                bare(&self.value).eq_ignore_ascii_case(bare(&other.value))
            }
            IdentifierType::Ip => {
                match (self.value.parse::<IpAddr>(), other.value.parse::<IpAddr>()) {
                    (Ok(a), Ok(b)) => a == b,
                    _ => self.value == other.value,
                }
            }
            IdentifierType::Other(_) => self.value == other.value,
        }
    }
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value)
    }
}

/// A DNS name refused before it reaches the CA; the message names the value and the fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid DNS name {value:?}: {reason}")]
pub struct InvalidIdentifier {
    pub value: String,
    pub reason: String,
}

/// Checks that `name` can be ordered as a `dns` identifier. See [`normalize_dns_name`].
pub fn validate_dns_name(name: &str) -> Result<(), InvalidIdentifier> {
    normalize_dns_name(name).map(|_| ())
}

/// Validates a DNS name for a `dns` identifier and returns its normal form: one trailing
/// dot stripped and ASCII lowercased.
///
/// Refused: empty names and labels (`a..b`), labels starting or ending with `-`,
/// characters other than letters, digits and `-` (spaces, `_`, non-ASCII: use the
/// `xn--` form), names over 253 characters, labels over 63, a wildcard anywhere but as the
/// whole leftmost label (`*.*.x`, `a*.x`), and IP address literals.
pub fn normalize_dns_name(name: &str) -> Result<String, InvalidIdentifier> {
    let fail = |reason: String| InvalidIdentifier {
        value: name.to_owned(),
        reason,
    };
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() {
        return Err(fail("the name is empty".to_owned()));
    }
    if let Some(c) = trimmed.chars().find(|c| !c.is_ascii()) {
        return Err(fail(format!(
            "contains the non-ASCII character {c:?}; use the ASCII (\"xn--\") form of \
             internationalized names"
        )));
    }
    let ip_candidate = trimmed.trim_start_matches('[').trim_end_matches(']');
    if ip_candidate.parse::<IpAddr>().is_ok() {
        return Err(fail(
            "IP address identifiers are not supported here; this is an IP address, not a \
             DNS name"
                .to_owned(),
        ));
    }
    if trimmed.len() > MAX_NAME_LEN {
        return Err(fail(format!(
            "the name is {} characters long; at most {MAX_NAME_LEN} are allowed",
            trimmed.len()
        )));
    }
    let lower = trimmed.to_ascii_lowercase();
    let labels: Vec<&str> = lower.split('.').collect();
    for (i, label) in labels.iter().enumerate() {
        check_label(label, i, labels.len()).map_err(fail)?;
    }
    Ok(lower)
}

fn check_label(label: &str, index: usize, count: usize) -> Result<(), String> {
    if label.is_empty() {
        return Err("contains an empty label (a leading dot or two dots in a row)".to_owned());
    }
    if label.contains('*') {
        if label != "*" || index != 0 {
            return Err(
                "a wildcard '*' is allowed only once, as the whole leftmost label (\"*.example.com\")"
                    .to_owned(),
            );
        }
        if count < 2 {
            return Err("a wildcard needs a name below it (\"*.example.com\")".to_owned());
        }
        return Ok(());
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(format!(
            "label {label:?} is {} characters long; at most {MAX_LABEL_LEN} are allowed",
            label.len()
        ));
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        let what = match c {
            ' ' => "a space".to_owned(),
            c => format!("the character {c:?}"),
        };
        return Err(format!(
            "label {label:?} contains {what}; only letters, digits and '-' are allowed"
        ));
    }
    if label.starts_with('-') {
        return Err(format!("label {label:?} starts with '-'"));
    }
    if label.ends_with('-') {
        return Err(format!("label {label:?} ends with '-'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
