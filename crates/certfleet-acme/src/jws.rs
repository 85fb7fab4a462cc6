//! JWS in flattened JSON serialization ([RFC 7515 §7.2.2]) as ACME uses it
//! ([RFC 8555 §6.2]): one signature, everything in the protected header, `alg` from the
//! key, `nonce`, `url`, and **either** `jwk` **or** `kid`.
//!
//! [RFC 7515 §7.2.2]: https://www.rfc-editor.org/rfc/rfc7515#section-7.2.2
//! [RFC 8555 §6.2]: https://www.rfc-editor.org/rfc/rfc8555#section-6.2

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use certfleet_keys::{KeyError, SigningKey};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How the signer is named in the protected header.
#[derive(Clone, Copy, Debug)]
pub(crate) enum KeyIdentity<'a> {
    /// Embed the public key (`jwk`): newAccount, revocation by certificate key, the inner
    /// keyChange JWS.
    Jwk,
    /// Name the account (`kid` = account URL): every other request.
    Kid(&'a str),
}

/// A flattened JWS: `{"protected", "payload", "signature"}`, each base64url.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlattenedJws {
    pub protected: String,
    pub payload: String,
    pub signature: String,
}

impl FlattenedJws {
    /// The bytes that were signed: `protected "." payload`.
    pub fn signing_input(&self) -> String {
        format!("{}.{}", self.protected, self.payload)
    }

    /// The decoded protected header.
    pub fn protected_header(&self) -> Option<Value> {
        let raw = URL_SAFE_NO_PAD.decode(&self.protected).ok()?;
        serde_json::from_slice(&raw).ok()
    }

    /// The decoded payload (empty for POST-as-GET).
    pub fn payload_bytes(&self) -> Option<Vec<u8>> {
        URL_SAFE_NO_PAD.decode(&self.payload).ok()
    }
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The protected header for `key` ([RFC 8555 §6.2](https://www.rfc-editor.org/rfc/rfc8555#section-6.2)).
/// `nonce` is omitted only for the inner keyChange JWS (§7.3.5).
pub(crate) fn protected_header(
    key: &dyn SigningKey,
    identity: KeyIdentity<'_>,
    nonce: Option<&str>,
    url: &str,
) -> Map<String, Value> {
    let mut header = Map::new();
    header.insert("alg".into(), key.jws_algorithm().as_str().into());
    match identity {
        KeyIdentity::Jwk => {
            header.insert("jwk".into(), key.public_jwk().as_json().clone());
        }
        KeyIdentity::Kid(kid) => {
            header.insert("kid".into(), kid.into());
        }
    }
    if let Some(nonce) = nonce {
        header.insert("nonce".into(), nonce.into());
    }
    header.insert("url".into(), url.into());
    header
}

/// Signs `payload` (empty for POST-as-GET) with `key`. One call to [`SigningKey::sign`].
pub(crate) async fn sign(
    key: &dyn SigningKey,
    identity: KeyIdentity<'_>,
    nonce: Option<&str>,
    url: &str,
    payload: &[u8],
) -> Result<FlattenedJws, KeyError> {
    let header = protected_header(key, identity, nonce, url);
    let protected = b64(Value::Object(header).to_string().as_bytes());
    let payload = b64(payload);
    let signing_input = format!("{protected}.{payload}");
    let signature = key.sign(signing_input.as_bytes()).await?;
    Ok(FlattenedJws {
        protected,
        payload,
        signature: b64(&signature),
    })
}

#[cfg(test)]
mod tests;
