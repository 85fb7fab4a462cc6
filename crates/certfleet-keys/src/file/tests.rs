use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};

use der::pem::LineEnding;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use rsa::pkcs1::EncodeRsaPrivateKey;

use super::*;
use crate::test_support::{key, key_file, key_pem, poll_once, write_temp};

mod errors;
mod rfc_vectors;

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

/// Loads `pem` from a temporary file and checks it is the same key as `original`.
fn assert_loads_as(pem: &str, original: &FileKey) {
    let (_dir, path) = write_temp("key.pem", pem.as_bytes());
    let loaded = FileKey::load(&path).expect("load");
    assert_eq!(loaded.algorithm(), original.algorithm());
    assert_eq!(loaded.public_jwk(), original.public_jwk());
    assert_eq!(loaded.public_key_der(), original.public_key_der());
}

#[test]
fn generate_writes_private_pkcs8_for_every_algorithm() {
    let dir = tempfile::tempdir().expect("tempdir");
    for alg in [
        KeyAlgorithm::EcP256,
        KeyAlgorithm::EcP384,
        KeyAlgorithm::Ed25519,
    ] {
        let path = dir.path().join(format!("new/sub/{alg}.pem"));
        let generated = FileKey::generate(alg, &path).expect("generate");
        assert_eq!(generated.algorithm(), alg);
        assert_eq!(mode_of(&path), 0o600);
        let loaded = FileKey::load(&path).expect("load");
        assert_eq!(loaded.public_jwk(), generated.public_jwk());
        assert_eq!(
            loaded.key_ref().as_str(),
            format!("file:{}", path.display())
        );
    }
    assert_eq!(mode_of(&dir.path().join("new")), 0o700);
    assert_eq!(mode_of(&dir.path().join("new/sub")), 0o700);
    // Only the keys: no temporary files left behind.
    let mut names: Vec<_> = std::fs::read_dir(dir.path().join("new/sub"))
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    names.sort();
    assert_eq!(names, ["eddsa.pem", "es256.pem", "es384.pem"]);
}

#[test]
fn shared_keys_cover_all_algorithms_including_rsa() {
    for alg in KeyAlgorithm::ALL {
        let pem = key_pem(alg);
        assert!(
            pem.starts_with("-----BEGIN PRIVATE KEY-----\n"),
            "{alg}: PKCS#8"
        );
        let (_dir, path) = key_file(alg);
        let key = FileKey::load(&path).expect("load");
        assert_eq!(key.algorithm(), alg);
        assert_eq!(key.jws_algorithm(), alg.jws_algorithm());
        assert_eq!(key.key_ref().file_path(), Some(path));
    }
    let rsa = key(KeyAlgorithm::Rsa4096);
    assert_eq!(rsa.public_jwk().key_type(), "RSA");
    let n = rsa.public_jwk().as_json()["n"].as_str().expect("n").len();
    assert_eq!(
        n, 683,
        "4096-bit modulus is 512 bytes = 683 base64url characters"
    );
}

#[test]
fn generate_refuses_to_overwrite() {
    let (_dir, path) = write_temp("acct.pem", b"precious");
    let err = FileKey::generate(KeyAlgorithm::EcP256, &path).expect_err("must refuse");
    assert!(matches!(err, KeyError::AlreadyExists { .. }), "{err}");
    assert!(err.to_string().contains(&path.display().to_string()));
    assert_eq!(std::fs::read(&path).expect("read"), b"precious");
}

