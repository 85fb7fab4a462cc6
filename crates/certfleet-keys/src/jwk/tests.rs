use super::*;

#[test]
fn rfc7638_section_3_1_rsa_thumbprint() {
    let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
    let n = URL_SAFE_NO_PAD.decode(n).expect("n");
    let e = URL_SAFE_NO_PAD.decode("AQAB").expect("e");
    let jwk = Jwk::rsa(&n, &e);
    assert_eq!(
        jwk.thumbprint(),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
    assert_eq!(jwk.key_type(), "RSA");

    // Leading zero bytes (as in a DER INTEGER) do not change the key.
    let mut padded = vec![0];
    padded.extend(&n);
    assert_eq!(Jwk::rsa(&padded, &[0, 1, 0, 1]), jwk);
}

#[test]
fn rfc8037_a3_ed25519_thumbprint() {
    let x = URL_SAFE_NO_PAD
        .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
        .expect("x");
    let jwk = Jwk::okp("Ed25519", &x);
    assert_eq!(
        jwk.thumbprint(),
        "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    );
    assert_eq!(
        jwk.as_json(),
        &serde_json::json!({"crv": "Ed25519", "kty": "OKP", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"})
    );
}
