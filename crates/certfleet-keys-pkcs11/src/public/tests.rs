use super::*;

#[test]
fn ec_points_are_accepted_wrapped_and_raw() {
    let mut raw = vec![0x04];
    raw.extend([7u8; 64]);
    let mut wrapped = vec![0x04, 0x41];
    wrapped.extend(&raw);
    let a = from_ec(P256_PARAMS, &raw, false).expect("raw");
    let b = from_ec(P256_PARAMS, &wrapped, false).expect("wrapped");
    assert_eq!(a.algorithm, KeyAlgorithm::EcP256);
    assert_eq!(a.spki, b.spki);
    assert_eq!(a.jwk, b.jwk);
    assert_eq!(a.jwk.as_json()["crv"], "P-256");
}

#[test]
fn unsupported_keys_say_what_they_are() {
    let secp256k1 = [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a];
    let mut point = vec![0x04];
    point.extend([1u8; 64]);
    assert_eq!(
        from_ec(&secp256k1, &point, false).expect_err("k1"),
        PublicError::Unsupported("an EC key on curve 1.3.132.0.10".to_owned())
    );
    let small = vec![0xc5; 128];
    assert_eq!(
        from_rsa(&small, &[1, 0, 1]).expect_err("1024"),
        PublicError::Unsupported("an RSA key of 1024 bits".to_owned())
    );
    assert!(matches!(
        from_ec(P256_PARAMS, &[0x04; 10], false),
        Err(PublicError::Bad("CKA_EC_POINT", _))
    ));
}

#[test]
fn rsa_keys_get_a_pkcs1_spki() {
    let mut n = vec![0x00, 0xc1];
    n.extend([0x55; 255]);
    let key = from_rsa(&n, &[0, 1, 0, 1]).expect("rsa");
    assert_eq!(key.algorithm, KeyAlgorithm::Rsa2048);
    let spki = spki::SubjectPublicKeyInfoRef::from_der(&key.spki).expect("spki");
    assert_eq!(spki.algorithm.oid, rfc5912::RSA_ENCRYPTION);
    assert_eq!(key.jwk.as_json()["e"], "AQAB");
}
