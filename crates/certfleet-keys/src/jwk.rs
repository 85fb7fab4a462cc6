use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// A public JSON Web Key (RFC 7517) with its RFC 7638 thumbprint computed once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Jwk {
    value: Value,
    thumbprint: String,
}

impl Jwk {
    /// EC key: `crv` is `P-256` or `P-384`; `x`, `y` are the big-endian coordinates.
    pub fn ec(crv: &str, x: &[u8], y: &[u8]) -> Jwk {
        Jwk::from_members(&[
            ("crv", crv.to_owned()),
            ("kty", "EC".to_owned()),
            ("x", b64(x)),
            ("y", b64(y)),
        ])
    }

    /// RSA key from big-endian modulus and exponent (leading zero bytes are stripped, as
    /// RFC 7518 §6.3.1 requires).
    pub fn rsa(n: &[u8], e: &[u8]) -> Jwk {
        Jwk::from_members(&[
            ("e", b64(strip_leading_zeros(e))),
            ("kty", "RSA".to_owned()),
            ("n", b64(strip_leading_zeros(n))),
        ])
    }

    /// OKP key (RFC 8037), e.g. `Ed25519` with the 32-byte public key.
    pub fn okp(crv: &str, x: &[u8]) -> Jwk {
        Jwk::from_members(&[
            ("crv", crv.to_owned()),
            ("kty", "OKP".to_owned()),
            ("x", b64(x)),
        ])
    }

    /// `members` must be exactly the required members of the key type, sorted by name: that
    /// is the canonical form RFC 7638 hashes.
    fn from_members(members: &[(&str, String)]) -> Jwk {
        let mut map = Map::new();
        for (k, v) in members {
            map.insert((*k).to_owned(), Value::String(v.clone()));
        }
        let value = Value::Object(map);
        // Built by hand rather than through serde_json: member order must not depend on
        // whether some crate in the build enables serde_json's `preserve_order`. Values are
        // base64url or fixed ASCII names, so no escaping is needed.
        let body: Vec<String> = members
            .iter()
            .map(|(k, v)| format!("\"{k}\":\"{v}\""))
            .collect();
        let canonical = format!("{{{}}}", body.join(","));
        let thumbprint = b64(&Sha256::digest(canonical.as_bytes()));
        Jwk { value, thumbprint }
    }

    /// The JWK as JSON, for the `jwk` JWS header.
    pub fn as_json(&self) -> &Value {
        &self.value
    }

    /// RFC 7638 SHA-256 thumbprint, base64url without padding.
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// `kty` member.
    pub fn key_type(&self) -> &str {
        self.value.get("kty").and_then(Value::as_str).unwrap_or("")
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    &bytes[first..]
}

#[cfg(test)]
mod tests;
