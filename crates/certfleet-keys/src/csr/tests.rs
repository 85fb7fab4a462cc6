use std::process::Command;

use der::Decode;
use p256::ecdsa::signature::Verifier;
use p256::pkcs8::DecodePublicKey;
use x509_cert::ext::pkix::name::GeneralName;

use super::*;
use crate::conformance::csr_dns_names;
use crate::test_support::{key, openssl_available};
use crate::{KeyAlgorithm, SigningKey};

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn common_name(request: &CertReq) -> Option<String> {
    let rdn = request.info.subject.0.first()?;
    let atv = rdn.0.iter().find(|a| a.oid == rfc4519::COMMON_NAME)?;
    Some(atv.value.decode_as::<String>().expect("UTF8String CN"))
}

/// Verifies the request's signature with RustCrypto (ring for RSA, whose verification in
/// the `rsa` crate would need an extra `sha2/oid` feature).
fn verify_in_software(alg: KeyAlgorithm, request: &CertReq) {
    let signed = request.info.to_der().expect("der");
    let signature = request.signature.as_bytes().expect("octets");
    let spki = request.info.public_key.to_der().expect("der");
    match alg {
        KeyAlgorithm::EcP256 => {
            let key = p256::ecdsa::VerifyingKey::from_public_key_der(&spki).expect("spki");
            let sig = p256::ecdsa::DerSignature::from_bytes(signature).expect("DER sig");
            key.verify(&signed, &sig).expect("ES256 CSR signature");
        }
        KeyAlgorithm::EcP384 => {
            let key = p384::ecdsa::VerifyingKey::from_public_key_der(&spki).expect("spki");
            let sig = p384::ecdsa::DerSignature::from_bytes(signature).expect("DER sig");
            key.verify(&signed, &sig).expect("ES384 CSR signature");
        }
        KeyAlgorithm::Ed25519 => {
            let key = ed25519_dalek::VerifyingKey::from_public_key_der(&spki).expect("spki");
            let sig = ed25519_dalek::Signature::from_slice(signature).expect("sig");
            key.verify(&signed, &sig).expect("Ed25519 CSR signature");
        }
        _ => {
            let raw = request
                .info
                .public_key
                .subject_public_key
                .as_bytes()
                .expect("key");
            ring::signature::UnparsedPublicKey::new(
                &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                raw,
            )
            .verify(&signed, signature)
            .expect("RS256 CSR signature");
        }
    }
}

/// `openssl req -verify` on the PEM, when openssl is installed (always under CI).
fn openssl_verify(pem: &str, expect_in_text: &[&str]) {
    if !openssl_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("req.pem");
    std::fs::write(&path, pem).expect("write");
    let out = Command::new("openssl")
        .args(["req", "-verify", "-noout", "-text", "-in"])
        .arg(&path)
        .output()
        .expect("run openssl");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "openssl req -verify failed:\n{all}");
    assert!(all.contains("verify OK"), "{all}");
    for needle in expect_in_text {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
}

#[tokio::test]
async fn csrs_for_every_algorithm_parse_and_verify() {
    let want = names(&["example.com", "www.example.com", "*.example.com"]);
    for alg in KeyAlgorithm::ALL {
        let key = key(alg);
        let csr = build_csr(&key, &want).await.expect("build");
        let request = CertReq::from_der(&csr.der).expect("parse");
        assert_eq!(request.info.version, Version::V1);
        assert_eq!(csr_dns_names(&request).expect("sans"), want, "{alg}");
        assert_eq!(
            common_name(&request).as_deref(),
            Some("example.com"),
            "{alg}"
        );
        assert_eq!(
            request.algorithm,
            signature_algorithm(alg.jws_algorithm()),
            "{alg}"
        );
        assert_eq!(
            request.info.public_key.to_der().expect("der"),
            key.public_key_der()
        );
        verify_in_software(alg, &request);

        let pem = csr.to_pem();
        assert!(
            pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----\n"),
            "{pem}"
        );
        let oid_name = match alg.jws_algorithm() {
            JwsAlgorithm::ES256 => "ecdsa-with-SHA256",
            JwsAlgorithm::ES384 => "ecdsa-with-SHA384",
            JwsAlgorithm::RS256 => "sha256WithRSAEncryption",
            JwsAlgorithm::EdDSA => "ED25519",
        };
        openssl_verify(
            &pem,
            &[oid_name, "DNS:www.example.com", "DNS:*.example.com"],
        );
    }
}

