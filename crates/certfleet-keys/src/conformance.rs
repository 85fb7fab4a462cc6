//! A conformance suite every [`SigningKey`] backend must pass (file, PKCS#11, TPM).
//!
//! Everything is checked against ring's verifiers, independently of how the backend signs:
//! signatures verify under the public key taken from the JWK *and* from the SPKI, have the
//! JWS encoding (fixed-size `r || s` for ECDSA), the JWK has exactly the RFC 7638 required
//! members and its thumbprint recomputes, a CSR built through the key verifies, and
//! concurrent signing works.
//!
//! Enabled by the `conformance` feature; backends call it from their tests:
//!
//! ```no_run
//! # async fn backend_test(key: std::sync::Arc<dyn certfleet_keys::SigningKey>) {
//! if let Err(failure) = certfleet_keys::conformance::check_signing_key(&*key).await {
//!     panic!("{failure}");
//! }
//! # }
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use const_oid::db::{rfc5912, rfc8410};
use der::{Decode, Encode};
use ring::signature::{self as ring_sig, UnparsedPublicKey};
use serde_json::Value;
use sha2::{Digest, Sha256};
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::request::CertReq;

use crate::csr::{build_csr, signature_algorithm};
use crate::{JwsAlgorithm, SigningKey};

/// How many signatures run at once in the concurrency check.
const CONCURRENT_SIGNS: usize = 16;

/// Runs every check against `key`; the error names the key and the first failed check.
pub async fn check_signing_key(key: &dyn SigningKey) -> Result<(), String> {
    check(key)
        .await
        .map_err(|e| format!("{} ({}): {e}", key.key_ref(), key.jws_algorithm()))
}

async fn check(key: &dyn SigningKey) -> Result<(), String> {
    let alg = key.jws_algorithm();
    if alg != key.algorithm().jws_algorithm() {
        return Err(format!(
            "jws_algorithm {alg} does not match algorithm {}",
            key.algorithm()
        ));
    }
    if key.key_ref().scheme().is_empty() || key.key_ref().rest().is_empty() {
        return Err(format!(
            "key reference {:?} is not scheme:rest",
            key.key_ref().as_str()
        ));
    }
    let from_jwk = PublicKey::from_jwk(alg, key.public_jwk().as_json())?;
    check_thumbprint(key)?;
    let from_spki = PublicKey::from_spki(alg, key.public_key_der())?;
    if from_jwk != from_spki {
        return Err("the JWK and the SPKI describe different public keys".to_owned());
    }

    let messages: [&[u8]; 3] = [
        b"eyJhbGciOiJFUzI1NiJ9.eyJjb25mb3JtYW5jZSI6dHJ1ZX0",
        b"",
        &[0xa5; 70_000],
    ];
    for message in messages {
        let signature = key.sign(message).await.map_err(|e| format!("sign: {e}"))?;
        from_jwk.check_length(alg, &signature)?;
        from_jwk
            .verify(alg, message, &signature)
            .map_err(|e| format!("JWK: {e}"))?;
        from_spki
            .verify(alg, message, &signature)
            .map_err(|e| format!("SPKI: {e}"))?;
        let mut tampered = message.to_vec();
        tampered.push(b'!');
        if from_jwk.verify(alg, &tampered, &signature).is_ok() {
            return Err("a signature also verifies for a different message".to_owned());
        }
    }

    check_csr(key, &from_spki).await?;
    check_concurrent(key, &from_jwk).await
}

/// The public key in a form both the JWK and the SPKI can be compared in.
#[derive(Debug, PartialEq, Eq)]
enum PublicKey {
    /// Uncompressed SEC1 point `04 || x || y`.
    Ec(Vec<u8>),
    /// Big-endian modulus and exponent without leading zeros.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    Ed25519(Vec<u8>),
}

