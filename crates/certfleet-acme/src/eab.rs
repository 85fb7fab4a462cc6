//! External account binding ([RFC 8555 §7.3.4](https://www.rfc-editor.org/rfc/rfc8555#section-7.3.4)):
//! an inner JWS, MACed with a key the CA issued, binding the new account key to an
//! account the CA already knows.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use certfleet_keys::Jwk;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::{Sha256, Sha384, Sha512};

use crate::jws::{FlattenedJws, b64};

/// The MAC algorithm of an EAB key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MacAlgorithm {
    #[default]
    HS256,
    HS384,
    HS512,
}

impl MacAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            MacAlgorithm::HS256 => "HS256",
            MacAlgorithm::HS384 => "HS384",
            MacAlgorithm::HS512 => "HS512",
        }
    }

    /// The shortest key RFC 7518 §3.2 allows: as long as the hash output.
    pub fn min_key_bytes(self) -> usize {
        match self {
            MacAlgorithm::HS256 => 32,
            MacAlgorithm::HS384 => 48,
            MacAlgorithm::HS512 => 64,
        }
    }

    /// The MAC of `message` under `key`.
    pub fn mac(self, key: &[u8], message: &[u8]) -> Vec<u8> {
        // `new_from_slice` accepts keys of any length for HMAC, so it cannot fail here.
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], message: &[u8]) -> Vec<u8> {
            match <M as hmac::digest::KeyInit>::new_from_slice(key) {
                Ok(mut m) => {
                    m.update(message);
                    m.finalize().into_bytes().to_vec()
                }
                Err(_) => Vec::new(),
            }
        }
        match self {
            MacAlgorithm::HS256 => run::<Hmac<Sha256>>(key, message),
            MacAlgorithm::HS384 => run::<Hmac<Sha384>>(key, message),
            MacAlgorithm::HS512 => run::<Hmac<Sha512>>(key, message),
        }
    }
}

impl fmt::Display for MacAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown MAC algorithm name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown EAB MAC algorithm {0:?}: expected HS256, HS384 or HS512")]
pub struct UnknownMacAlgorithm(pub String);

impl FromStr for MacAlgorithm {
    type Err = UnknownMacAlgorithm;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "HS256" => Ok(MacAlgorithm::HS256),
            "HS384" => Ok(MacAlgorithm::HS384),
            "HS512" => Ok(MacAlgorithm::HS512),
            _ => Err(UnknownMacAlgorithm(s.to_owned())),
        }
    }
}

/// The key ID and MAC key a CA hands out for EAB. `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ExternalAccountBinding {
    pub key_id: String,
    pub hmac_key: Vec<u8>,
    pub algorithm: MacAlgorithm,
}

/// The EAB MAC key could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("EAB HMAC key for key id {key_id:?} is not valid base64url: {detail}")]
pub struct InvalidEabKey {
    pub key_id: String,
    pub detail: String,
}

impl ExternalAccountBinding {
    /// From the key ID and the MAC key as CAs print it: base64url (padded or not; standard
    /// base64 is accepted too).
    pub fn from_base64(
        key_id: impl Into<String>,
        hmac_key: &str,
        algorithm: MacAlgorithm,
    ) -> Result<ExternalAccountBinding, InvalidEabKey> {
        let key_id = key_id.into();
        let trimmed = hmac_key.trim();
        let decoded = [URL_SAFE_NO_PAD, URL_SAFE, STANDARD_NO_PAD, STANDARD]
            .iter()
            .find_map(|engine| engine.decode(trimmed).ok());
        match decoded {
            Some(key) if !key.is_empty() => Ok(ExternalAccountBinding {
                key_id,
                hmac_key: key,
                algorithm,
            }),
            Some(_) => Err(InvalidEabKey {
                key_id,
                detail: "the key is empty".to_owned(),
            }),
            None => Err(InvalidEabKey {
                key_id,
                detail: "it contains characters outside the base64url alphabet".to_owned(),
            }),
        }
    }

    /// The `externalAccountBinding` value: a JWS over the account `jwk`, protected header
    /// `{alg, kid, url}` and no nonce, MACed with the EAB key.
    pub fn sign(&self, account_jwk: &Jwk, new_account_url: &str) -> FlattenedJws {
        let header = json!({
            "alg": self.algorithm.as_str(),
            "kid": self.key_id,
            "url": new_account_url,
        });
        let protected = b64(header.to_string().as_bytes());
        let payload = b64(account_jwk.as_json().to_string().as_bytes());
        let mac = self
            .algorithm
            .mac(&self.hmac_key, format!("{protected}.{payload}").as_bytes());
        FlattenedJws {
            protected,
            payload,
            signature: b64(&mac),
        }
    }
}

impl fmt::Debug for ExternalAccountBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalAccountBinding")
            .field("key_id", &self.key_id)
            .field("hmac_key", &"<redacted>")
            .field("algorithm", &self.algorithm)
            .finish()
    }
}

#[cfg(test)]
mod tests;
