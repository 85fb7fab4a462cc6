use std::path::PathBuf;

/// Everything that can go wrong finding, loading, generating or using a key.
///
/// Messages name the file or reference involved; they never contain key material or PINs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("invalid key reference {value:?}: expected {expected}")]
    InvalidRef {
        value: String,
        expected: &'static str,
    },
    #[error("no key backend for scheme {scheme:?} in {key_ref:?} (available: {available})")]
    UnknownScheme {
        scheme: String,
        key_ref: String,
        available: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a usable private key: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("{path}: unsupported key: {detail} (supported: P-256, P-384, RSA 2048-4096, Ed25519)")]
    Unsupported { path: PathBuf, detail: String },
    #[error(
        "{path}: encrypted keys are not supported; decrypt with \
         `openssl pkcs8 -in {path} -out key.pem` (and keep the result mode 0600)"
    )]
    Encrypted { path: PathBuf },
    #[error("{path}: this is a {found}, not a private key")]
    NotAPrivateKey { path: PathBuf, found: &'static str },
    #[error("{path} already exists; refusing to overwrite a key (remove it first)")]
    AlreadyExists { path: PathBuf },
    #[error("key generation failed for {algorithm}: {detail}")]
    Generate { algorithm: String, detail: String },
    #[error("signing with {key_ref} failed: {detail}")]
    Sign { key_ref: String, detail: String },
    #[error("building the CSR failed: {detail}")]
    Csr { detail: String },
    #[error("{key_ref}: {detail}")]
    Backend { key_ref: String, detail: String },
    /// A hardware backend's own typed error (PKCS#11, TPM). Its message already names the
    /// key reference (with any PIN redacted); `key_ref` is kept for callers that match on it.
    #[error("{source}")]
    Device {
        key_ref: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}
