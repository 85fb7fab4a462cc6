//! A signing key inside a TPM.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use certfleet_keys::{Jwk, KeyAlgorithm, KeyError, KeyRef, SigningKey, spki_parts};
use const_oid::db::rfc5912;
use sha2::{Digest as _, Sha256, Sha384};
use tss_esapi::attributes::ObjectAttributes;
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::structures::{EccScheme, HashScheme, Public, RsaScheme, Signature, SignatureScheme};

use crate::device::TpmDevice;
use crate::{TpmError, TpmUri};

/// The public half of a TPM key in the forms certfleet needs.
#[derive(Debug, Clone)]
pub(crate) struct PublicParts {
    pub algorithm: KeyAlgorithm,
    pub jwk: Jwk,
    pub spki: Vec<u8>,
    /// The scheme every signature asks for explicitly: keys made by `tpm2_create -G ecc256`
    /// or `-G rsa2048` have a null scheme, and TPM2_Sign with a null scheme on such a key
    /// fails (`unsupported or incompatible scheme`).
    pub scheme: SignatureScheme,
}

/// A key that signs inside a TPM; the private key never leaves it.
pub struct TpmKey {
    uri: TpmUri,
    key_ref: KeyRef,
    device: Arc<TpmDevice>,
    id: u64,
    public: PublicParts,
}

impl fmt::Debug for TpmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TpmKey")
            .field("uri", &self.uri)
            .field("algorithm", &self.public.algorithm)
            .field("thumbprint", &self.public.jwk.thumbprint())
            .finish_non_exhaustive()
    }
}

impl TpmKey {
    pub(crate) fn new(uri: TpmUri, device: Arc<TpmDevice>, id: u64, public: PublicParts) -> TpmKey {
        TpmKey {
            key_ref: uri.key_ref(),
            uri,
            device,
            id,
            public,
        }
    }

    pub fn uri(&self) -> &TpmUri {
        &self.uri
    }

    /// Transient objects loaded in the TPM right now (by anyone): what a test checks to see
    /// that nothing is left behind.
    pub async fn transient_objects(&self) -> Result<usize, TpmError> {
        self.device
            .count_transient()
            .await
            .map_err(|f| crate::tpm_error(&self.uri.to_string(), f))
    }
}

impl Drop for TpmKey {
    fn drop(&mut self) {
        self.device.unload(self.id);
    }
}

#[async_trait]
impl SigningKey for TpmKey {
    fn key_ref(&self) -> &KeyRef {
        &self.key_ref
    }

    fn algorithm(&self) -> KeyAlgorithm {
        self.public.algorithm
    }

    fn public_jwk(&self) -> &Jwk {
        &self.public.jwk
    }

    fn public_key_der(&self) -> &[u8] {
        &self.public.spki
    }

    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let algorithm = self.public.algorithm;
        let digest = match algorithm {
            KeyAlgorithm::EcP384 => Sha384::digest(message).to_vec(),
            _ => Sha256::digest(message).to_vec(),
        };
        let shown = self.uri.to_string();
        let signature = self
            .device
            .sign(self.id, digest, self.public.scheme)
            .await
            .map_err(|f| crate::tpm_error(&shown, f))?;
        let bad = |detail: String| TpmError::Tpm {
            uri: shown.clone(),
            operation: "Sign",
            detail,
        };
        let bytes = match (signature, algorithm) {
            (Signature::EcDsa(s), KeyAlgorithm::EcP256 | KeyAlgorithm::EcP384) => {
                let len = if algorithm == KeyAlgorithm::EcP256 {
                    32
                } else {
                    48
                };
                let mut rs = left_pad(s.signature_r().value(), len).map_err(&bad)?;
                rs.extend(left_pad(s.signature_s().value(), len).map_err(&bad)?);
                rs
            }
            (Signature::RsaSsa(s), _) => s.signature().value().to_vec(),
            (other, _) => {
                return Err(bad(format!("unexpected {:?} signature", other.algorithm())).into());
            }
        };
        Ok(bytes)
    }
}

fn left_pad(value: &[u8], len: usize) -> Result<Vec<u8>, String> {
    if value.len() > len {
        return Err(format!(
            "{}-byte signature half, expected {len}",
            value.len()
        ));
    }
    let mut out = vec![0; len - value.len()];
    out.extend_from_slice(value);
    Ok(out)
}