#[test]
fn rsa_signature_algorithm_has_null_parameters() {
    let id = signature_algorithm(JwsAlgorithm::RS256);
    assert_eq!(
        id.to_der().expect("der"),
        [
            0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05,
            0x00
        ]
    );
    let ec = signature_algorithm(JwsAlgorithm::ES256);
    assert_eq!(
        ec.to_der().expect("der"),
        [
            0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02
        ]
    );
}

#[tokio::test]
async fn long_first_name_gives_empty_subject_and_critical_san() {
    let long = format!("{}.example.com", "a".repeat(60));
    let key = key(KeyAlgorithm::EcP256);
    let csr = build_csr(&key, &names(&[&long, "short.example"]))
        .await
        .expect("build");
    let request = CertReq::from_der(&csr.der).expect("parse");
    assert!(request.info.subject.0.is_empty());
    assert_eq!(
        csr_dns_names(&request).expect("sans"),
        [long.as_str(), "short.example"]
    );
    let attr = request.info.attributes.iter().next().expect("attribute");
    let exts: Vec<x509_cert::ext::Extension> = attr
        .values
        .iter()
        .next()
        .expect("value")
        .decode_as()
        .expect("extensions");
    assert!(
        exts[0].critical,
        "SAN must be critical when the subject is empty"
    );
    verify_in_software(KeyAlgorithm::EcP256, &request);
    openssl_verify(&csr.to_pem(), &[]);
}

#[tokio::test]
async fn ip_addresses_become_ip_sans_and_duplicates_are_dropped() {
    let key = key(KeyAlgorithm::Ed25519);
    let list = names(&["example.org", "192.0.2.7", "example.org", "2001:db8::1"]);
    let csr = build_csr(&key, &list).await.expect("build");
    let request = CertReq::from_der(&csr.der).expect("parse");
    assert_eq!(csr_dns_names(&request).expect("sans"), ["example.org"]);
    let attr = request.info.attributes.iter().next().expect("attribute");
    let exts: Vec<x509_cert::ext::Extension> = attr
        .values
        .iter()
        .next()
        .expect("value")
        .decode_as()
        .expect("extensions");
    let san = SubjectAltName::from_der(exts[0].extn_value.as_bytes()).expect("san");
    let ips: Vec<Vec<u8>> = san
        .0
        .iter()
        .filter_map(|n| match n {
            GeneralName::IpAddress(octets) => Some(octets.as_bytes().to_vec()),
            _ => None,
        })
        .collect();
    assert_eq!(ips.len(), 2);
    assert_eq!(ips[0], [192, 0, 2, 7]);
    assert_eq!(ips[1].len(), 16);
    openssl_verify(&csr.to_pem(), &["IP Address:192.0.2.7"]);
}

#[tokio::test]
async fn bad_name_lists_are_rejected() {
    let key = key(KeyAlgorithm::EcP256);
    let err = build_csr(&key, &[]).await.expect_err("empty");
    assert!(matches!(err, KeyError::Csr { .. }), "{err}");
    assert!(err.to_string().contains("at least one"), "{err}");

    let err = build_csr(&key, &names(&["bücher.example"]))
        .await
        .expect_err("non-ASCII");
    assert!(err.to_string().contains("punycode"), "{err}");

    let err = build_csr(&key, &names(&["ok.example", ""]))
        .await
        .expect_err("empty name");
    assert!(err.to_string().contains("empty name"), "{err}");
}

#[test]
fn build_csr_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let key = key(KeyAlgorithm::EcP256);
    let names = names(&["example.com"]);
    let future = build_csr(&key, &names);
    assert_send(&future);
    drop(future);
}
