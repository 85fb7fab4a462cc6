//! Published test vectors, run through the file backend: RFC 8037 Appendix A (Ed25519) and
//! RFC 7515 Appendix A.3 (ES256).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use der::pem::LineEnding;
use p256::ecdsa::signature::Verifier;
use p256::pkcs8::EncodePrivateKey;

use super::*;

fn b64(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).expect("base64url")
}

// RFC 8037 Appendix A.1 (private key), A.2 (public key), A.3 (thumbprint), A.4 (signing).
const ED25519_D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
const ED25519_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
const ED25519_THUMBPRINT: &str = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";
const ED25519_SIGNING_INPUT: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
const ED25519_SIGNATURE: &str =
    "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";

// RFC 7515 Appendix A.3.1.
const ES256_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
const ES256_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
const ES256_D: &str = "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI";
const ES256_SIGNING_INPUT: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
const ES256_SIGNATURE: &str =
    "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";

#[tokio::test]
async fn rfc8037_ed25519_key_thumbprint_and_signature() {
    let d: [u8; 32] = b64(ED25519_D).try_into().expect("32 bytes");
    let pem = ed25519_dalek::pkcs8::KeypairBytes {
        secret_key: d,
        public_key: None,
    }
    .to_pkcs8_pem(LineEnding::LF)
    .expect("pkcs8");
    let (_dir, path) = write_temp("rfc8037.pem", pem.as_bytes());
    let key = FileKey::load(&path).expect("load");

    assert_eq!(key.algorithm(), KeyAlgorithm::Ed25519);
    let jwk = key.public_jwk().as_json();
    assert_eq!(jwk["kty"], "OKP");
    assert_eq!(jwk["crv"], "Ed25519");
    assert_eq!(jwk["x"], ED25519_X);
    assert_eq!(key.public_jwk().thumbprint(), ED25519_THUMBPRINT);

    // Ed25519 is deterministic: the signature must match the RFC byte for byte.
    let signature = key
        .sign(ED25519_SIGNING_INPUT.as_bytes())
        .await
        .expect("sign");
    assert_eq!(URL_SAFE_NO_PAD.encode(&signature), ED25519_SIGNATURE);

    // The private key never shows in Debug output.
    assert!(!format!("{key:?}").contains(ED25519_D));
}

fn rfc7515_verifying_key() -> p256::ecdsa::VerifyingKey {
    let point = p256::EncodedPoint::from_affine_coordinates(
        b64(ES256_X).as_slice().into(),
        b64(ES256_Y).as_slice().into(),
        false,
    );
    p256::ecdsa::VerifyingKey::from_encoded_point(&point).expect("valid point")
}

#[test]
fn rfc7515_a3_signature_verifies_with_rfc_public_key() {
    let signature = p256::ecdsa::Signature::from_slice(&b64(ES256_SIGNATURE)).expect("r||s");
    rfc7515_verifying_key()
        .verify(ES256_SIGNING_INPUT.as_bytes(), &signature)
        .expect("the RFC's own signature verifies");
    assert!(
        rfc7515_verifying_key()
            .verify(b"something else", &signature)
            .is_err()
    );
}

#[tokio::test]
async fn rfc7515_a3_private_key_signs_verifiable_es256() {
    let secret = p256::SecretKey::from_slice(&b64(ES256_D)).expect("scalar");
    let pems = [
        secret
            .to_sec1_pem(LineEnding::LF)
            .expect("sec1")
            .to_string(),
        secret
            .to_pkcs8_pem(LineEnding::LF)
            .expect("pkcs8")
            .to_string(),
    ];
    for pem in pems {
        let (_dir, path) = write_temp("rfc7515.pem", pem.as_bytes());
        let key = FileKey::load(&path).expect("load");
        assert_eq!(key.algorithm(), KeyAlgorithm::EcP256);
        let jwk = key.public_jwk().as_json();
        assert_eq!(jwk["x"], ES256_X);
        assert_eq!(jwk["y"], ES256_Y);

        let signature = key
            .sign(ES256_SIGNING_INPUT.as_bytes())
            .await
            .expect("sign");
        assert_eq!(signature.len(), 64);
        let signature = p256::ecdsa::Signature::from_slice(&signature).expect("r||s");
        rfc7515_verifying_key()
            .verify(ES256_SIGNING_INPUT.as_bytes(), &signature)
            .expect("our signature verifies with the RFC's public key");
    }
}
