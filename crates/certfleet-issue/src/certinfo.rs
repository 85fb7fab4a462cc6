use der::{Decode, Encode};
use time::OffsetDateTime;
use x509_cert::Certificate;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

use crate::IssueError;

/// What we need to know of a leaf certificate: for `meta.json`, for checking the CA gave us
/// what we asked for, and for renewal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateInfo {
    /// Serial number as lowercase hex, without leading zero bytes.
    pub serial_hex: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// dNSName SANs, lowercased, in certificate order.
    pub dns_names: Vec<String>,
    /// DER `SubjectPublicKeyInfo`.
    pub public_key_der: Vec<u8>,
    pub issuer_cn: Option<String>,
}

impl CertificateInfo {
    pub fn from_der(der_bytes: &[u8]) -> Result<CertificateInfo, IssueError> {
        let bad = |detail: String| IssueError::BadCertificate { detail };
        let cert = Certificate::from_der(der_bytes).map_err(|e| bad(format!("not X.509: {e}")))?;
        let tbs = &cert.tbs_certificate;
        let serial = tbs.serial_number.as_bytes();
        let first = serial.iter().position(|b| *b != 0).unwrap_or(serial.len());
        let serial_hex: String = serial[first..].iter().map(|b| format!("{b:02x}")).collect();
        let to_time = |t: &x509_cert::time::Time| {
            let secs = t.to_unix_duration().as_secs();
            i64::try_from(secs)
                .ok()
                .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
                .ok_or_else(|| bad(format!("validity time out of range: {secs}")))
        };
        let mut dns_names = Vec::new();
        for ext in tbs.extensions.iter().flatten() {
            if ext.extn_id == const_oid::db::rfc5280::ID_CE_SUBJECT_ALT_NAME {
                let san = SubjectAltName::from_der(ext.extn_value.as_bytes())
                    .map_err(|e| bad(format!("bad subjectAltName: {e}")))?;
                for name in san.0 {
                    if let GeneralName::DnsName(n) = name {
                        dns_names.push(n.as_str().to_ascii_lowercase());
                    }
                }
            }
        }
        let public_key_der = tbs
            .subject_public_key_info
            .to_der()
            .map_err(|e| bad(format!("bad public key: {e}")))?;
        Ok(CertificateInfo {
            serial_hex,
            not_before: to_time(&tbs.validity.not_before)?,
            not_after: to_time(&tbs.validity.not_after)?,
            dns_names,
            public_key_der,
            issuer_cn: common_name(&tbs.issuer),
        })
    }

    /// Reads the first certificate of a PEM file's contents.
    pub fn from_pem(pem: &str) -> Result<CertificateInfo, IssueError> {
        let der = first_pem_certificate(pem)?;
        CertificateInfo::from_der(&der)
    }
}

/// DER of the first `CERTIFICATE` block in `pem`.
pub fn first_pem_certificate(pem: &str) -> Result<Vec<u8>, IssueError> {
    let certs =
        Certificate::load_pem_chain(pem.as_bytes()).map_err(|e| IssueError::BadCertificate {
            detail: format!("not a PEM certificate: {e}"),
        })?;
    let first = certs
        .into_iter()
        .next()
        .ok_or_else(|| IssueError::BadCertificate {
            detail: "no CERTIFICATE block found".to_owned(),
        })?;
    first.to_der().map_err(|e| IssueError::BadCertificate {
        detail: e.to_string(),
    })
}

fn common_name(name: &x509_cert::name::Name) -> Option<String> {
    name.0.iter().flat_map(|rdn| rdn.0.iter()).find_map(|atv| {
        (atv.oid == const_oid::db::rfc4519::CN).then(|| {
            // CN is usually UTF8String or PrintableString; both decode as a string here.
            der::asn1::Utf8StringRef::try_from(&atv.value)
                .map(|s| s.as_str().to_owned())
                .or_else(|_| {
                    der::asn1::PrintableStringRef::try_from(&atv.value)
                        .map(|s| s.as_str().to_owned())
                })
                .unwrap_or_default()
        })
    })
}