impl PublicKey {
    fn from_jwk(alg: JwsAlgorithm, jwk: &Value) -> Result<PublicKey, String> {
        let object = jwk.as_object().ok_or("JWK is not a JSON object")?;
        let (kty, mut required): (&str, Vec<&str>) = match alg {
            JwsAlgorithm::ES256 | JwsAlgorithm::ES384 => ("EC", vec!["crv", "kty", "x", "y"]),
            JwsAlgorithm::RS256 => ("RSA", vec!["e", "kty", "n"]),
            JwsAlgorithm::EdDSA => ("OKP", vec!["crv", "kty", "x"]),
        };
        let mut members: Vec<&str> = object.keys().map(String::as_str).collect();
        members.sort_unstable();
        required.sort_unstable();
        if members != required {
            return Err(format!(
                "JWK members are {members:?}; RFC 7638 requires exactly {required:?}"
            ));
        }
        let text = |name: &str| {
            object
                .get(name)
                .and_then(Value::as_str)
                .ok_or(name.to_owned())
        };
        let bytes = |name: &str| -> Result<Vec<u8>, String> {
            URL_SAFE_NO_PAD
                .decode(text(name).map_err(|n| format!("JWK {n} is not a string"))?)
                .map_err(|e| format!("JWK {name} is not base64url without padding: {e}"))
        };
        if text("kty") != Ok(kty) {
            return Err(format!(
                "JWK kty is {:?}, expected {kty:?}",
                object.get("kty")
            ));
        }
        let crv = |expected: &str| {
            if text("crv") == Ok(expected) {
                Ok(())
            } else {
                Err(format!(
                    "JWK crv is {:?}, expected {expected:?}",
                    object.get("crv")
                ))
            }
        };
        let exact = |name: &str, value: Vec<u8>, len: usize| {
            if value.len() == len {
                Ok(value)
            } else {
                Err(format!(
                    "JWK {name} has {} bytes, expected {len}",
                    value.len()
                ))
            }
        };
        match alg {
            JwsAlgorithm::ES256 | JwsAlgorithm::ES384 => {
                let (name, len) = if alg == JwsAlgorithm::ES256 {
                    ("P-256", 32)
                } else {
                    ("P-384", 48)
                };
                crv(name)?;
                let mut point = vec![0x04];
                point.extend(exact("x", bytes("x")?, len)?);
                point.extend(exact("y", bytes("y")?, len)?);
                Ok(PublicKey::Ec(point))
            }
            JwsAlgorithm::RS256 => {
                let (n, e) = (bytes("n")?, bytes("e")?);
                if n.first() == Some(&0) || e.first() == Some(&0) || n.is_empty() || e.is_empty() {
                    return Err("JWK n/e must be non-empty without leading zeros".to_owned());
                }
                Ok(PublicKey::Rsa { n, e })
            }
            JwsAlgorithm::EdDSA => {
                crv("Ed25519")?;
                Ok(PublicKey::Ed25519(exact("x", bytes("x")?, 32)?))
            }
        }
    }

    fn from_spki(alg: JwsAlgorithm, der: &[u8]) -> Result<PublicKey, String> {
        let spki = spki::SubjectPublicKeyInfoRef::from_der(der)
            .map_err(|e| format!("public_key_der is not a SubjectPublicKeyInfo: {e}"))?;
        let key = spki
            .subject_public_key
            .as_bytes()
            .ok_or("SPKI key has unused bits")?;
        let oid = spki.algorithm.oid;
        let params = spki.algorithm.parameters;
        let wrong = || format!("SPKI algorithm {oid} does not fit {alg}");
        match alg {
            JwsAlgorithm::ES256 | JwsAlgorithm::ES384 => {
                let (curve, len) = if alg == JwsAlgorithm::ES256 {
                    (rfc5912::SECP_256_R_1, 65)
                } else {
                    (rfc5912::SECP_384_R_1, 97)
                };
                let params_oid =
                    params.and_then(|p| p.decode_as::<der::asn1::ObjectIdentifier>().ok());
                if oid != rfc5912::ID_EC_PUBLIC_KEY || params_oid != Some(curve) {
                    return Err(wrong());
                }
                if key.len() != len || key[0] != 0x04 {
                    return Err("SPKI EC point is not uncompressed".to_owned());
                }
                Ok(PublicKey::Ec(key.to_vec()))
            }
            JwsAlgorithm::RS256 => {
                if oid != rfc5912::RSA_ENCRYPTION || params != Some(der::asn1::AnyRef::NULL) {
                    return Err(wrong());
                }
                let rsa =
                    pkcs1::RsaPublicKey::from_der(key).map_err(|e| format!("SPKI RSA key: {e}"))?;
                Ok(PublicKey::Rsa {
                    n: rsa.modulus.as_bytes().to_vec(),
                    e: rsa.public_exponent.as_bytes().to_vec(),
                })
            }
            JwsAlgorithm::EdDSA => {
                if oid != rfc8410::ID_ED_25519 || params.is_some() || key.len() != 32 {
                    return Err(wrong());
                }
                Ok(PublicKey::Ed25519(key.to_vec()))
            }
        }
    }

