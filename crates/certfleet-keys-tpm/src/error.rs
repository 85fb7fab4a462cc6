use std::path::PathBuf;

use certfleet_keys::KeyError;

/// Everything that can go wrong with a TPM key. Messages name the key reference.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TpmError {
    #[error("invalid TPM key reference {uri:?}: {detail}")]
    InvalidUri { uri: String, detail: String },
    #[error(
        "{uri}: cannot reach the TPM through TCTI {tcti:?}: {detail} (is the TPM, or swtpm, \
         running and reachable? pass ?tcti=… to pick another one)"
    )]
    Unreachable {
        uri: String,
        tcti: String,
        detail: String,
    },
    #[error("{uri}: TPM key file {path}: {detail}")]
    KeyFile {
        uri: String,
        path: PathBuf,
        detail: String,
    },
    #[error("{uri}: {path} already exists; refusing to overwrite a key (remove it first)")]
    AlreadyExists { uri: String, path: PathBuf },
    #[error("{uri}: the TPM backend makes es256, es384 and rs256 keys; {algorithm} was asked for")]
    UnsupportedAlgorithm { uri: String, algorithm: String },
    #[error("{uri}: wrong key type: the TPM object is {found}, {expected} was asked for")]
    WrongKeyType {
        uri: String,
        found: String,
        expected: String,
    },
    #[error("{uri}: no persistent object at handle {handle:#010x}")]
    HandleNotFound { uri: String, handle: u32 },
    #[error("{uri}: persistent handle {handle:#010x} is already in use")]
    HandleInUse { uri: String, handle: u32 },
    #[error("{uri}: TPM {operation} failed: {detail}")]
    Tpm {
        uri: String,
        operation: &'static str,
        detail: String,
    },
    #[error("{uri}: the TPM owner thread has stopped ({detail})")]
    OwnerGone { uri: String, detail: String },
}

impl TpmError {
    /// The reference this error is about.
    pub fn uri(&self) -> &str {
        match self {
            TpmError::InvalidUri { uri, .. }
            | TpmError::Unreachable { uri, .. }
            | TpmError::KeyFile { uri, .. }
            | TpmError::AlreadyExists { uri, .. }
            | TpmError::UnsupportedAlgorithm { uri, .. }
            | TpmError::WrongKeyType { uri, .. }
            | TpmError::HandleNotFound { uri, .. }
            | TpmError::HandleInUse { uri, .. }
            | TpmError::Tpm { uri, .. }
            | TpmError::OwnerGone { uri, .. } => uri,
        }
    }
}

impl From<TpmError> for KeyError {
    fn from(e: TpmError) -> KeyError {
        KeyError::Device {
            key_ref: e.uri().to_owned(),
            source: Box::new(e),
        }
    }
}
