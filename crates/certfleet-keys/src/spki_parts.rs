//! SubjectPublicKeyInfo from a public key's raw parts, as hardware backends read them off
//! the device (an EC point, an RSA modulus and exponent). One encoder, so a token key and
//! a TPM key with the same public key give the same bytes to the CSR and the JWK thumbprint.

use const_oid::ObjectIdentifier;
use const_oid::db::{rfc5912, rfc8410};
use der::asn1::{BitString, UintRef};
use der::{Any, Encode};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

/// `id-ecPublicKey` on the named `curve`, with the uncompressed `point` (0x04 ‖ X ‖ Y).
pub fn ec_spki(curve: ObjectIdentifier, point: &[u8]) -> der::Result<Vec<u8>> {
    spki(
        rfc5912::ID_EC_PUBLIC_KEY,
        Some(Any::encode_from(&curve)?),
        point,
    )
}

/// `id-Ed25519` (RFC 8410: no parameters) with the 32-byte public key.
pub fn ed25519_spki(public: &[u8]) -> der::Result<Vec<u8>> {
    spki(rfc8410::ID_ED_25519, None, public)
}

/// `rsaEncryption` (NULL parameters) with `RSAPublicKey ::= SEQUENCE { modulus,
/// publicExponent }`; `n` and `e` are big-endian unsigned integers.
pub fn rsa_spki(n: &[u8], e: &[u8]) -> der::Result<Vec<u8>> {
    #[derive(der::Sequence)]
    struct RsaPublicKey<'a> {
        modulus: UintRef<'a>,
        public_exponent: UintRef<'a>,
    }
    let rsa = RsaPublicKey {
        modulus: UintRef::new(n)?,
        public_exponent: UintRef::new(e)?,
    }
    .to_der()?;
    spki(rfc5912::RSA_ENCRYPTION, Some(Any::null()), &rsa)
}

fn spki(oid: ObjectIdentifier, parameters: Option<Any>, key: &[u8]) -> der::Result<Vec<u8>> {
    SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned { oid, parameters },
        subject_public_key: BitString::from_bytes(key)?,
    }
    .to_der()
}

#[cfg(test)]
mod tests {
    use p256::pkcs8::EncodePublicKey;
    use rsa::pkcs8::DecodePublicKey;
    use rsa::traits::PublicKeyParts;

    use super::*;

    #[test]
    fn ec_and_rsa_match_what_the_software_keys_encode() {
        let secret = p256::SecretKey::from_slice(&[7u8; 32]).expect("scalar");
        let public = secret.public_key();
        let point = public.to_sec1_bytes();
        let expected = public.to_public_key_der().expect("der");
        assert_eq!(
            ec_spki(rfc5912::SECP_256_R_1, &point).expect("spki"),
            expected.as_bytes()
        );

        let n = [0xc5u8; 256];
        let spki = rsa_spki(&n, &[1, 0, 1]).expect("rsa spki");
        let parsed = rsa::RsaPublicKey::from_public_key_der(&spki).expect("rsa key");
        assert_eq!(parsed.n().to_bytes_be(), n.to_vec());
        assert_eq!(parsed.e().to_bytes_be(), vec![1, 0, 1]);
    }
}
