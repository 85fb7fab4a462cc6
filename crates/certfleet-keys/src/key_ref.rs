use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::KeyError;

/// What gets persisted to find a key again: `file:/abs/path.pem`, an RFC 7512 `pkcs11:` URI,
/// or `tpm:…`. Never key material. The scheme picks the backend.
///
/// `Display`, `Debug` and serialization redact a `pin-value=` query attribute (RFC 7512
/// §2.4) as `pin-value=***`, so a reference can be named in logs and errors and written to
/// files without its PIN; only [`KeyRef::as_str`] keeps the exact text, for loading the key
/// in this process. A redacted reference read back cannot log in: the PKCS#11 backend
/// refuses `pin-value=***` and asks for `pin-source=file:` or `env:`.
#[derive(Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct KeyRef(String);

impl Serialize for KeyRef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&redact_pin_value(&self.0))
    }
}

impl KeyRef {
    /// A reference to a PEM file; relative paths are made absolute so the reference stays
    /// valid when read from another working directory.
    pub fn file(path: &Path) -> Result<KeyRef, KeyError> {
        let abs = std::path::absolute(path).map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })?;
        Ok(KeyRef(format!("file:{}", abs.display())))
    }

    /// The scheme before the first `:` (`file`, `pkcs11`, `tpm`).
    pub fn scheme(&self) -> &str {
        self.0.split_once(':').map(|(s, _)| s).unwrap_or("")
    }

    /// Everything after `scheme:`.
    pub fn rest(&self) -> &str {
        self.0.split_once(':').map(|(_, r)| r).unwrap_or("")
    }

    /// The path of a `file:` reference.
    pub fn file_path(&self) -> Option<PathBuf> {
        (self.scheme() == "file").then(|| PathBuf::from(self.rest()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the reference carries a literal PIN (`pin-value=`), which is never stored:
    /// anything that keeps the reference for a later run must refuse it.
    pub fn has_pin_value(&self) -> bool {
        redact_pin_value(&self.0) != self.0.as_str()
            || self.0.to_ascii_lowercase().contains("pin-value=***")
    }

    /// The mode for a file that holds this reference: 0600 for a token or TPM key (the
    /// reference names the PIN source and where the key lives), 0644 for a key file's path.
    pub fn file_mode(&self) -> u32 {
        if self.scheme() == "file" {
            0o644
        } else {
            0o600
        }
    }
}

impl fmt::Display for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_pin_value(&self.0))
    }
}

impl fmt::Debug for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("KeyRef")
            .field(&redact_pin_value(&self.0))
            .finish()
    }
}

/// `reference` with the value of every `pin-value=` query attribute replaced by `***`,
/// and everything after any other attribute whose name starts with `pin` (other than
/// `pin-source`) cut off: a PIN put in the wrong place (`;pin-value=` in the path, `pin=`)
/// is never shown, whatever follows it.
pub fn redact_pin_value(reference: &str) -> std::borrow::Cow<'_, str> {
    if let Some(cut) = misplaced_pin(reference) {
        return format!("{}***", &reference[..cut]).into();
    }
    let Some((head, query)) = reference.split_once('?') else {
        return reference.into();
    };
    if !query
        .split('&')
        .any(|a| a.to_ascii_lowercase().starts_with("pin-value="))
    {
        return reference.into();
    }
    let query: Vec<&str> = query
        .split('&')
        .map(|a| {
            if a.to_ascii_lowercase().starts_with("pin-value=") {
                "pin-value=***"
            } else {
                a
            }
        })
        .collect();
    format!("{head}?{}", query.join("&")).into()
}

/// Where the value of a `pin…=` attribute starts, for any such attribute except the
/// query's `pin-value` (redacted in place) and `pin-source` (names a file or variable).
fn misplaced_pin(reference: &str) -> Option<usize> {
    let query_start = reference.find('?').unwrap_or(reference.len());
    let mut start = 0;
    for (i, c) in reference.char_indices().chain([(reference.len(), ';')]) {
        if !matches!(c, ':' | ';' | '?' | '&') {
            continue;
        }
        let attr_start = start;
        let attr = &reference[attr_start..i];
        start = i + c.len_utf8();
        let Some((name, _)) = attr.split_once('=') else {
            continue;
        };
        let name = name.to_ascii_lowercase();
        let in_query = attr_start > query_start;
        let allowed = name == "pin-source" || (in_query && name == "pin-value");
        if name.starts_with("pin") && !allowed {
            return Some(attr_start + name.len() + 1);
        }
    }
    None
}

impl FromStr for KeyRef {
    type Err = KeyError;

    /// Accepts `scheme:rest` with a non-empty lowercase scheme; a bare path is read as
    /// `file:` so `--key ./acct.pem` works.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(KeyError::InvalidRef {
                value: s.to_owned(),
                expected: "file:/path/key.pem, pkcs11:… or tpm:…",
            });
        }
        match s.split_once(':') {
            Some((scheme, rest))
                if !scheme.is_empty()
                    && scheme
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                    && !rest.is_empty() =>
            {
                if scheme == "file" {
                    KeyRef::file(Path::new(rest))
                } else {
                    Ok(KeyRef(s.to_owned()))
                }
            }
            _ if s.starts_with('/') || s.starts_with('.') || !s.contains(':') => {
                KeyRef::file(Path::new(s))
            }
            _ => Err(KeyError::InvalidRef {
                value: s.to_owned(),
                expected: "file:/path/key.pem, pkcs11:… or tpm:…",
            }),
        }
    }
}

impl TryFrom<String> for KeyRef {
    type Error = KeyError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<KeyRef> for String {
    fn from(k: KeyRef) -> String {
        k.0
    }
}

#[cfg(test)]
mod tests;
