//! Reading private keys from PEM: PKCS#8 `PRIVATE KEY`, SEC1 `EC PRIVATE KEY` and PKCS#1
//! `RSA PRIVATE KEY`, with a clear error for everything that is not one of those.

use std::path::Path;

use const_oid::ObjectIdentifier;
use const_oid::db::{rfc5912, rfc8410};
use der::Decode;
use der::zeroize::Zeroizing;
use p256::pkcs8::DecodePrivateKey;

use crate::KeyError;

/// Smallest and largest RSA modulus accepted. ring, which does our RSA signing, refuses
/// moduli above 4096 bits (`PRIVATE_KEY_PUBLIC_MODULUS_MAX_BITS`), so larger keys are
/// rejected here with a clear message rather than a vague ring error.
pub(crate) const RSA_MIN_BITS: usize = 2048;
pub(crate) const RSA_MAX_BITS: usize = 4096;

/// A private key decoded from PEM, not yet turned into a signer.
pub(crate) enum Parsed {
    /// An EC key with the public point the file carries, if any (SEC1 uncompressed):
    /// deriving it again is a scalar multiplication, and ring checks that it matches.
    P256(p256::SecretKey, Option<Vec<u8>>),
    P384(p384::SecretKey, Option<Vec<u8>>),
    Ed25519(ed25519_dalek::SigningKey),
    /// The PKCS#1 `RSAPrivateKey` DER (what ring takes), the modulus size, and the public
    /// modulus and exponent (big-endian).
    Rsa {
        pkcs1: Zeroizing<Vec<u8>>,
        bits: usize,
        n: Vec<u8>,
        e: Vec<u8>,
    },
}

/// One `-----BEGIN label-----` … `-----END label-----` block.
struct Block<'a> {
    label: &'a str,
    /// Everything between the BEGIN and END lines.
    body: &'a str,
}

/// Decodes the single private key in `bytes` (the contents of `path`).
pub(crate) fn parse_private_key(path: &Path, bytes: &[u8]) -> Result<Parsed, KeyError> {
    let parse_err = |detail: String| KeyError::Parse {
        path: path.to_owned(),
        detail,
    };
    let text = std::str::from_utf8(bytes).map_err(|_| {
        parse_err(
            "not a PEM file (binary data; DER keys are not supported: convert with \
             `openssl pkey -in KEY.der -inform DER -out key.pem`)"
                .to_owned(),
        )
    })?;
    let blocks = split_blocks(text).map_err(parse_err)?;

    let mut keys = Vec::new();
    let mut other: Option<&'static str> = None;
    for block in &blocks {
        match block.label {
            "PRIVATE KEY" | "EC PRIVATE KEY" | "RSA PRIVATE KEY" => keys.push(block),
            "ENCRYPTED PRIVATE KEY" => {
                return Err(KeyError::Encrypted {
                    path: path.to_owned(),
                });
            }
            "OPENSSH PRIVATE KEY" => {
                return Err(KeyError::Unsupported {
                    path: path.to_owned(),
                    detail: "OpenSSH key format; convert with `ssh-keygen -p -m PKCS8 -f FILE`"
                        .to_owned(),
                });
            }
            "CERTIFICATE" | "TRUSTED CERTIFICATE" | "X509 CERTIFICATE" => {
                other = other.or(Some("certificate"));
            }
            "PUBLIC KEY" | "RSA PUBLIC KEY" => other = other.or(Some("public key")),
            "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST" => {
                other = other.or(Some("certificate request"));
            }
            _ => {} // e.g. `EC PARAMETERS` written by `openssl ecparam -genkey`
        }
    }
    let block = match keys.as_slice() {
        [one] => *one,
        [] => {
            return Err(match other {
                Some(found) => KeyError::NotAPrivateKey {
                    path: path.to_owned(),
                    found,
                },
                None if blocks.is_empty() => {
                    parse_err("no PEM data found (expected -----BEGIN PRIVATE KEY-----)".to_owned())
                }
                None => parse_err(format!(
                    "no private key in the file (found only {})",
                    blocks
                        .iter()
                        .map(|b| b.label)
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            });
        }
        many => {
            return Err(parse_err(format!(
                "{} private keys in one file; expected exactly one",
                many.len()
            )));
        }
    };
    // Legacy OpenSSL encryption puts headers inside the PEM block.
    if block.body.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(KeyError::Encrypted {
            path: path.to_owned(),
        });
    }
    let der = decode_body(block.body)
        .ok_or_else(|| parse_err(format!("malformed PEM ({}): invalid base64", block.label)))?;
    match block.label {
        "PRIVATE KEY" => parse_pkcs8(path, &der),
        "EC PRIVATE KEY" => parse_sec1(path, &der),
        _ => parse_pkcs1(path, &der),
    }
}

fn split_blocks(text: &str) -> Result<Vec<Block<'_>>, String> {
    const BEGIN: &str = "-----BEGIN ";
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let after = &rest[start + BEGIN.len()..];
        let label = match after.find("-----") {
            Some(end) if !after[..end].contains('\n') => &after[..end],
            _ => return Err("malformed PEM: unterminated BEGIN line".to_owned()),
        };
        let body_start = start + BEGIN.len() + label.len() + "-----".len();
        let end_marker = format!("-----END {label}-----");
        let end = rest[body_start..]
            .find(&end_marker)
            .ok_or_else(|| format!("malformed PEM: no END line for {label}"))?;
        blocks.push(Block {
            label,
            body: &rest[body_start..body_start + end],
        });
        rest = &rest[body_start + end + end_marker.len()..];
    }
    Ok(blocks)
}

