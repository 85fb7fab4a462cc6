use certfleet_keys::SigningKey;
use serde_json::Value;

use super::*;
use crate::test_support::TestKey;

fn verify_mac(jws: &FlattenedJws, alg: MacAlgorithm, key: &[u8]) -> bool {
    let expected = alg.mac(key, jws.signing_input().as_bytes());
    URL_SAFE_NO_PAD.decode(&jws.signature).ok() == Some(expected)
}

#[test]
fn inner_jws_binds_the_account_key() {
    let account_key = TestKey::new(4);
    let eab = ExternalAccountBinding::from_base64(
        "kid-1",
        "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W",
        MacAlgorithm::HS256,
    )
    .expect("valid key");
    let jws = eab.sign(account_key.public_jwk(), "https://ca.test/new-acct");
    let header = jws.protected_header().expect("header");
    assert_eq!(header["alg"], "HS256");
    assert_eq!(header["kid"], "kid-1");
    assert_eq!(header["url"], "https://ca.test/new-acct");
    assert!(header.get("nonce").is_none(), "EAB inner JWS has no nonce");
    assert!(header.get("jwk").is_none());
    let payload: Value = serde_json::from_slice(&jws.payload_bytes().expect("b64")).expect("json");
    assert_eq!(&payload, account_key.public_jwk().as_json());
    assert!(verify_mac(&jws, MacAlgorithm::HS256, &eab.hmac_key));
    assert!(!verify_mac(&jws, MacAlgorithm::HS256, b"other key"));
}

#[test]
fn mac_algorithms_and_rfc4231_vector() {
    // RFC 4231 test case 2.
    let mac = MacAlgorithm::HS256.mac(b"Jefe", b"what do ya want for nothing?");
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    assert_eq!(MacAlgorithm::HS384.mac(b"k", b"m").len(), 48);
    assert_eq!(MacAlgorithm::HS512.mac(b"k", b"m").len(), 64);
    let key = TestKey::new(5);
    for alg in [MacAlgorithm::HS384, MacAlgorithm::HS512] {
        let eab = ExternalAccountBinding {
            key_id: "k".into(),
            hmac_key: vec![7; 32],
            algorithm: alg,
        };
        let jws = eab.sign(key.public_jwk(), "u");
        assert_eq!(jws.protected_header().expect("header")["alg"], alg.as_str());
        assert!(verify_mac(&jws, alg, &[7; 32]));
    }
    assert_eq!("hs512".parse::<MacAlgorithm>(), Ok(MacAlgorithm::HS512));
    assert!("HS1".parse::<MacAlgorithm>().is_err());
}

#[test]
fn key_decoding_and_redaction() {
    let padded = ExternalAccountBinding::from_base64("k", "AAECAw==", MacAlgorithm::HS256)
        .expect("padded base64url");
    assert_eq!(padded.hmac_key, [0, 1, 2, 3]);
    let url =
        ExternalAccountBinding::from_base64("k", "-_8", MacAlgorithm::HS256).expect("url alphabet");
    assert_eq!(url.hmac_key, [0xfb, 0xff]);
    let err = ExternalAccountBinding::from_base64("k", "not base64!", MacAlgorithm::HS256)
        .expect_err("invalid");
    assert!(err.to_string().contains("\"k\""));
    assert!(ExternalAccountBinding::from_base64("k", "", MacAlgorithm::HS256).is_err());

    let secret = ExternalAccountBinding {
        key_id: "kid-9".into(),
        hmac_key: b"super-secret-mac-key".to_vec(),
        algorithm: MacAlgorithm::HS256,
    };
    let dbg = format!("{secret:?}");
    assert!(dbg.contains("kid-9"));
    assert!(dbg.contains("redacted"));
    assert!(!dbg.contains("super-secret"));
    assert!(!dbg.contains("115, 117, 112"), "no byte dump either: {dbg}");
}