    fn check_length(&self, alg: JwsAlgorithm, signature: &[u8]) -> Result<(), String> {
        let expected = match (alg, self) {
            (JwsAlgorithm::ES256, _) => 64,
            (JwsAlgorithm::ES384, _) => 96,
            (JwsAlgorithm::EdDSA, _) => 64,
            (JwsAlgorithm::RS256, PublicKey::Rsa { n, .. }) => n.len(),
            (JwsAlgorithm::RS256, _) => return Err("RS256 key without an RSA JWK".to_owned()),
        };
        if signature.len() == expected {
            Ok(())
        } else {
            Err(format!(
                "{alg} signature has {} bytes, expected {expected} (JWS encoding, not DER)",
                signature.len()
            ))
        }
    }

    /// Verifies a JWS-encoded signature.
    fn verify(&self, alg: JwsAlgorithm, message: &[u8], signature: &[u8]) -> Result<(), String> {
        let result = match (alg, self) {
            (JwsAlgorithm::ES256, PublicKey::Ec(point)) => {
                UnparsedPublicKey::new(&ring_sig::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, signature)
            }
            (JwsAlgorithm::ES384, PublicKey::Ec(point)) => {
                UnparsedPublicKey::new(&ring_sig::ECDSA_P384_SHA384_FIXED, point)
                    .verify(message, signature)
            }
            (JwsAlgorithm::EdDSA, PublicKey::Ed25519(x)) => {
                UnparsedPublicKey::new(&ring_sig::ED25519, x).verify(message, signature)
            }
            (JwsAlgorithm::RS256, PublicKey::Rsa { n, e }) => ring_sig::RsaPublicKeyComponents {
                n: n.as_slice(),
                e: e.as_slice(),
            }
            .verify(&ring_sig::RSA_PKCS1_2048_8192_SHA256, message, signature),
            _ => return Err(format!("{alg} does not fit the key type")),
        };
        result.map_err(|_| format!("{alg} signature does not verify"))
    }

    /// Verifies an X.509-encoded signature (DER `Ecdsa-Sig-Value` for ECDSA).
    fn verify_x509(&self, alg: JwsAlgorithm, message: &[u8], sig: &[u8]) -> Result<(), String> {
        let result = match (alg, self) {
            (JwsAlgorithm::ES256, PublicKey::Ec(point)) => {
                UnparsedPublicKey::new(&ring_sig::ECDSA_P256_SHA256_ASN1, point)
                    .verify(message, sig)
            }
            (JwsAlgorithm::ES384, PublicKey::Ec(point)) => {
                UnparsedPublicKey::new(&ring_sig::ECDSA_P384_SHA384_ASN1, point)
                    .verify(message, sig)
            }
            _ => return self.verify(alg, message, sig),
        };
        result.map_err(|_| format!("{alg} CSR signature does not verify"))
    }
}