/// Decodes a PEM body leniently, as OpenSSL does: any line width, surrounding whitespace,
/// CRLF, optional padding. (`pem-rfc7468` insists on 64-column lines, which rejects keys
/// written by other tools.)
fn decode_body(body: &str) -> Option<Zeroizing<Vec<u8>>> {
    use base64::Engine;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let mut text = Zeroizing::new(String::with_capacity(body.len()));
    for line in body.lines().map(str::trim) {
        // RFC 1421 headers (`Proc-Type: …`) have been dealt with by the caller.
        if !line.contains(':') {
            text.push_str(line);
        }
    }
    if text.is_empty() {
        return None;
    }
    LENIENT.decode(text.as_bytes()).ok().map(Zeroizing::new)
}

fn parse_pkcs8(path: &Path, der: &[u8]) -> Result<Parsed, KeyError> {
    let info = pkcs8::PrivateKeyInfo::from_der(der).map_err(|e| KeyError::Parse {
        path: path.to_owned(),
        detail: format!("malformed PKCS#8 private key: {e}"),
    })?;
    let oid = info.algorithm.oid;
    let bad = |e: &dyn std::fmt::Display| KeyError::Parse {
        path: path.to_owned(),
        detail: format!("malformed {} key: {e}", algorithm_name(oid)),
    };
    match oid {
        rfc5912::ID_EC_PUBLIC_KEY => {
            let curve = info
                .algorithm
                .parameters_oid()
                .map_err(|e| KeyError::Parse {
                    path: path.to_owned(),
                    detail: format!("EC key without a named curve: {e}"),
                })?;
            // Decoded by hand rather than with `SecretKey::from_pkcs8_der`, which checks the
            // carried public point with a (slow, generic) scalar multiplication; ring checks
            // it when the signer is built.
            if !matches!(curve, rfc5912::SECP_256_R_1 | rfc5912::SECP_384_R_1) {
                return Err(unsupported_curve(path, curve));
            }
            let ec = sec1::EcPrivateKey::from_der(info.private_key).map_err(|e| bad(&e))?;
            if let Some(inner) = ec.parameters.and_then(|p| p.named_curve())
                && inner != curve
            {
                return Err(KeyError::Parse {
                    path: path.to_owned(),
                    detail: format!(
                        "EC key names curve {} inside but {} outside",
                        algorithm_name(inner),
                        algorithm_name(curve)
                    ),
                });
            }
            let point = ec.public_key.map(<[u8]>::to_vec);
            match curve {
                rfc5912::SECP_256_R_1 => p256::SecretKey::from_slice(ec.private_key)
                    .map(|k| Parsed::P256(k, point))
                    .map_err(|e| bad(&e)),
                rfc5912::SECP_384_R_1 => p384::SecretKey::from_slice(ec.private_key)
                    .map(|k| Parsed::P384(k, point))
                    .map_err(|e| bad(&e)),
                other => Err(unsupported_curve(path, other)),
            }
        }
        rfc5912::RSA_ENCRYPTION => parse_pkcs1(path, info.private_key),
        rfc8410::ID_ED_25519 => ed25519_dalek::SigningKey::from_pkcs8_der(der)
            .map(Parsed::Ed25519)
            .map_err(|e| bad(&e)),
        other => Err(KeyError::Unsupported {
            path: path.to_owned(),
            detail: format!("{} keys", algorithm_name(other)),
        }),
    }
}