#[test]
fn ec_keys_round_trip_through_pkcs8_and_sec1() {
    let p256_key = key(KeyAlgorithm::EcP256);
    let secret = p256::SecretKey::from_pkcs8_pem(&key_pem(KeyAlgorithm::EcP256)).expect("pem");
    assert_loads_as(
        &secret.to_pkcs8_pem(LineEnding::LF).expect("pkcs8"),
        &p256_key,
    );
    assert_loads_as(
        &secret.to_sec1_pem(LineEnding::LF).expect("sec1"),
        &p256_key,
    );
    // CRLF line endings, as written on Windows.
    assert_loads_as(
        &secret.to_sec1_pem(LineEnding::CRLF).expect("sec1"),
        &p256_key,
    );

    let p384_key = key(KeyAlgorithm::EcP384);
    let secret = p384::SecretKey::from_pkcs8_pem(&key_pem(KeyAlgorithm::EcP384)).expect("pem");
    assert_loads_as(
        &secret.to_pkcs8_pem(LineEnding::LF).expect("pkcs8"),
        &p384_key,
    );
    let sec1 = secret.to_sec1_pem(LineEnding::LF).expect("sec1");
    assert_loads_as(&sec1, &p384_key);
    // `openssl ecparam -genkey` puts an EC PARAMETERS block first.
    let params = "-----BEGIN EC PARAMETERS-----\nBgUrgQQAIg==\n-----END EC PARAMETERS-----\n";
    assert_loads_as(&format!("{params}{}", sec1.as_str()), &p384_key);
}

#[test]
fn sec1_without_curve_parameters_uses_scalar_length() {
    let p256_key = key(KeyAlgorithm::EcP256);
    let secret = p256::SecretKey::from_pkcs8_pem(&key_pem(KeyAlgorithm::EcP256)).expect("pem");
    let scalar = secret.to_bytes();
    let sec1 = sec1::EcPrivateKey {
        private_key: &scalar,
        parameters: None,
        public_key: None,
    };
    let der = der::Encode::to_der(&sec1).expect("der");
    let pem = der::pem::encode_string("EC PRIVATE KEY", LineEnding::LF, &der).expect("pem");
    assert_loads_as(&pem, &p256_key);
}

/// The public point a file carries is used as is (no scalar multiplication on load) but
/// only after ring checked it belongs to the private key: a file pairing one key's scalar
/// with another key's point is refused.
#[test]
fn ec_public_point_in_the_file_must_match_the_private_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = FileKey::generate(KeyAlgorithm::EcP256, &dir.path().join("a.pem")).expect("a");
    let b = FileKey::generate(KeyAlgorithm::EcP256, &dir.path().join("b.pem")).expect("b");
    let sec1_of = |pem: &str| {
        let secret = p256::SecretKey::from_pkcs8_pem(pem).expect("pem");
        let point = secret.public_key().to_encoded_point(false);
        (secret.to_bytes(), point)
    };
    let a_pem = std::fs::read_to_string(dir.path().join("a.pem")).expect("read a");
    let b_pem = std::fs::read_to_string(dir.path().join("b.pem")).expect("read b");
    let (a_scalar, a_point) = sec1_of(&a_pem);
    let (_, b_point) = sec1_of(&b_pem);
    let encode = |point: &[u8]| {
        let key = sec1::EcPrivateKey {
            private_key: &a_scalar,
            parameters: Some(sec1::EcParameters::NamedCurve(
                const_oid::db::rfc5912::SECP_256_R_1,
            )),
            public_key: Some(point),
        };
        let der = der::Encode::to_der(&key).expect("der");
        der::pem::encode_string("EC PRIVATE KEY", LineEnding::LF, &der).expect("pem")
    };
    assert_loads_as(&encode(a_point.as_bytes()), &a);
    let (_guard, path) = write_temp("mixed.pem", encode(b_point.as_bytes()).as_bytes());
    let err = FileKey::load(&path).expect_err("a foreign public point is refused");
    assert!(err.to_string().contains("EC key rejected"), "{err}");
    assert_ne!(a.public_jwk(), b.public_jwk());
}

