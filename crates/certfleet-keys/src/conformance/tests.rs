use std::sync::Arc;

use async_trait::async_trait;

use super::*;
use crate::test_support::key;
use crate::{Jwk, KeyAlgorithm, KeyError, KeyRef, x509_signature};

#[tokio::test]
async fn file_keys_of_every_algorithm_conform() {
    for alg in KeyAlgorithm::ALL {
        let key = key(alg);
        if let Err(failure) = check_signing_key(&key).await {
            panic!("{failure}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conforms_on_a_multi_thread_runtime_through_the_backend() {
    use crate::KeyBackend;
    for alg in [KeyAlgorithm::EcP384, KeyAlgorithm::Rsa3072] {
        let (_dir, path) = crate::test_support::key_file(alg);
        let key_ref = KeyRef::file(&path).expect("ref");
        let key: Arc<dyn SigningKey> = crate::file::FileBackend.load(&key_ref).await.expect("load");
        check_signing_key(&*key).await.expect("conforms");
    }
}

/// Wraps a good key and breaks one thing, to show the suite catches it.
#[derive(Debug)]
struct Broken {
    inner: crate::file::FileKey,
    fault: Fault,
    jwk: Jwk,
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    DerSignature,
    WrongJwk,
    WrongAlgorithm,
}

#[async_trait]
impl SigningKey for Broken {
    fn key_ref(&self) -> &KeyRef {
        self.inner.key_ref()
    }
    fn algorithm(&self) -> KeyAlgorithm {
        match self.fault {
            Fault::WrongAlgorithm => KeyAlgorithm::EcP384,
            _ => self.inner.algorithm(),
        }
    }
    fn public_jwk(&self) -> &Jwk {
        &self.jwk
    }
    fn public_key_der(&self) -> &[u8] {
        self.inner.public_key_der()
    }
    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let signature = self.inner.sign(message).await?;
        match self.fault {
            Fault::DerSignature => x509_signature(JwsAlgorithm::ES256, &signature),
            _ => Ok(signature),
        }
    }
}

async fn failure(fault: Fault) -> String {
    let inner = key(KeyAlgorithm::EcP256);
    let jwk = match fault {
        Fault::WrongJwk => key(KeyAlgorithm::EcP384).public_jwk().clone(),
        _ => inner.public_jwk().clone(),
    };
    let broken = Broken { inner, fault, jwk };
    check_signing_key(&broken).await.expect_err("must fail")
}

#[tokio::test]
async fn the_suite_catches_broken_keys() {
    let der = failure(Fault::DerSignature).await;
    assert!(der.contains("expected 64 (JWS encoding, not DER)"), "{der}");
    let jwk = failure(Fault::WrongJwk).await;
    assert!(jwk.contains("crv"), "{jwk}");
    let alg = failure(Fault::WrongAlgorithm).await;
    assert!(alg.contains("SPKI") || alg.contains("crv"), "{alg}");
}

#[test]
fn jwk_with_extra_members_is_rejected() {
    let mut json = key(KeyAlgorithm::EcP256).public_jwk().as_json().clone();
    json["kid"] = serde_json::Value::from("k1");
    let err = PublicKey::from_jwk(JwsAlgorithm::ES256, &json).expect_err("extra member");
    assert!(err.contains("RFC 7638 requires exactly"), "{err}");
}
