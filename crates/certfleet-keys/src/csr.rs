//! PKCS#10 certificate signing requests ([RFC 2986]) signed through the [`SigningKey`] seam,
//! so the private key may live in a file, an HSM or a TPM.
//!
//! The request carries every name in a subjectAltName extension (what ACME CAs read, RFC
//! 8555 §7.4) and the first name as the subject CN when it fits the 64-character limit.
//!
//! [RFC 2986]: https://www.rfc-editor.org/rfc/rfc2986

use std::net::IpAddr;

use const_oid::db::{rfc4519, rfc5912, rfc8410};
use der::asn1::{BitString, Ia5String, SetOfVec, Utf8StringRef};
use der::pem::LineEnding;
use der::{Any, Encode};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::attr::{Attribute, AttributeTypeAndValue};
use x509_cert::ext::AsExtension;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::request::{CertReq, CertReqInfo, ExtensionReq, Version};

use crate::{JwsAlgorithm, KeyError, SigningKey, x509_signature};

/// Longest subject CN allowed by RFC 5280 (`ub-common-name`).
const MAX_CN_LEN: usize = 64;

/// A DER-encoded PKCS#10 `CertificationRequest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Csr {
    pub der: Vec<u8>,
}

impl Csr {
    /// PEM with the `CERTIFICATE REQUEST` label (LF line endings).
    pub fn to_pem(&self) -> String {
        // Encoding only fails for an invalid label or a length overflowing usize; the label
        // is a constant and the DER is a few kilobytes.
        der::pem::encode_string("CERTIFICATE REQUEST", LineEnding::LF, &self.der)
            .expect("PEM-encoding a CSR cannot fail")
    }
}

/// Builds and signs a CSR for `names` (DNS names, or IP addresses which become `iPAddress`
/// SANs) with `key`.
///
/// Names must be ASCII: convert internationalized names to A-labels (punycode) first.
/// Exact duplicates are dropped; at least one name is required.
pub async fn build_csr(key: &dyn SigningKey, names: &[String]) -> Result<Csr, KeyError> {
    let info = request_info(key, names)?;
    let to_sign = info.to_der().map_err(der_err)?;
    let alg = key.jws_algorithm();
    let signature = key.sign(&to_sign).await?;
    let signature = x509_signature(alg, &signature)?;
    let request = CertReq {
        info,
        algorithm: signature_algorithm(alg),
        signature: BitString::from_bytes(&signature).map_err(der_err)?,
    };
    Ok(Csr {
        der: request.to_der().map_err(der_err)?,
    })
}

fn request_info(key: &dyn SigningKey, names: &[String]) -> Result<CertReqInfo, KeyError> {
    let csr_err = |detail: String| KeyError::Csr { detail };
    let mut unique: Vec<&str> = Vec::with_capacity(names.len());
    for name in names {
        if !unique.contains(&name.as_str()) {
            unique.push(name);
        }
    }
    let first = *unique
        .first()
        .ok_or_else(|| csr_err("no names given; a CSR needs at least one".to_owned()))?;

    let mut general_names = Vec::with_capacity(unique.len());
    for name in &unique {
        general_names.push(general_name(name)?);
    }

    let subject = if first.len() <= MAX_CN_LEN {
        let cn = AttributeTypeAndValue {
            oid: rfc4519::COMMON_NAME,
            value: Any::encode_from(&Utf8StringRef::new(first).map_err(der_err)?)
                .map_err(der_err)?,
        };
        let rdn = RelativeDistinguishedName(SetOfVec::try_from(vec![cn]).map_err(der_err)?);
        RdnSequence(vec![rdn])
    } else {
        // RFC 5280 caps CN at 64 characters; an empty subject is fine when the SAN
        // extension carries the names.
        Name::default()
    };

    let san = SubjectAltName(general_names)
        .to_extension(&subject, &[])
        .map_err(der_err)?;
    let attribute = Attribute::try_from(ExtensionReq(vec![san])).map_err(der_err)?;
    let public_key =
        SubjectPublicKeyInfoOwned::try_from(key.public_key_der()).map_err(|e| KeyError::Csr {
            detail: format!("key {} has an unreadable public key: {e}", key.key_ref()),
        })?;
    Ok(CertReqInfo {
        version: Version::V1,
        subject,
        public_key,
        attributes: SetOfVec::try_from(vec![attribute]).map_err(der_err)?,
    })
}

fn general_name(name: &str) -> Result<GeneralName, KeyError> {
    if name.is_empty() {
        return Err(KeyError::Csr {
            detail: "empty name".to_owned(),
        });
    }
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(GeneralName::from(ip));
    }
    if !name.is_ascii() {
        return Err(KeyError::Csr {
            detail: format!(
                "name {name:?} is not ASCII; convert internationalized names to A-labels \
                 (punycode, xn--…) first"
            ),
        });
    }
    Ia5String::new(name)
        .map(GeneralName::DnsName)
        .map_err(|e| KeyError::Csr {
            detail: format!("name {name:?}: {e}"),
        })
}

/// The X.509 signature AlgorithmIdentifier for a JWS algorithm (RFC 5758 §3.2, RFC 4055
/// §5 with NULL parameters, RFC 8410 §3).
pub fn signature_algorithm(alg: JwsAlgorithm) -> AlgorithmIdentifierOwned {
    let (oid, parameters) = match alg {
        JwsAlgorithm::ES256 => (rfc5912::ECDSA_WITH_SHA_256, None),
        JwsAlgorithm::ES384 => (rfc5912::ECDSA_WITH_SHA_384, None),
        JwsAlgorithm::RS256 => (rfc5912::SHA_256_WITH_RSA_ENCRYPTION, Some(Any::null())),
        JwsAlgorithm::EdDSA => (rfc8410::ID_ED_25519, None),
    };
    AlgorithmIdentifierOwned { oid, parameters }
}

fn der_err(e: der::Error) -> KeyError {
    KeyError::Csr {
        detail: format!("DER encoding: {e}"),
    }
}

#[cfg(test)]
mod tests;