#[test]
fn rsa_keys_round_trip_through_pkcs8_and_pkcs1() {
    for alg in [
        KeyAlgorithm::Rsa2048,
        KeyAlgorithm::Rsa3072,
        KeyAlgorithm::Rsa4096,
    ] {
        let original = key(alg);
        let secret = rsa::RsaPrivateKey::from_pkcs8_pem(&key_pem(alg)).expect("pem");
        assert_loads_as(
            &secret.to_pkcs8_pem(LineEnding::LF).expect("pkcs8"),
            &original,
        );
        assert_loads_as(
            &secret.to_pkcs1_pem(LineEnding::LF).expect("pkcs1"),
            &original,
        );
    }
}

#[test]
fn ed25519_round_trips_through_pkcs8_v1_and_v2() {
    let original = key(KeyAlgorithm::Ed25519);
    let secret =
        ed25519_dalek::SigningKey::from_pkcs8_pem(&key_pem(KeyAlgorithm::Ed25519)).expect("pem");
    // v2 (OneAsymmetricKey) carries the public key as well.
    let v2 = secret.to_pkcs8_pem(LineEnding::LF).expect("pkcs8 v2");
    assert_loads_as(&v2, &original);
    let v1 = ed25519_dalek::pkcs8::KeypairBytes {
        secret_key: secret.to_bytes(),
        public_key: None,
    }
    .to_pkcs8_pem(LineEnding::LF)
    .expect("pkcs8 v1");
    assert_loads_as(&v1, &original);
}

#[test]
fn openssl_generated_keys_load() {
    if !crate::test_support::openssl_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: [(&[&str], KeyAlgorithm); 4] = [
        (
            &["ecparam", "-genkey", "-name", "prime256v1"],
            KeyAlgorithm::EcP256,
        ),
        (
            &["ecparam", "-genkey", "-name", "secp384r1"],
            KeyAlgorithm::EcP384,
        ),
        (&["genpkey", "-algorithm", "ed25519"], KeyAlgorithm::Ed25519),
        (&["genrsa", "-traditional", "2048"], KeyAlgorithm::Rsa2048),
    ];
    for (i, (args, alg)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("{i}.pem"));
        let status = std::process::Command::new("openssl")
            .arg(args[0])
            .arg("-out")
            .arg(&path)
            .args(&args[1..])
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run openssl");
        assert!(status.success(), "openssl {args:?}");
        let loaded = FileKey::load(&path).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert_eq!(loaded.algorithm(), alg, "{args:?}");
    }
}

#[test]
fn odd_rsa_sizes_map_to_listed_algorithms() {
    assert_eq!(rsa_algorithm(2048), KeyAlgorithm::Rsa2048);
    assert_eq!(rsa_algorithm(2560), KeyAlgorithm::Rsa2048);
    assert_eq!(rsa_algorithm(3072), KeyAlgorithm::Rsa3072);
    assert_eq!(rsa_algorithm(4096), KeyAlgorithm::Rsa4096);
}

#[test]
fn loose_permissions_are_reported_and_logged_but_allowed() {
    let (_dir, path) = write_temp("key.pem", key_pem(KeyAlgorithm::EcP256).as_bytes());
    assert_eq!(loose_permissions(&path), None);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert_eq!(loose_permissions(&path), Some(0o644));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    assert_eq!(loose_permissions(&path), Some(0o640));
    assert_eq!(loose_permissions(Path::new("/nonexistent/key.pem")), None);

    let logs = capture_logs(|| FileKey::load(&path).map(|_| ()));
    logs.0.expect("loose permissions do not fail the load");
    assert!(logs.1.contains("WARN"), "{}", logs.1);
    assert!(logs.1.contains(&path.display().to_string()), "{}", logs.1);
    assert!(logs.1.contains("640"), "{}", logs.1);
    assert!(logs.1.contains("chmod 600"), "{}", logs.1);

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let logs = capture_logs(|| FileKey::load(&path).map(|_| ()));
    logs.0.expect("load");
    assert!(logs.1.is_empty(), "{}", logs.1);
}

