//! Keys made by the administrator's own tools (tpm2-tools), never by certfleet: the scheme
//! tpm2_create gives by default is null, which TPM2_Sign refuses unless the signer names
//! one. One swtpm for the whole binary, no resource manager in between.

use std::path::Path;
use std::str::FromStr;

use certfleet_keys::{KeyAlgorithm, KeyBackend, KeyRef};
use certfleet_keys_tpm::TpmBackend;
use certfleet_testenv::{Swtpm, admin_persistent_key};
use tss_esapi::constants::CapabilityType;
use tss_esapi::structures::CapabilityData;

/// Handles of `kind` (0x80 transient, 0x03 loaded session, 0x02 HMAC session) in the TPM.
fn handles(tpm: &Swtpm, kind: u32) -> usize {
    let conf = tss_esapi::TctiNameConf::from_str(&tpm.tcti()).expect("tcti");
    let mut ctx = tss_esapi::Context::new(conf).expect("context");
    let (data, _) = ctx
        .get_capability(CapabilityType::Handles, kind << 24, 64)
        .expect("capability");
    match data {
        CapabilityData::Handles(list) => list
            .into_inner()
            .into_iter()
            .filter(|h| u32::from(*h) >> 24 == kind)
            .count(),
        _ => 0,
    }
}

fn admin_key(tpm: &Swtpm, dir: &Path, alg: &str, attributes: Option<&str>, handle: &str) {
    admin_persistent_key(&tpm.tcti(), dir, alg, attributes, handle)
        .unwrap_or_else(|e| panic!("{alg}: {e:#}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_made_keys_sign_with_null_and_explicit_schemes_and_unusable_ones_are_refused() {
    if !certfleet_testenv::require_swtpm()
        || !certfleet_testenv::require_tool("tpm2_create", "tpm2-tools")
    {
        return;
    }
    let tpm = Swtpm::start().expect("swtpm starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = TpmBackend::new(&tpm.tcti());
    let usable = [
        ("ecc256", KeyAlgorithm::EcP256, "0x81000010"),
        ("rsa2048", KeyAlgorithm::Rsa2048, "0x81000011"),
        ("ecc256:ecdsa-sha256", KeyAlgorithm::EcP256, "0x81000012"),
        ("rsa2048:rsassa-sha256", KeyAlgorithm::Rsa2048, "0x81000013"),
        ("ecc384", KeyAlgorithm::EcP384, "0x81000014"),
    ];
    for (alg, algorithm, handle) in usable {
        admin_key(&tpm, dir.path(), alg, None, handle);
        let key_ref: KeyRef = format!("tpm:handle={handle}").parse().expect("ref");
        let key = backend
            .load(&key_ref)
            .await
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(key.algorithm(), algorithm, "{alg}");
        certfleet_keys::conformance::check_signing_key(&*key)
            .await
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        // shutdown() while the key is still held: nothing of ours stays in the TPM.
        assert_eq!(certfleet_keys_tpm::shutdown(), 1, "{alg}");
        assert!(key.sign(b"after shutdown").await.is_err(), "{alg}");
        assert_eq!(handles(&tpm, 0x80), 0, "{alg}: transient objects left");
        assert_eq!(handles(&tpm, 0x03), 0, "{alg}: loaded sessions left");
    }
    let refused = [
        ("ecc256:ecdsa-sha384", None, "0x81000020", "needs Sha256"),
        ("ecc384:ecdsa-sha256", None, "0x81000021", "needs Sha384"),
        (
            "ecc256",
            Some("fixedtpm|fixedparent|sensitivedataorigin|userwithauth|decrypt"),
            "0x81000022",
            "not an unrestricted signing key",
        ),
    ];
    for (alg, attributes, handle, expected) in refused {
        admin_key(&tpm, dir.path(), alg, attributes, handle);
        let key_ref: KeyRef = format!("tpm:handle={handle}").parse().expect("ref");
        let err = backend.load(&key_ref).await.expect_err(alg).to_string();
        assert!(err.contains(expected), "{alg}: {err}");
        assert!(err.contains(handle), "names the key: {err}");
    }
    certfleet_keys_tpm::shutdown();
    assert_eq!(
        handles(&tpm, 0x80),
        0,
        "transient objects left after refusals"
    );
}
