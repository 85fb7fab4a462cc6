//! The certificate directory: `cert.pem`, `chain.pem`, `fullchain.pem`, `privkey.pem` (file
//! keys) or `key.ref`, and `meta.json`.
//!
//! Every file is written atomically (temp file + rename), so a crash leaves either the old
//! or the new file, never a truncated one. `meta.json` is written last: when it names a
//! serial, the PEM files beside it are that certificate.

use std::path::{Path, PathBuf};

use certfleet_keys::KeyRef;
use certfleet_keys::fs::write_atomic;
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

/// Where the certificate key ends up in the directory.
#[derive(Debug)]
pub enum KeyOutput<'a> {
    /// A file key: its PEM is (or already was) `privkey.pem`, mode 0600.
    PrivateKeyPem(&'a [u8]),
    /// The key lives elsewhere (a file the user named, a token, a TPM): write `key.ref`.
    Reference(&'a KeyRef),
    /// `privkey.pem` is already in place (a renewal reusing the key): leave it alone.
    Unchanged,
}

/// Writes the certificate directory, creating it (0755) if needed.
pub fn write_certificate_dir(
    dir: &Path,
    issued: &IssuedCertificate,
    key: KeyOutput<'_>,
    meta: &CertificateMeta,
) -> Result<(), IssueError> {
    certfleet_fs::ensure_dir(dir, 0o755).map_err(|e| IssueError::Io {
        path: dir.to_owned(),
        source: e.into(),
    })?;
    let write = |name: &str, bytes: &[u8], mode: u32| -> Result<PathBuf, IssueError> {
        let path = dir.join(name);
        write_atomic(&path, bytes, mode).map_err(|source| IssueError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    };
    // Key first: a crash after it leaves the old certificate with a key it does not match
    // only when the key changed, and `meta.json` (last) still describes the old state.
    match key {
        KeyOutput::PrivateKeyPem(pem) => {
            write(PRIVKEY_FILE, pem, 0o600)?;
        }
        KeyOutput::Reference(key_ref) => {
            write(KEY_REF_FILE, format!("{key_ref}\n").as_bytes(), 0o644)?;
        }
        KeyOutput::Unchanged => {}
    }
    let chain = &issued.chain;
    let leaf = chain.leaf_pem();
    let issuers = chain.issuer_chain_pem();
    write(CERT_FILE, leaf.as_bytes(), 0o644)?;
    write(CHAIN_FILE, issuers.as_bytes(), 0o644)?;
    write(FULLCHAIN_FILE, format!("{leaf}{issuers}").as_bytes(), 0o644)?;
    let json = serde_json::to_vec_pretty(meta).map_err(|e| IssueError::Io {
        path: dir.join(META_FILE),
        source: std::io::Error::other(e),
    })?;
    write(META_FILE, &json, 0o644)?;
    Ok(())
}