/// The signature scheme for an ECDSA key on a curve whose JWS algorithm hashes with `hash`:
/// the key's own scheme when it names one, ECDSA with `hash` when it is null.
fn ecdsa_scheme(scheme: EccScheme, hash: HashingAlgorithm) -> Result<SignatureScheme, String> {
    match scheme {
        EccScheme::Null => Ok(SignatureScheme::EcDsa {
            hash_scheme: HashScheme::new(hash),
        }),
        EccScheme::EcDsa(h) if h.hashing_algorithm() == hash => {
            Ok(SignatureScheme::EcDsa { hash_scheme: h })
        }
        EccScheme::EcDsa(h) => Err(format!(
            "an ECC key whose scheme is ECDSA with {:?}, where the curve's JWS algorithm \
             needs {hash:?} (make it with a null scheme or ecdsa-{})",
            h.hashing_algorithm(),
            format!("{hash:?}").to_ascii_lowercase()
        )),
        other => Err(format!("an ECC key with the {other:?} scheme, not ECDSA")),
    }
}

/// RS256 needs RSASSA-PKCS1-v1_5 with SHA-256: the key's scheme must be null or that.
fn rsassa_scheme(scheme: RsaScheme) -> Result<SignatureScheme, String> {
    let sha256 = HashScheme::new(HashingAlgorithm::Sha256);
    match scheme {
        RsaScheme::Null => Ok(SignatureScheme::RsaSsa {
            hash_scheme: sha256,
        }),
        RsaScheme::RsaSsa(h) if h.hashing_algorithm() == HashingAlgorithm::Sha256 => {
            Ok(SignatureScheme::RsaSsa { hash_scheme: h })
        }
        other => Err(format!(
            "an RSA key with the {other:?} scheme, where RS256 needs RSASSA with SHA-256 (or a \
             null scheme)"
        )),
    }
}

/// `Err` unless a key of `kind` (`ECC`, `RSA`) may sign anything: sign set, restricted not.
fn unrestricted_signing(kind: &str, attributes: &ObjectAttributes) -> Result<(), String> {
    if attributes.sign_encrypt() && !attributes.restricted() {
        return Ok(());
    }
    Err(format!(
        "an {kind} key that is not an unrestricted signing key (attributes need sign, not \
         restricted)"
    ))
}

/// The algorithm, JWK, SPKI and signature scheme of a TPM public area; `Err(found)` for
/// keys certfleet cannot sign with (checked when the key is loaded, so nothing is ordered
/// with a key that cannot sign).
pub(crate) fn public_parts(public: &Public) -> Result<PublicParts, String> {
    let encode_err = |e: der::Error| format!("cannot encode the public key: {e}");
    match public {
        Public::Ecc {
            parameters,
            unique,
            object_attributes,
            ..
        } => {
            unrestricted_signing("ECC", object_attributes)?;
            let (algorithm, crv, curve, len, hash) = match parameters.ecc_curve() {
                EccCurve::NistP256 => (
                    KeyAlgorithm::EcP256,
                    "P-256",
                    rfc5912::SECP_256_R_1,
                    32,
                    HashingAlgorithm::Sha256,
                ),
                EccCurve::NistP384 => (
                    KeyAlgorithm::EcP384,
                    "P-384",
                    rfc5912::SECP_384_R_1,
                    48,
                    HashingAlgorithm::Sha384,
                ),
                other => return Err(format!("an ECC key on curve {other:?}")),
            };
            let scheme = ecdsa_scheme(parameters.ecc_scheme(), hash)?;
            let x = left_pad(unique.x().value(), len)?;
            let y = left_pad(unique.y().value(), len)?;
            let mut point = vec![0x04];
            point.extend(&x);
            point.extend(&y);
            let spki = spki_parts::ec_spki(curve, &point).map_err(encode_err)?;
            Ok(PublicParts {
                algorithm,
                jwk: Jwk::ec(crv, &x, &y),
                spki,
                scheme,
            })
        }
        Public::Rsa {
            parameters,
            unique,
            object_attributes,
            ..
        } => {
            unrestricted_signing("RSA", object_attributes)?;
            let scheme = rsassa_scheme(parameters.rsa_scheme())?;
            let algorithm = match parameters.key_bits() {
                RsaKeyBits::Rsa2048 => KeyAlgorithm::Rsa2048,
                RsaKeyBits::Rsa3072 => KeyAlgorithm::Rsa3072,
                RsaKeyBits::Rsa4096 => KeyAlgorithm::Rsa4096,
                other => return Err(format!("an RSA key of {other:?}")),
            };
            let e = match parameters.exponent().value() {
                0 => 65537u32,
                e => e,
            }
            .to_be_bytes();
            let e = &e[e.iter().position(|b| *b != 0).unwrap_or(3)..];
            let n = unique.value();
            let spki = spki_parts::rsa_spki(n, e).map_err(encode_err)?;
            Ok(PublicParts {
                algorithm,
                jwk: Jwk::rsa(n, e),
                spki,
                scheme,
            })
        }
        _ => Err("not an asymmetric key".to_owned()),
    }
}
