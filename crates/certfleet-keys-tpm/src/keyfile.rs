//! TPM key files: the public area and the TPM-wrapped private blob of a key, as JSON.
//!
//! The private blob is encrypted by the TPM under the storage primary, which only that TPM
//! can re-create: the file is useless anywhere else, and holds no private key material in
//! the clear. It is still written with mode 0600 (like any key), atomically, never over an
//! existing file.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use certfleet_keys::KeyAlgorithm;
use serde::{Deserialize, Serialize};
use tss_esapi::structures::{Private, Public};
use tss_esapi::traits::{Marshall, UnMarshall};

/// Format tag written into every key file.
const FORMAT: &str = "certfleet-tpm-key/1";
/// The parent every key file is created under (see `templates::storage_primary`).
const PARENT: &str = "owner/ecc-p256-storage-primary";
/// Larger files are not key files.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFileJson {
    format: String,
    algorithm: KeyAlgorithm,
    parent: String,
    /// Marshalled `TPMT_PUBLIC`, base64.
    public: String,
    /// `TPM2B_PRIVATE` contents (wrapped by the TPM), base64.
    private: String,
}

/// A key file's contents.
#[derive(Debug, Clone)]
pub(crate) struct KeyFile {
    pub algorithm: KeyAlgorithm,
    pub public: Public,
    pub private: Private,
}

impl KeyFile {
    pub(crate) fn to_json(&self) -> Result<String, String> {
        let public = self.public.marshall().map_err(|e| e.to_string())?;
        let json = KeyFileJson {
            format: FORMAT.to_owned(),
            algorithm: self.algorithm,
            parent: PARENT.to_owned(),
            public: STANDARD.encode(public),
            private: STANDARD.encode(self.private.value()),
        };
        serde_json::to_string_pretty(&json).map_err(|e| e.to_string())
    }

    /// Reads a key file (blocking).
    pub(crate) fn read(path: &Path) -> Result<KeyFile, String> {
        use std::io::Read;
        let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
        let mut text = String::new();
        file.take(MAX_KEY_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| format!("not a TPM key file: {e}"))?;
        if text.len() as u64 > MAX_KEY_FILE_BYTES {
            return Err("too large to be a TPM key file".to_owned());
        }
        KeyFile::parse(&text)
    }

    pub(crate) fn parse(text: &str) -> Result<KeyFile, String> {
        let json: KeyFileJson =
            serde_json::from_str(text).map_err(|e| format!("not a TPM key file: {e}"))?;
        if json.format != FORMAT {
            return Err(format!("format {:?}, expected {FORMAT:?}", json.format));
        }
        if json.parent != PARENT {
            return Err(format!("parent {:?}, expected {PARENT:?}", json.parent));
        }
        let decode = |what: &str, b64: &str| {
            STANDARD
                .decode(b64)
                .map_err(|e| format!("{what} is not base64: {e}"))
        };
        let public = Public::unmarshall(&decode("public", &json.public)?)
            .map_err(|e| format!("public area does not parse: {e}"))?;
        let private = Private::try_from(decode("private", &json.private)?)
            .map_err(|e| format!("private blob: {e}"))?;
        Ok(KeyFile {
            algorithm: json.algorithm,
            public,
            private,
        })
    }
}
