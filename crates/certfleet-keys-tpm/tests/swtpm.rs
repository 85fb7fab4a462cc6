//! The TPM backend against a real software TPM (swtpm), one per test.

use std::str::FromStr;

use certfleet_keys::{KeyAlgorithm, KeyBackend, KeyRef, SigningKey};
use certfleet_keys_tpm::{TpmBackend, TpmError, TpmKeyLocation, TpmUri};
use certfleet_testenv::Swtpm;
use tss_esapi::constants::CapabilityType;
use tss_esapi::structures::CapabilityData;

fn start() -> Option<(Swtpm, TpmBackend, tempfile::TempDir)> {
    if !certfleet_testenv::require_swtpm() {
        return None;
    }
    let tpm = Swtpm::start().expect("swtpm starts");
    let backend = TpmBackend::new(&tpm.tcti());
    let dir = tempfile::tempdir().expect("tempdir");
    Some((tpm, backend, dir))
}

/// Transient objects in the TPM, seen through a connection of our own.
fn transient_objects(tpm: &Swtpm) -> usize {
    let conf = tss_esapi::TctiNameConf::from_str(&tpm.tcti()).expect("tcti");
    let mut ctx = tss_esapi::Context::new(conf).expect("context");
    let (data, _) = ctx
        .get_capability(CapabilityType::Handles, 0x8000_0000, 64)
        .expect("capability");
    match data {
        CapabilityData::Handles(list) => list
            .into_inner()
            .into_iter()
            .filter(|h| u32::from(*h) >> 24 == 0x80)
            .count(),
        _ => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_files_of_every_algorithm_conform_reload_and_leave_nothing_loaded() {
    let Some((tpm, backend, dir)) = start() else {
        return;
    };
    for alg in [
        KeyAlgorithm::EcP256,
        KeyAlgorithm::EcP384,
        KeyAlgorithm::Rsa2048,
    ] {
        let path = dir.path().join(format!("{alg}.tpmkey"));
        let key = backend
            .generate(alg, TpmKeyLocation::File(path.clone()), None)
            .await
            .unwrap_or_else(|e| panic!("generate {alg}: {e}"));
        assert_eq!(key.algorithm(), alg);
        certfleet_keys::conformance::check_signing_key(&*key)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).expect("stat").permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{}", path.display());
        let text = std::fs::read_to_string(&path).expect("key file");
        assert!(
            !text.contains("PRIVATE KEY"),
            "no clear private key: {text}"
        );

        // From the persisted reference alone, through the KeyBackend seam.
        let reloaded = backend.load(key.key_ref()).await.expect("reload");
        assert_eq!(reloaded.public_jwk(), key.public_jwk());
        certfleet_keys::conformance::check_signing_key(&*reloaded)
            .await
            .unwrap_or_else(|e| panic!("reloaded: {e}"));
        assert!(key.transient_objects().await.expect("count") <= 2);
    }
    // Every key is dropped: the owner thread flushed what it loaded.
    assert_eq!(transient_objects(&tpm), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_handles_work_and_are_listed() {
    let Some((tpm, backend, _dir)) = start() else {
        return;
    };
    let key = backend
        .generate(
            KeyAlgorithm::EcP256,
            TpmKeyLocation::Handle(0x8100_0042),
            None,
        )
        .await
        .expect("persistent key");
    assert!(
        key.key_ref().as_str().starts_with("tpm:handle=0x81000042"),
        "{}",
        key.key_ref()
    );
    certfleet_keys::conformance::check_signing_key(&*key)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let listed = backend.list(None).await.expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].handle, 0x8100_0042);
    assert_eq!(listed[0].algorithm, Some(KeyAlgorithm::EcP256));
    let again = backend
        .generate(
            KeyAlgorithm::EcP256,
            TpmKeyLocation::Handle(0x8100_0042),
            None,
        )
        .await
        .expect_err("handle taken");
    assert!(matches!(again, TpmError::HandleInUse { .. }), "{again}");
    drop(key);
    assert_eq!(transient_objects(&tpm), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_fails_clearly_and_flushes_on_error_paths() {
    let Some((tpm, backend, dir)) = start() else {
        return;
    };
    let path = dir.path().join("acct.tpmkey");
    let key = backend
        .generate(
            KeyAlgorithm::EcP256,
            TpmKeyLocation::File(path.clone()),
            None,
        )
        .await
        .expect("generate");
    let key_ref = key.key_ref().clone();
    drop(key);

    let exists = backend
        .generate(
            KeyAlgorithm::EcP256,
            TpmKeyLocation::File(path.clone()),
            None,
        )
        .await
        .expect_err("exists");
    assert!(matches!(exists, TpmError::AlreadyExists { .. }), "{exists}");
    let eddsa = backend
        .generate(
            KeyAlgorithm::Ed25519,
            TpmKeyLocation::File(dir.path().join("e")),
            None,
        )
        .await
        .expect_err("eddsa");
    assert!(
        matches!(eddsa, TpmError::UnsupportedAlgorithm { .. }),
        "{eddsa}"
    );

    // The file claims another algorithm than the key it holds.
    let text = std::fs::read_to_string(&path).expect("read");
    let lying = dir.path().join("lying.tpmkey");
    std::fs::write(&lying, text.replace("\"es256\"", "\"es384\"")).expect("write");
    let err = load(&backend, &format!("tpm:file={}", lying.display())).await;
    assert!(
        err.contains("wrong key type") && err.contains("es384"),
        "{err}"
    );

    // A private blob the TPM cannot unwrap: Load fails after the primary was created.
    let mut json: serde_json::Value = serde_json::from_str(&text).expect("json");
    let blob = json["private"].as_str().expect("private").to_owned();
    let mut bytes =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, blob).expect("b64");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    json["private"] =
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes).into();
    let broken = dir.path().join("broken.tpmkey");
    std::fs::write(&broken, json.to_string()).expect("write");
    let err = load(&backend, &format!("tpm:file={}", broken.display())).await;
    assert!(err.contains("Load failed"), "{err}");
    assert_eq!(
        transient_objects(&tpm),
        0,
        "the primary was flushed on the error path"
    );

    for (reference, expected) in [
        (
            format!("tpm:file={}/missing.tpmkey", dir.path().display()),
            "No such file",
        ),
        (
            format!("tpm:file={}", dir.path().display()),
            "not a TPM key file",
        ),
        (
            "tpm:handle=0x81000099".to_owned(),
            "no persistent object at handle 0x81000099",
        ),
    ] {
        let err = load(&backend, &reference).await;
        assert!(err.contains(expected), "{reference}: {err}");
        assert!(err.contains(&reference[..12]), "names the reference: {err}");
    }
    // The good key still works after all that.
    backend
        .load(&key_ref)
        .await
        .expect("reload")
        .sign(b"still fine")
        .await
        .expect("sign");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_tpm_is_reported_with_its_tcti() {
    if !certfleet_testenv::require_swtpm() {
        return;
    }
    let port = certfleet_testenv::free_tcp_port().expect("port");
    let tcti = format!("swtpm:host=127.0.0.1,port={port}");
    let backend = TpmBackend::new(&tcti);
    let dir = tempfile::tempdir().expect("tempdir");
    let err = backend
        .generate(
            KeyAlgorithm::EcP256,
            TpmKeyLocation::File(dir.path().join("k")),
            None,
        )
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, TpmError::Unreachable { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains(&tcti) && text.contains("swtpm"), "{text}");
    let device = TpmBackend::new("device:/nonexistent/tpmrm9");
    let uri = TpmUri::parse("tpm:handle=0x81000001").expect("uri");
    let err = device
        .load_uri(&uri)
        .await
        .expect_err("no device")
        .to_string();
    assert!(err.contains("/nonexistent/tpmrm9 does not exist"), "{err}");
}

async fn load(backend: &TpmBackend, reference: &str) -> String {
    let key_ref: KeyRef = reference.parse().expect("key ref");
    backend
        .load(&key_ref)
        .await
        .expect_err(reference)
        .to_string()
}
