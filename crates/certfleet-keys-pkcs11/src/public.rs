//! Public keys read from token attributes: algorithm, JWK and SubjectPublicKeyInfo.

use certfleet_keys::{Jwk, KeyAlgorithm, spki_parts};
use const_oid::ObjectIdentifier;
use const_oid::db::rfc5912;
use der::Decode;

/// DER of the named-curve OIDs as `CKA_EC_PARAMS` holds them.
pub(crate) const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
pub(crate) const P384_PARAMS: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
pub(crate) const ED25519_PARAMS: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
/// PKCS#11 3.0 also allows the curve name as a PrintableString.
const ED25519_NAME: &[u8] = b"\x13\x0cedwards25519";

/// The public half of a token key in the forms certfleet needs.
#[derive(Debug, Clone)]
pub(crate) struct PublicKey {
    pub algorithm: KeyAlgorithm,
    pub jwk: Jwk,
    pub spki: Vec<u8>,
}

/// An EC or EdDSA key from `CKA_EC_PARAMS` and `CKA_EC_POINT`.
pub(crate) fn from_ec(
    params: &[u8],
    point: &[u8],
    edwards: bool,
) -> Result<PublicKey, PublicError> {
    let (algorithm, len) = if edwards {
        if params != ED25519_PARAMS && params != ED25519_NAME {
            return Err(unsupported(format!(
                "an EdDSA key on curve {}",
                describe_params(params)
            )));
        }
        (KeyAlgorithm::Ed25519, 32)
    } else if params == P256_PARAMS {
        (KeyAlgorithm::EcP256, 65)
    } else if params == P384_PARAMS {
        (KeyAlgorithm::EcP384, 97)
    } else {
        return Err(unsupported(format!(
            "an EC key on curve {}",
            describe_params(params)
        )));
    };
    let point = unwrap_octet_string(point, len)
        .ok_or_else(|| bad("CKA_EC_POINT", format!("{} bytes", point.len())))?;
    if algorithm == KeyAlgorithm::Ed25519 {
        let spki = spki_parts::ed25519_spki(point).map_err(|e| bad("public key", e.to_string()))?;
        return Ok(PublicKey {
            algorithm,
            jwk: Jwk::okp("Ed25519", point),
            spki,
        });
    }
    if point[0] != 0x04 {
        return Err(bad("CKA_EC_POINT", "not an uncompressed point".to_owned()));
    }
    let (curve, crv) = if algorithm == KeyAlgorithm::EcP256 {
        (rfc5912::SECP_256_R_1, "P-256")
    } else {
        (rfc5912::SECP_384_R_1, "P-384")
    };
    let coordinate = (len - 1) / 2;
    let jwk = Jwk::ec(crv, &point[1..1 + coordinate], &point[1 + coordinate..]);
    let spki = spki_parts::ec_spki(curve, point).map_err(|e| bad("public key", e.to_string()))?;
    Ok(PublicKey {
        algorithm,
        jwk,
        spki,
    })
}

/// An RSA key from `CKA_MODULUS` and `CKA_PUBLIC_EXPONENT` (big-endian).
pub(crate) fn from_rsa(modulus: &[u8], exponent: &[u8]) -> Result<PublicKey, PublicError> {
    let n = strip_zeros(modulus);
    let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
    let algorithm = match bits {
        ..2048 => return Err(unsupported(format!("an RSA key of {bits} bits"))),
        2048..3072 => KeyAlgorithm::Rsa2048,
        3072..4096 => KeyAlgorithm::Rsa3072,
        4096..=8192 => KeyAlgorithm::Rsa4096,
        _ => return Err(unsupported(format!("an RSA key of {bits} bits"))),
    };
    let e = strip_zeros(exponent);
    let spki = spki_parts::rsa_spki(n, e).map_err(|e| bad("RSA public key", e.to_string()))?;
    Ok(PublicKey {
        algorithm,
        jwk: Jwk::rsa(n, e),
        spki,
    })
}

/// The point itself, from either the DER OCTET STRING PKCS#11 specifies or the raw form
/// some modules return.
fn unwrap_octet_string(value: &[u8], len: usize) -> Option<&[u8]> {
    if value.len() == len {
        return Some(value);
    }
    let inner = der::asn1::OctetStringRef::from_der(value).ok()?;
    (inner.as_bytes().len() == len).then(|| &value[value.len() - len..])
}

fn describe_params(params: &[u8]) -> String {
    match ObjectIdentifier::from_der(params) {
        Ok(oid) => oid.to_string(),
        Err(_) => format!("{} bytes of parameters", params.len()),
    }
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// Why a token's public key cannot be used.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PublicError {
    /// A key certfleet does not sign with (what it is).
    Unsupported(String),
    /// An attribute that is not what PKCS#11 says it should be.
    Bad(&'static str, String),
}

/// What certfleet signs with, for error messages.
pub(crate) const SUPPORTED: &str = "a P-256, P-384, RSA 2048-8192 or Ed25519 signing key";

fn unsupported(found: String) -> PublicError {
    PublicError::Unsupported(found)
}

fn bad(what: &'static str, detail: String) -> PublicError {
    PublicError::Bad(what, detail)
}

#[cfg(test)]
mod tests;
