//! The certificate directory: `cert.pem`, `chain.pem`, `fullchain.pem`, `privkey.pem` (file
//! keys) or `key.ref`, and `meta.json`.
//!
//! The directory is written whole by [`crate::bundle`]: readers see the old bundle or the
//! new one, never a mix.

use std::path::Path;

use certfleet_keys::KeyRef;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{IssueError, IssuedCertificate};

pub const CERT_FILE: &str = "cert.pem";
pub const CHAIN_FILE: &str = "chain.pem";
pub const FULLCHAIN_FILE: &str = "fullchain.pem";
pub const PRIVKEY_FILE: &str = "privkey.pem";
pub const KEY_REF_FILE: &str = "key.ref";
pub const META_FILE: &str = "meta.json";

/// `meta.json`: what was issued, by whom, with which key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateMeta {
    pub names: Vec<String>,
    pub serial: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    pub account_url: String,
    pub order_url: String,
    pub certificate_url: String,
    pub key_ref: KeyRef,
    pub ari_cert_id: Option<String>,
    pub issuer_cn: Option<String>,
    pub directory: String,
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
}

impl CertificateMeta {
    pub fn new(
        issued: &IssuedCertificate,
        key_ref: KeyRef,
        account_url: &str,
        directory: &str,
    ) -> CertificateMeta {
        CertificateMeta {
            names: issued.names.clone(),
            serial: issued.info.serial_hex.clone(),
            not_before: issued.info.not_before,
            not_after: issued.info.not_after,
            account_url: account_url.to_owned(),
            order_url: issued.order_url.clone(),
            certificate_url: issued.certificate_url.clone(),
            key_ref,
            ari_cert_id: issued.cert_id.as_ref().map(ToString::to_string),
            issuer_cn: issued.chain.top_issuer_common_name(),
            directory: directory.to_owned(),
            issued_at: OffsetDateTime::now_utc(),
        }
    }

    pub fn read(dir: &Path) -> Result<CertificateMeta, IssueError> {
        let path = dir.join(META_FILE);
        let bytes = std::fs::read(&path).map_err(|source| IssueError::Io {
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|e| IssueError::Io {
            path,
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })
    }
}
