use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// JWS `alg` values this crate signs with (RFC 7518 §3.1, RFC 8037 §3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JwsAlgorithm {
    ES256,
    ES384,
    RS256,
    EdDSA,
}

impl JwsAlgorithm {
    /// The `alg` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            JwsAlgorithm::ES256 => "ES256",
            JwsAlgorithm::ES384 => "ES384",
            JwsAlgorithm::RS256 => "RS256",
            JwsAlgorithm::EdDSA => "EdDSA",
        }
    }
}

impl fmt::Display for JwsAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Key type and size: what `key generate --alg` takes and what a loaded key reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyAlgorithm {
    /// ECDSA P-256 with SHA-256 (`es256`).
    #[serde(rename = "es256")]
    EcP256,
    /// ECDSA P-384 with SHA-384 (`es384`).
    #[serde(rename = "es384")]
    EcP384,
    /// RSA 2048 PKCS#1 v1.5 with SHA-256 (`rs256`).
    #[serde(rename = "rs256")]
    Rsa2048,
    /// RSA 3072 PKCS#1 v1.5 with SHA-256 (`rs3072`).
    #[serde(rename = "rs3072")]
    Rsa3072,
    /// RSA 4096 PKCS#1 v1.5 with SHA-256 (`rs4096`).
    #[serde(rename = "rs4096")]
    Rsa4096,
    /// Ed25519 (`eddsa`).
    #[serde(rename = "eddsa")]
    Ed25519,
}

impl KeyAlgorithm {
    pub const ALL: [KeyAlgorithm; 6] = [
        KeyAlgorithm::EcP256,
        KeyAlgorithm::EcP384,
        KeyAlgorithm::Rsa2048,
        KeyAlgorithm::Rsa3072,
        KeyAlgorithm::Rsa4096,
        KeyAlgorithm::Ed25519,
    ];

    /// The name used on the command line and in config files.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::EcP256 => "es256",
            KeyAlgorithm::EcP384 => "es384",
            KeyAlgorithm::Rsa2048 => "rs256",
            KeyAlgorithm::Rsa3072 => "rs3072",
            KeyAlgorithm::Rsa4096 => "rs4096",
            KeyAlgorithm::Ed25519 => "eddsa",
        }
    }

    pub fn jws_algorithm(self) -> JwsAlgorithm {
        match self {
            KeyAlgorithm::EcP256 => JwsAlgorithm::ES256,
            KeyAlgorithm::EcP384 => JwsAlgorithm::ES384,
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
                JwsAlgorithm::RS256
            }
            KeyAlgorithm::Ed25519 => JwsAlgorithm::EdDSA,
        }
    }

    /// RSA modulus size in bits, `None` for other key types.
    pub fn rsa_bits(self) -> Option<usize> {
        match self {
            KeyAlgorithm::Rsa2048 => Some(2048),
            KeyAlgorithm::Rsa3072 => Some(3072),
            KeyAlgorithm::Rsa4096 => Some(4096),
            _ => None,
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for an unknown algorithm name; the message lists what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown key algorithm {0:?}: expected one of es256, es384, rs256, rs3072, rs4096, eddsa")]
pub struct UnknownKeyAlgorithm(pub String);

impl FromStr for KeyAlgorithm {
    type Err = UnknownKeyAlgorithm;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyAlgorithm::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownKeyAlgorithm(s.to_owned()))
    }
}
