use serde_json::json;

use super::*;
use crate::test_support::{TestKey, verify_es256};

#[tokio::test]
async fn jwk_signed_request() {
    let key = TestKey::new(1);
    let jws = sign(
        &key,
        KeyIdentity::Jwk,
        Some("nonce-1"),
        "https://ca.test/new-acct",
        br#"{"termsOfServiceAgreed":true}"#,
    )
    .await
    .expect("signs");
    let header = jws.protected_header().expect("header");
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["nonce"], "nonce-1");
    assert_eq!(header["url"], "https://ca.test/new-acct");
    assert_eq!(&header["jwk"], key.public_jwk().as_json());
    assert!(header.get("kid").is_none(), "jwk xor kid");
    assert!(verify_es256(&jws, &header["jwk"]));
    assert_eq!(
        jws.payload_bytes().expect("b64"),
        br#"{"termsOfServiceAgreed":true}"#
    );
}

#[tokio::test]
async fn kid_signed_post_as_get_has_empty_payload() {
    let key = TestKey::new(2);
    let jws = sign(
        &key,
        KeyIdentity::Kid("https://ca.test/acct/7"),
        Some("n2"),
        "https://ca.test/order/1",
        b"",
    )
    .await
    .expect("signs");
    assert_eq!(
        jws.payload, "",
        "POST-as-GET payload is the empty string, not {{}}"
    );
    let header = jws.protected_header().expect("header");
    assert_eq!(header["kid"], "https://ca.test/acct/7");
    assert!(header.get("jwk").is_none(), "jwk xor kid");
    assert!(verify_es256(&jws, key.public_jwk().as_json()));
    // Tampering breaks the signature.
    let mut forged = jws.clone();
    forged.payload = b64(b"{}");
    assert!(!verify_es256(&forged, key.public_jwk().as_json()));
}

#[tokio::test]
async fn wire_form_is_flattened_json() {
    let key = TestKey::new(3);
    let jws = sign(&key, KeyIdentity::Jwk, None, "u", b"{}")
        .await
        .expect("signs");
    let v = serde_json::to_value(&jws).expect("json");
    let obj = v.as_object().expect("object");
    let mut members: Vec<&str> = obj.keys().map(String::as_str).collect();
    members.sort_unstable();
    assert_eq!(members, ["payload", "protected", "signature"]);
    // ES256 signatures are 64-byte r||s, never DER.
    assert_eq!(
        URL_SAFE_NO_PAD.decode(&jws.signature).expect("b64").len(),
        64
    );
    let header = jws.protected_header().expect("header");
    assert!(header.get("nonce").is_none());
    assert_eq!(
        header,
        json!({"alg": "ES256", "jwk": key.public_jwk().as_json(), "url": "u"})
    );
}

#[tokio::test]
async fn file_backend_keys_sign_with_their_algorithm() {
    use certfleet_keys::KeyAlgorithm;
    use certfleet_keys::file::FileKey;

    let dir = tempfile::tempdir().expect("tempdir");
    for (alg, name, sig_len) in [
        (KeyAlgorithm::EcP256, "ES256", 64),
        (KeyAlgorithm::EcP384, "ES384", 96),
        (KeyAlgorithm::Ed25519, "EdDSA", 64),
    ] {
        let path = dir.path().join(format!("{name}.pem"));
        let key = FileKey::generate(alg, &path).expect("generates");
        let jws = sign(
            &key,
            KeyIdentity::Jwk,
            Some("n"),
            "https://ca.test/x",
            b"{}",
        )
        .await
        .expect("signs");
        let header = jws.protected_header().expect("header");
        assert_eq!(header["alg"], name);
        assert_eq!(&header["jwk"], key.public_jwk().as_json());
        let sig = URL_SAFE_NO_PAD.decode(&jws.signature).expect("b64");
        assert_eq!(sig.len(), sig_len, "{name} signatures are raw, not DER");
        if alg == KeyAlgorithm::EcP256 {
            assert!(verify_es256(&jws, key.public_jwk().as_json()));
        }
    }
}