/// Runs `f` with a subscriber that records formatted events.
fn capture_logs<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let value = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(buffer.0.lock().expect("lock").clone()).expect("utf-8");
    (value, text)
}

#[test]
fn debug_output_has_no_key_material() {
    let pem = key_pem(KeyAlgorithm::EcP256);
    let secret = p256::SecretKey::from_pkcs8_pem(&pem).expect("pem");
    let debug = format!("{:?}", key(KeyAlgorithm::EcP256));
    assert!(
        debug.contains("FileKey") && debug.contains("thumbprint"),
        "{debug}"
    );
    let d = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        secret.to_bytes(),
    );
    assert!(!debug.contains(&d));
    let body: String = pem.lines().nth(1).expect("body").chars().take(20).collect();
    assert!(!debug.contains(&body));
}

#[tokio::test]
async fn backend_loads_file_refs() {
    let backend = FileBackend::new();
    assert_eq!(backend.scheme(), "file");
    let (_dir, path) = key_file(KeyAlgorithm::Ed25519);
    let key_ref: KeyRef = format!("file:{}", path.display()).parse().expect("ref");
    let key = backend.load(&key_ref).await.expect("load");
    assert_eq!(key.key_ref(), &key_ref);
    assert_eq!(
        key.public_jwk(),
        crate::test_support::key(KeyAlgorithm::Ed25519).public_jwk()
    );

    let other: KeyRef = "pkcs11:token=x;object=y".parse().expect("ref");
    let err = backend.load(&other).await.expect_err("wrong scheme");
    assert!(matches!(err, KeyError::InvalidRef { .. }), "{err}");

    let missing: KeyRef = "file:/nonexistent/acct.pem".parse().expect("ref");
    let err = backend.load(&missing).await.expect_err("missing");
    assert!(err.to_string().contains("/nonexistent/acct.pem"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_signs_on_a_multi_thread_runtime() {
    let key = key(KeyAlgorithm::Rsa2048);
    let signature = key.sign(b"message").await.expect("sign");
    assert_eq!(signature.len(), 256);
}

#[test]
fn signing_works_without_a_runtime() {
    for alg in [
        KeyAlgorithm::EcP256,
        KeyAlgorithm::Ed25519,
        KeyAlgorithm::Rsa2048,
    ] {
        let key = key(alg);
        let signature = poll_once(key.sign(b"no runtime")).expect("sign");
        assert!(!signature.is_empty(), "{alg}");
    }
}

#[test]
fn ecdsa_signatures_are_fixed_size_r_s() {
    for (alg, len) in [(KeyAlgorithm::EcP256, 64), (KeyAlgorithm::EcP384, 96)] {
        let key = key(alg);
        for i in 0..32 {
            let sig = poll_once(key.sign(format!("m{i}").as_bytes())).expect("sign");
            assert_eq!(sig.len(), len, "{alg}: never DER, never shortened");
        }
    }
}

#[test]
fn pem_line_width_and_indentation_do_not_matter() {
    let pem = key_pem(KeyAlgorithm::EcP384);
    let original = key(KeyAlgorithm::EcP384);
    let lines: Vec<&str> = pem.lines().collect();
    let body: String = lines[1..lines.len() - 1].concat();
    let (begin, end) = (lines[0], lines[lines.len() - 1]);
    let wrap = |width: usize| -> String {
        body.as_bytes()
            .chunks(width)
            .map(|c| std::str::from_utf8(c).expect("ascii"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_loads_as(&format!("{begin}\n{}\n{end}\n", wrap(76)), &original);
    assert_loads_as(&format!("{begin}\n{body}\n{end}"), &original);
    let indented = format!(
        "  {begin}\r\n  {}\r\n  {end}\r\n",
        wrap(64).replace('\n', "\r\n  ")
    );
    assert_loads_as(&indented, &original);
    let unpadded = format!("{begin}\n{}\n{end}\n", body.trim_end_matches('='));
    assert_loads_as(&unpadded, &original);
}