fn parse_sec1(path: &Path, der: &[u8]) -> Result<Parsed, KeyError> {
    let key = sec1::EcPrivateKey::from_der(der).map_err(|e| KeyError::Parse {
        path: path.to_owned(),
        detail: format!("malformed SEC1 EC private key: {e}"),
    })?;
    // The curve OID is optional in SEC1; without it the scalar length tells the curve.
    let curve = match key.parameters.and_then(|p| p.named_curve()) {
        Some(oid) => oid,
        None if key.private_key.len() == 32 => rfc5912::SECP_256_R_1,
        None if key.private_key.len() == 48 => rfc5912::SECP_384_R_1,
        None => {
            return Err(KeyError::Unsupported {
                path: path.to_owned(),
                detail: format!(
                    "EC key of {} bytes without a named curve",
                    key.private_key.len()
                ),
            });
        }
    };
    let bad = |e: &dyn std::fmt::Display| KeyError::Parse {
        path: path.to_owned(),
        detail: format!("malformed SEC1 EC private key: {e}"),
    };
    let point = key.public_key.map(<[u8]>::to_vec);
    match curve {
        rfc5912::SECP_256_R_1 => p256::SecretKey::from_slice(key.private_key)
            .map(|k| Parsed::P256(k, point))
            .map_err(|e| bad(&e)),
        rfc5912::SECP_384_R_1 => p384::SecretKey::from_slice(key.private_key)
            .map(|k| Parsed::P384(k, point))
            .map_err(|e| bad(&e)),
        other => Err(unsupported_curve(path, other)),
    }
}

/// `der` is a PKCS#1 `RSAPrivateKey`; only its structure and size are checked here, ring
/// validates the key itself.
fn parse_pkcs1(path: &Path, der: &[u8]) -> Result<Parsed, KeyError> {
    let key = pkcs1::RsaPrivateKey::from_der(der).map_err(|e| KeyError::Parse {
        path: path.to_owned(),
        detail: format!("malformed PKCS#1 RSA private key: {e}"),
    })?;
    if key.other_prime_infos.is_some() {
        return Err(KeyError::Unsupported {
            path: path.to_owned(),
            detail: "multi-prime RSA keys".to_owned(),
        });
    }
    let bits = uint_bits(key.modulus.as_bytes());
    if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
        return Err(KeyError::Unsupported {
            path: path.to_owned(),
            detail: format!("RSA key of {bits} bits"),
        });
    }
    Ok(Parsed::Rsa {
        pkcs1: Zeroizing::new(der.to_vec()),
        bits,
        n: key.modulus.as_bytes().to_vec(),
        e: key.public_exponent.as_bytes().to_vec(),
    })
}

/// Bit length of a big-endian unsigned integer.
fn uint_bits(bytes: &[u8]) -> usize {
    let bytes = match bytes.iter().position(|b| *b != 0) {
        Some(first) => &bytes[first..],
        None => return 0,
    };
    bytes.len() * 8 - bytes[0].leading_zeros() as usize
}

fn unsupported_curve(path: &Path, oid: ObjectIdentifier) -> KeyError {
    let name = match oid {
        rfc5912::SECP_521_R_1 => "P-521".to_owned(),
        _ if oid.to_string() == "1.3.132.0.10" => "secp256k1".to_owned(),
        _ => oid.to_string(),
    };
    KeyError::Unsupported {
        path: path.to_owned(),
        detail: format!("EC curve {name}"),
    }
}

fn algorithm_name(oid: ObjectIdentifier) -> String {
    match oid {
        rfc5912::ID_EC_PUBLIC_KEY => "EC".to_owned(),
        rfc5912::RSA_ENCRYPTION => "RSA".to_owned(),
        rfc5912::ID_RSASSA_PSS => "RSA-PSS".to_owned(),
        rfc8410::ID_ED_25519 => "Ed25519".to_owned(),
        rfc8410::ID_ED_448 => "Ed448".to_owned(),
        _ if oid.to_string() == "1.3.101.110" => "X25519".to_owned(),
        _ if oid.to_string() == "1.3.101.111" => "X448".to_owned(),
        _ => format!("OID {oid}"),
    }
}