fn check_thumbprint(key: &dyn SigningKey) -> Result<(), String> {
    // Independent of `Jwk`'s own canonicalisation: sorted map, serde_json's compact form.
    let members: BTreeMap<&str, &str> = key
        .public_jwk()
        .as_json()
        .as_object()
        .ok_or("JWK is not a JSON object")?
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default()))
        .collect();
    let canonical = serde_json::to_string(&members).map_err(|e| e.to_string())?;
    let expected = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
    if key.public_jwk().thumbprint() != expected {
        return Err(format!(
            "JWK thumbprint {} does not match the RFC 7638 recomputation {expected}",
            key.public_jwk().thumbprint()
        ));
    }
    if key.public_jwk().key_type() != members.get("kty").copied().unwrap_or_default() {
        return Err("Jwk::key_type does not match kty".to_owned());
    }
    Ok(())
}

async fn check_csr(key: &dyn SigningKey, public: &PublicKey) -> Result<(), String> {
    let alg = key.jws_algorithm();
    let names = [
        "conformance.example".to_owned(),
        "*.conformance.example".to_owned(),
    ];
    let csr = build_csr(key, &names)
        .await
        .map_err(|e| format!("build_csr: {e}"))?;
    let request = CertReq::from_der(&csr.der).map_err(|e| format!("CSR does not parse: {e}"))?;
    let spki = request
        .info
        .public_key
        .to_der()
        .map_err(|e| e.to_string())?;
    if spki != key.public_key_der() {
        return Err("CSR public key differs from public_key_der".to_owned());
    }
    if request.algorithm != signature_algorithm(alg) {
        return Err(format!(
            "CSR signature algorithm {} is wrong",
            request.algorithm.oid
        ));
    }
    let signed = request.info.to_der().map_err(|e| e.to_string())?;
    let signature = request
        .signature
        .as_bytes()
        .ok_or("CSR signature has unused bits")?;
    public.verify_x509(alg, &signed, signature)?;
    let sans = csr_dns_names(&request)?;
    if sans != names {
        return Err(format!("CSR SANs are {sans:?}, expected {names:?}"));
    }
    Ok(())
}

/// The dNSName entries of the request's subjectAltName extension, in order.
pub fn csr_dns_names(request: &CertReq) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    for attribute in request.info.attributes.iter() {
        if attribute.oid != const_oid::db::rfc5912::ID_EXTENSION_REQ {
            continue;
        }
        for value in attribute.values.iter() {
            let extensions: Vec<x509_cert::ext::Extension> = value
                .decode_as()
                .map_err(|e| format!("extensionRequest: {e}"))?;
            for ext in extensions {
                if ext.extn_id != const_oid::db::rfc5280::ID_CE_SUBJECT_ALT_NAME {
                    continue;
                }
                let san = SubjectAltName::from_der(ext.extn_value.as_bytes())
                    .map_err(|e| format!("subjectAltName: {e}"))?;
                for name in san.0 {
                    if let GeneralName::DnsName(dns) = name {
                        names.push(dns.to_string());
                    }
                }
            }
        }
    }
    Ok(names)
}

async fn check_concurrent(key: &dyn SigningKey, public: &PublicKey) -> Result<(), String> {
    let alg = key.jws_algorithm();
    let messages: Vec<Vec<u8>> = (0..CONCURRENT_SIGNS)
        .map(|i| format!("concurrent.message-{i}").into_bytes())
        .collect();
    let signs = messages.iter().map(|m| key.sign(m)).collect();
    for (i, result) in join_all(signs).await.into_iter().enumerate() {
        let signature = result.map_err(|e| format!("concurrent sign {i}: {e}"))?;
        public
            .verify(alg, &messages[i], &signature)
            .map_err(|e| format!("concurrent sign {i}: {e}"))?;
    }
    Ok(())
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Polls all futures concurrently until every one is done (a dependency-free
/// `futures::future::join_all`); results are in input order.
async fn join_all<T>(mut futures: Vec<BoxFuture<'_, T>>) -> Vec<T> {
    let mut results: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, slot) in futures.iter_mut().zip(results.iter_mut()) {
            if slot.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *slot = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    results.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests;
