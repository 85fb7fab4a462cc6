//! Just enough X.509 ([RFC 5280 §4.1](https://www.rfc-editor.org/rfc/rfc5280#section-4.1))
//! to read issuer and subject names, the serial number and extensions.
//!
//! Deliberately lenient: validity, keys and signatures are kept as opaque DER, so a
//! certificate with unusual dates (the RFC 9773 example is valid from year 1) still yields
//! its CertID and names. Nothing here verifies anything.

use der::asn1::{AnyRef, BitStringRef};
use der::{Decode, Sequence, Tag, Tagged};
use x509_cert::ext::Extension;
use x509_cert::name::Name;

/// `Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }`.
#[derive(Sequence)]
pub(crate) struct LenientCertificate<'a> {
    pub(crate) tbs: LenientTbs<'a>,
    pub(crate) signature_algorithm: AnyRef<'a>,
    pub(crate) signature: AnyRef<'a>,
}

/// `TBSCertificate` with the parts this crate never interprets left opaque.
#[derive(Sequence)]
pub(crate) struct LenientTbs<'a> {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub(crate) version: Option<AnyRef<'a>>,
    pub(crate) serial_number: AnyRef<'a>,
    pub(crate) signature: AnyRef<'a>,
    pub(crate) issuer: Name,
    pub(crate) validity: AnyRef<'a>,
    pub(crate) subject: Name,
    pub(crate) subject_public_key_info: AnyRef<'a>,
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", optional = "true")]
    pub(crate) issuer_unique_id: Option<BitStringRef<'a>>,
    #[asn1(context_specific = "2", tag_mode = "IMPLICIT", optional = "true")]
    pub(crate) subject_unique_id: Option<BitStringRef<'a>>,
    #[asn1(context_specific = "3", tag_mode = "EXPLICIT", optional = "true")]
    pub(crate) extensions: Option<Vec<Extension>>,
}

impl<'a> LenientCertificate<'a> {
    /// Parses a DER certificate; the whole input must be one certificate.
    pub(crate) fn parse(der: &'a [u8]) -> Result<LenientCertificate<'a>, String> {
        let cert = LenientCertificate::from_der(der).map_err(|e| e.to_string())?;
        if cert.tbs.serial_number.tag() != Tag::Integer {
            return Err("the serial number is not an INTEGER".to_owned());
        }
        Ok(cert)
    }

    /// The serial's DER content octets (a leading `0x00` kept).
    pub(crate) fn serial_content(&self) -> &'a [u8] {
        self.tbs.serial_number.value()
    }

    pub(crate) fn extensions(&self) -> &[Extension] {
        self.tbs.extensions.as_deref().unwrap_or_default()
    }
}

/// The first common name in `name`, for the string types CAs use.
pub(crate) fn common_name(name: &Name) -> Option<String> {
    name.0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|atv| atv.oid == const_oid::db::rfc4519::CN)
        .and_then(|atv| {
            let bytes = atv.value.value();
            match atv.value.tag() {
                Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::TeletexString => {
                    Some(String::from_utf8_lossy(bytes).into_owned())
                }
                Tag::BmpString => {
                    let units: Vec<u16> = bytes
                        .chunks_exact(2)
                        .map(|c| u16::from_be_bytes([c[0], c[1]]))
                        .collect();
                    Some(String::from_utf16_lossy(&units))
                }
                _ => None,
            }
        })
}
