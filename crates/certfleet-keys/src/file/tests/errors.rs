//! Files that are not a usable private key: every error names the file and never echoes
//! key material.

use der::Encode;
use der::asn1::{AnyRef, UintRef};
use der::pem::LineEnding;
use p256::pkcs8::EncodePrivateKey;
use rsa::pkcs1::EncodeRsaPrivateKey;

use super::*;

/// Loads `contents` from a temporary file and returns the error, checking it names the file.
fn load_err(contents: &[u8]) -> KeyError {
    let (_dir, path) = write_temp("bad.pem", contents);
    let err = FileKey::load(&path).expect_err("must be rejected");
    let message = err.to_string();
    assert!(
        message.contains(&path.display().to_string()),
        "no path in: {message}"
    );
    assert_eq!(message, message.trim_end_matches('.'), "no trailing period");
    err
}

fn pem(label: &str, der: &[u8]) -> String {
    der::pem::encode_string(label, LineEnding::LF, der).expect("pem")
}

#[test]
fn missing_file_and_directory() {
    let err = FileKey::load(Path::new("/nonexistent/dir/key.pem")).expect_err("missing");
    assert!(matches!(err, KeyError::Io { .. }), "{err}");
    assert!(
        err.to_string().starts_with("/nonexistent/dir/key.pem: "),
        "{err}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let err = FileKey::load(dir.path()).expect_err("directory");
    assert!(
        err.to_string().contains(&dir.path().display().to_string()),
        "{err}"
    );
}

#[test]
fn empty_binary_and_non_pem_files() {
    let err = load_err(b"");
    assert!(err.to_string().contains("no PEM data"), "{err}");
    let err = load_err(b"just some text\n");
    assert!(err.to_string().contains("no PEM data"), "{err}");
    let err = load_err(&[0x30, 0x82, 0x01, 0xff, 0x80, 0x90]);
    assert!(err.to_string().contains("not a PEM file"), "{err}");
}

#[test]
fn garbled_pem_is_rejected_without_echoing_it() {
    let good = key_pem(KeyAlgorithm::EcP256);
    let body_line = good.lines().nth(1).expect("body").to_owned();

    let mut chars: Vec<char> = body_line.chars().collect();
    chars[10] = '!';
    let garbled = good.replace(&body_line, &chars.iter().collect::<String>());
    let err = load_err(garbled.as_bytes());
    assert!(matches!(err, KeyError::Parse { .. }), "{err}");
    assert!(err.to_string().contains("malformed PEM"), "{err}");
    for chunk in body_line.as_bytes().chunks(12) {
        let chunk = std::str::from_utf8(chunk).expect("ascii");
        assert!(
            !err.to_string().contains(chunk),
            "echoes key material: {err}"
        );
    }

    // Valid base64, truncated DER.
    let truncated = pem("PRIVATE KEY", &[0x30, 0x81, 0x87, 0x02, 0x01, 0x00]);
    let err = load_err(truncated.as_bytes());
    assert!(err.to_string().contains("malformed PKCS#8"), "{err}");

    let unterminated = good.replace("-----END PRIVATE KEY-----", "");
    let err = load_err(unterminated.as_bytes());
    assert!(err.to_string().contains("no END line"), "{err}");
}

#[test]
fn certificates_public_keys_and_requests_are_not_private_keys() {
    let cert = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n";
    let err = load_err(cert.as_bytes());
    assert!(
        matches!(
            err,
            KeyError::NotAPrivateKey {
                found: "certificate",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("this is a certificate, not a private key"),
        "{err}"
    );

    let public = pem("PUBLIC KEY", key(KeyAlgorithm::EcP256).public_key_der());
    let err = load_err(public.as_bytes());
    assert!(
        err.to_string()
            .contains("this is a public key, not a private key"),
        "{err}"
    );

    let csr = "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n";
    let err = load_err(csr.as_bytes());
    assert!(
        err.to_string()
            .contains("certificate request, not a private key"),
        "{err}"
    );

    // A certificate chain with its key is fine: the key is picked out.
    let with_key = format!("{cert}{}", key_pem(KeyAlgorithm::EcP256));
    let (_dir, path) = write_temp("combined.pem", with_key.as_bytes());
    FileKey::load(&path).expect("key next to a certificate");
}

#[test]
fn encrypted_keys_are_rejected_with_a_hint() {
    let pkcs8 = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHzBJBgkqhkiG9w0BBQ0wPDAbBgkqhkiG9w0BBQwwDgQI\n-----END ENCRYPTED PRIVATE KEY-----\n";
    let err = load_err(pkcs8.as_bytes());
    assert!(matches!(err, KeyError::Encrypted { .. }), "{err}");
    assert!(
        err.to_string().contains("encrypted keys are not supported"),
        "{err}"
    );
    assert!(err.to_string().contains("openssl pkcs8"), "{err}");

    let secret = rsa::RsaPrivateKey::from_pkcs8_pem(&key_pem(KeyAlgorithm::Rsa2048)).expect("pem");
    let pkcs1 = secret.to_pkcs1_pem(LineEnding::LF).expect("pkcs1");
    let legacy = pkcs1.replacen(
        "-----BEGIN RSA PRIVATE KEY-----\n",
        "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\
         DEK-Info: AES-128-CBC,0123456789ABCDEF0123456789ABCDEF\n\n",
        1,
    );
    let err = load_err(legacy.as_bytes());
    assert!(matches!(err, KeyError::Encrypted { .. }), "{err}");
}

#[test]
fn unsupported_curves_and_algorithms() {
    let p521 = pkcs8::PrivateKeyInfo {
        algorithm: pkcs8::AlgorithmIdentifierRef {
            oid: const_oid::db::rfc5912::ID_EC_PUBLIC_KEY,
            parameters: Some(AnyRef::from(&const_oid::db::rfc5912::SECP_521_R_1)),
        },
        private_key: &[0x30, 0x03, 0x02, 0x01, 0x01],
        public_key: None,
    };
    let err = load_err(pem("PRIVATE KEY", &p521.to_der().expect("der")).as_bytes());
    assert!(matches!(err, KeyError::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("EC curve P-521"), "{err}");

    let ed448 = pkcs8::PrivateKeyInfo {
        algorithm: pkcs8::AlgorithmIdentifierRef {
            oid: const_oid::db::rfc8410::ID_ED_448,
            parameters: None,
        },
        private_key: &[0x04, 0x02, 0x00, 0x00],
        public_key: None,
    };
    let err = load_err(pem("PRIVATE KEY", &ed448.to_der().expect("der")).as_bytes());
    assert!(
        err.to_string().contains("unsupported key: Ed448 keys"),
        "{err}"
    );

    let k1_oid = const_oid::ObjectIdentifier::new_unwrap("1.3.132.0.10");
    let secp256k1 = sec1::EcPrivateKey {
        private_key: &[0x11; 32],
        parameters: Some(sec1::EcParameters::NamedCurve(k1_oid)),
        public_key: None,
    };
    let err = load_err(pem("EC PRIVATE KEY", &secp256k1.to_der().expect("der")).as_bytes());
    assert!(err.to_string().contains("EC curve secp256k1"), "{err}");

    let ssh = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE=\n-----END OPENSSH PRIVATE KEY-----\n";
    let err = load_err(ssh.as_bytes());
    assert!(err.to_string().contains("ssh-keygen"), "{err}");
}

#[test]
fn rsa_sizes_outside_2048_to_4096_are_rejected() {
    let small = rsa::RsaPrivateKey::new(&mut OsRng, 1024).expect("generate");
    let err = load_err(small.to_pkcs1_pem(LineEnding::LF).expect("pem").as_bytes());
    assert!(matches!(err, KeyError::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("RSA key of 1024 bits"), "{err}");
    let err = load_err(small.to_pkcs8_pem(LineEnding::LF).expect("pem").as_bytes());
    assert!(err.to_string().contains("RSA key of 1024 bits"), "{err}");

    // Only the size is looked at before rejecting, so a structurally valid stand-in will do
    // for an 8192-bit key (generating a real one takes minutes).
    let modulus = [0xc5; 1024];
    let one = UintRef::new(&[1]).expect("uint");
    let huge = pkcs1::RsaPrivateKey {
        modulus: UintRef::new(&modulus).expect("uint"),
        public_exponent: UintRef::new(&[1, 0, 1]).expect("uint"),
        private_exponent: one,
        prime1: one,
        prime2: one,
        exponent1: one,
        exponent2: one,
        coefficient: one,
        other_prime_infos: None,
    };
    let err = load_err(pem("RSA PRIVATE KEY", &huge.to_der().expect("der")).as_bytes());
    assert!(err.to_string().contains("RSA key of 8192 bits"), "{err}");
}

#[test]
fn rsa_keys_ring_refuses_are_unsupported() {
    // ring requires e >= 65537.
    let e3 = rsa::RsaPrivateKey::new_with_exp(&mut OsRng, 2048, &rsa::BigUint::from(3u8))
        .expect("generate");
    let err = load_err(e3.to_pkcs1_pem(LineEnding::LF).expect("pem").as_bytes());
    assert!(matches!(err, KeyError::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("RSA key rejected"), "{err}");
}

#[test]
fn more_than_one_key_is_ambiguous() {
    let two = format!(
        "{}{}",
        key_pem(KeyAlgorithm::EcP256),
        key_pem(KeyAlgorithm::Ed25519)
    );
    let err = load_err(two.as_bytes());
    assert!(
        err.to_string().contains("2 private keys in one file"),
        "{err}"
    );
}
