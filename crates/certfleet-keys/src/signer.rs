use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::{Jwk, JwsAlgorithm, KeyAlgorithm, KeyError, KeyRef};

/// A private key that can sign but may not be read: a PEM file, an HSM object, a TPM key.
///
/// `sign` is async because hardware backends block (a token round trip, a TPM command);
/// they adapt inside (`spawn_blocking`, an owner thread) so callers can sign many messages
/// concurrently. The message is the full JWS signing input (or the DER to be signed for a
/// CSR), **not** a digest: the backend hashes as its algorithm requires.
#[async_trait]
pub trait SigningKey: Send + Sync + fmt::Debug {
    /// What to persist to find this key again.
    fn key_ref(&self) -> &KeyRef;

    fn algorithm(&self) -> KeyAlgorithm;

    /// The JWS `alg` this key signs with.
    fn jws_algorithm(&self) -> JwsAlgorithm {
        self.algorithm().jws_algorithm()
    }

    /// Public key as a JWK, computed once when the key is loaded.
    fn public_jwk(&self) -> &Jwk;

    /// Public key as a DER `SubjectPublicKeyInfo` (for CSRs and comparing certificate keys).
    fn public_key_der(&self) -> &[u8];

    /// Signs `message`, returning the **JWS** encoding of the signature: ES256/ES384 as
    /// fixed-size `r || s` (64/96 bytes), RS256 as the PKCS#1 v1.5 signature, EdDSA as the
    /// 64-byte Ed25519 signature. Use [`x509_signature`] for the X.509 encoding.
    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError>;
}

/// Loads keys of one reference scheme. The CLI (composition root) registers one per
/// available backend and dispatches on [`KeyRef::scheme`].
#[async_trait]
pub trait KeyBackend: Send + Sync + fmt::Debug {
    /// The scheme this backend serves, e.g. `"file"`.
    fn scheme(&self) -> &'static str;

    async fn load(&self, key_ref: &KeyRef) -> Result<Arc<dyn SigningKey>, KeyError>;
}

/// Loads `key_ref` through the backend of its scheme among `backends` (the one dispatch
/// every composition root uses), or says which schemes are available.
pub async fn load_key<B: AsRef<dyn KeyBackend> + Sync>(
    backends: &[B],
    key_ref: &KeyRef,
) -> Result<Arc<dyn SigningKey>, KeyError> {
    let backend = backends
        .iter()
        .map(AsRef::as_ref)
        .find(|b| b.scheme() == key_ref.scheme())
        .ok_or_else(|| KeyError::UnknownScheme {
            scheme: key_ref.scheme().to_owned(),
            key_ref: key_ref.to_string(),
            available: backends
                .iter()
                .map(|b| b.as_ref().scheme())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    backend.load(key_ref).await
}

/// Converts a JWS signature into the encoding X.509 and PKCS#10 use: ECDSA `r || s` becomes
/// a DER `Ecdsa-Sig-Value`; RSA and Ed25519 signatures are the same bytes in both.
pub fn x509_signature(alg: JwsAlgorithm, jws_signature: &[u8]) -> Result<Vec<u8>, KeyError> {
    let invalid = |detail: String| KeyError::Csr { detail };
    match alg {
        JwsAlgorithm::ES256 => p256::ecdsa::Signature::from_slice(jws_signature)
            .map(|s| s.to_der().as_bytes().to_vec())
            .map_err(|e| invalid(format!("bad ES256 signature from signer: {e}"))),
        JwsAlgorithm::ES384 => p384::ecdsa::Signature::from_slice(jws_signature)
            .map(|s| s.to_der().as_bytes().to_vec())
            .map_err(|e| invalid(format!("bad ES384 signature from signer: {e}"))),
        JwsAlgorithm::RS256 | JwsAlgorithm::EdDSA => Ok(jws_signature.to_vec()),
    }
}
