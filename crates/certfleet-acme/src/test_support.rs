//! Test helpers: an in-memory P-256 signing key and JWS verification.

pub(crate) mod mock;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use certfleet_keys::{Jwk, KeyAlgorithm, KeyError, KeyRef, SigningKey};
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::EncodePublicKey;

use crate::FlattenedJws;

/// A P-256 key held in memory, counting its signatures.
#[derive(Debug)]
pub(crate) struct TestKey {
    key: p256::ecdsa::SigningKey,
    jwk: Jwk,
    spki: Vec<u8>,
    key_ref: KeyRef,
    pub(crate) signatures: AtomicU64,
}

impl TestKey {
    /// A deterministic key from a seed byte (1..=255).
    pub(crate) fn new(seed: u8) -> TestKey {
        let mut scalar = [0u8; 32];
        scalar[31] = seed;
        scalar[0] = 0x11;
        let key = p256::ecdsa::SigningKey::from_slice(&scalar).expect("valid scalar");
        let point = key.verifying_key().to_encoded_point(false);
        let jwk = Jwk::ec(
            "P-256",
            point.x().expect("uncompressed point"),
            point.y().expect("uncompressed point"),
        );
        let spki = key
            .verifying_key()
            .to_public_key_der()
            .expect("spki")
            .as_bytes()
            .to_vec();
        TestKey {
            key,
            jwk,
            spki,
            key_ref: format!("test:p256-{seed}").parse().expect("key ref"),
            signatures: AtomicU64::new(0),
        }
    }

    pub(crate) fn arc(seed: u8) -> Arc<TestKey> {
        Arc::new(TestKey::new(seed))
    }
}

#[async_trait]
impl SigningKey for TestKey {
    fn key_ref(&self) -> &KeyRef {
        &self.key_ref
    }

    fn algorithm(&self) -> KeyAlgorithm {
        KeyAlgorithm::EcP256
    }

    fn public_jwk(&self) -> &Jwk {
        &self.jwk
    }

    fn public_key_der(&self) -> &[u8] {
        &self.spki
    }

    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.signatures.fetch_add(1, Ordering::Relaxed);
        let sig: Signature = self.key.sign(message);
        Ok(sig.to_bytes().to_vec())
    }
}

/// Verifies an ES256 flattened JWS against the P-256 JWK `jwk` (a JSON object).
pub(crate) fn verify_es256(jws: &FlattenedJws, jwk: &serde_json::Value) -> bool {
    let coord = |name: &str| {
        jwk.get(name)
            .and_then(|v| v.as_str())
            .and_then(|s| URL_SAFE_NO_PAD.decode(s).ok())
    };
    let (Some(x), Some(y)) = (coord("x"), coord("y")) else {
        return false;
    };
    let point = p256::EncodedPoint::from_affine_coordinates(
        x.as_slice().into(),
        y.as_slice().into(),
        false,
    );
    let Ok(vk) = VerifyingKey::from_encoded_point(&point) else {
        return false;
    };
    let Ok(sig_bytes) = URL_SAFE_NO_PAD.decode(&jws.signature) else {
        return false;
    };
    let Ok(sig) = Signature::from_slice(&sig_bytes) else {
        return false;
    };
    vk.verify(jws.signing_input().as_bytes(), &sig).is_ok()
}

/// Installs the ring provider for tests that build an HTTP client.
pub(crate) fn install_crypto_provider() {
    // Err means a provider is already installed: fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The RFC 9773 Appendix A example certificate.
pub(crate) const RFC9773_CERT_PEM: &str = include_str!("../testdata/rfc9773-example-cert.pem");

/// DER of the first PEM certificate in `pem`.
pub(crate) fn pem_to_der(pem: &str) -> Vec<u8> {
    crate::CertificateChain::from_pem(pem)
        .expect("valid PEM")
        .certs_der
        .remove(0)
}

/// A client for a made-up CA, built without any request.
pub(crate) fn offline_client(directory_json: &str) -> crate::AcmeClient {
    install_crypto_provider();
    let directory = crate::Directory::from_json(directory_json.as_bytes()).expect("directory");
    crate::AcmeClient::with_directory(
        "https://ca.test/dir",
        directory,
        crate::ClientConfig::default(),
    )
    .expect("client")
}

/// A directory for `https://ca.test` with ARI.
pub(crate) const TEST_DIRECTORY: &str = r#"{
    "newNonce": "https://ca.test/new-nonce",
    "newAccount": "https://ca.test/new-account",
    "newOrder": "https://ca.test/new-order",
    "revokeCert": "https://ca.test/revoke-cert",
    "keyChange": "https://ca.test/key-change",
    "renewalInfo": "https://ca.test/renewal-info/"
}"#;
