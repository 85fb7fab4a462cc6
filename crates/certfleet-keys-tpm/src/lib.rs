//! TPM 2.0 keys for certfleet: account and certificate keys created inside a TPM
//! (`fixedTPM`, `fixedParent`, `sensitiveDataOrigin`) and used only through it.
//!
//! Keys are created under an owner-hierarchy storage primary (ECC P-256, derived again on
//! demand, so nothing has to stay loaded) and kept either as a key file holding the
//! TPM-wrapped private blob and the public area ([`TpmKeyLocation::File`]) or as a
//! persistent object ([`TpmKeyLocation::Handle`]). References look like
//! `tpm:file=/var/lib/certfleet/acct.tpmkey?tcti=device:/dev/tpmrm0`.
//!
//! The TPM runs one command at a time, and a tss-esapi `Context` takes `&mut self`: each
//! TPM (TCTI string) gets one owner thread that holds the context and is fed through a
//! channel; signers await the answer. Transient objects are flushed on every path
//! (success, error, key dropped, thread ending, [`shutdown`]). P-256, P-384 and RSA 2048.
//! Keys made by the admin's own tools (`tpm2_create` + `tpm2_evictcontrol`) load by
//! persistent handle; a null signing scheme (`-G ecc256`, `-G rsa2048`) signs with an
//! explicit one (ECDSA with the curve's hash, RSASSA-SHA256), and a key that cannot sign
//! for its JWS algorithm is refused when it is loaded.
//!
//! The TSS libraries print errors to stderr unless `TSS2_LOG` says otherwise; a program
//! should set `TSS2_LOG=all+none` before it starts threads (the `certfleet` binary does).
//!
//! ```no_run
//! # async fn demo() -> Result<(), certfleet_keys_tpm::TpmError> {
//! use certfleet_keys::{KeyAlgorithm, SigningKey};
//! use certfleet_keys_tpm::{TpmBackend, TpmKeyLocation};
//! let backend = TpmBackend::new("swtpm:host=127.0.0.1,port=2321");
//! let location = TpmKeyLocation::File("/var/lib/certfleet/acct.tpmkey".into());
//! let key = backend.generate(KeyAlgorithm::EcP256, location, None).await?;
//! println!("{} {}", key.key_ref(), key.public_jwk().thumbprint());
//! # Ok(()) }
//! ```

mod device;
mod error;
mod key;
mod keyfile;
mod templates;
mod uri;

use std::sync::Arc;

use async_trait::async_trait;
use certfleet_keys::{KeyAlgorithm, KeyBackend, KeyError, KeyRef, SigningKey};

pub use device::shutdown;
pub use error::TpmError;
pub use key::TpmKey;
pub use uri::{PERSISTENT_FIRST, PERSISTENT_LAST, TpmKeyLocation, TpmUri, parse_handle};

use crate::device::{FailureKind, KeySource, NewKeyTarget, TpmDevice};
use crate::keyfile::KeyFile;

/// The TCTI used when a reference names none: the kernel's resource manager.
pub const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";

/// One persistent key found by [`TpmBackend::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmKeyInfo {
    pub handle: u32,
    /// `None` for objects certfleet does not sign with (described in `description`).
    pub algorithm: Option<KeyAlgorithm>,
    pub description: String,
    pub key_ref: KeyRef,
}

/// Loads, generates and lists `tpm:` keys.
#[derive(Clone, Debug)]
pub struct TpmBackend {
    default_tcti: String,
}

impl Default for TpmBackend {
    fn default() -> Self {
        TpmBackend::new(DEFAULT_TCTI)
    }
}

pub(crate) fn tpm_error(uri: &str, f: device::Failure) -> TpmError {
    TpmError::Tpm {
        uri: uri.to_owned(),
        operation: f.operation,
        detail: f.detail,
    }
}

impl TpmBackend {
    /// A backend that reaches TPMs through `default_tcti` unless a reference says `tcti=`.
    pub fn new(default_tcti: &str) -> TpmBackend {
        TpmBackend {
            default_tcti: default_tcti.to_owned(),
        }
    }

    async fn device(&self, uri: &TpmUri) -> Result<Arc<TpmDevice>, TpmError> {
        let tcti = uri
            .tcti
            .clone()
            .unwrap_or_else(|| self.default_tcti.clone());
        let t = tcti.clone();
        tokio::task::spawn_blocking(move || TpmDevice::open(&t))
            .await
            .map_err(|e| TpmError::OwnerGone {
                uri: uri.to_string(),
                detail: e.to_string(),
            })?
            .map_err(|detail| TpmError::Unreachable {
                uri: uri.to_string(),
                tcti,
                detail,
            })
    }

    /// Loads the key `uri` names.
    pub async fn load_uri(&self, uri: &TpmUri) -> Result<Arc<TpmKey>, TpmError> {
        let shown = uri.to_string();
        let (source, expected) = match &uri.location {
            TpmKeyLocation::File(path) => {
                let p = path.clone();
                let file = tokio::task::spawn_blocking(move || KeyFile::read(&p))
                    .await
                    .map_err(|e| TpmError::OwnerGone {
                        uri: shown.clone(),
                        detail: e.to_string(),
                    })?
                    .map_err(|detail| TpmError::KeyFile {
                        uri: shown.clone(),
                        path: path.clone(),
                        detail,
                    })?;
                let source = KeySource::Blob {
                    public: file.public,
                    private: file.private,
                };
                (source, Some(file.algorithm))
            }
            TpmKeyLocation::Handle(h) => (KeySource::Persistent(*h), None),
        };
        let device = self.device(uri).await?;
        let (id, public) =
            device
                .load(source)
                .await
                .map_err(|f| match (f.kind, &uri.location) {
                    (FailureKind::HandleNotFound, TpmKeyLocation::Handle(handle)) => {
                        TpmError::HandleNotFound {
                            uri: shown.clone(),
                            handle: *handle,
                        }
                    }
                    _ => tpm_error(&shown, f),
                })?;
        let parts = match key::public_parts(&public) {
            Ok(parts) => parts,
            Err(found) => {
                device.unload(id);
                return Err(TpmError::WrongKeyType {
                    uri: shown,
                    found,
                    expected: "an es256, es384 or rs256 signing key".to_owned(),
                });
            }
        };
        if let Some(expected) = expected.filter(|a| *a != parts.algorithm) {
            device.unload(id);
            return Err(TpmError::WrongKeyType {
                uri: shown,
                found: format!("an {} key", parts.algorithm),
                expected: format!("the {expected} key the file says it holds"),
            });
        }
        tracing::debug!(key = %shown, tcti = device.tcti(), algorithm = %parts.algorithm, "TPM key loaded");
        Ok(Arc::new(TpmKey::new(uri.clone(), device, id, parts)))
    }

    /// Creates a key of `algorithm` in the TPM `tcti` (default: the backend's), kept at
    /// `location`: a new key file (mode 0600, never overwriting) or a free persistent handle.
    pub async fn generate(
        &self,
        algorithm: KeyAlgorithm,
        location: TpmKeyLocation,
        tcti: Option<String>,
    ) -> Result<Arc<TpmKey>, TpmError> {
        let uri = TpmUri {
            location: location.clone(),
            tcti,
        };
        let shown = uri.to_string();
        let template = templates::signing_key(algorithm)
            .ok_or_else(|| TpmError::UnsupportedAlgorithm {
                uri: shown.clone(),
                algorithm: algorithm.to_string(),
            })?
            .map_err(|e| TpmError::Tpm {
                uri: shown.clone(),
                operation: "key template",
                detail: e.to_string(),
            })?;
        let target = match &location {
            TpmKeyLocation::File(path) => {
                if path.symlink_metadata().is_ok() {
                    return Err(TpmError::AlreadyExists {
                        uri: shown,
                        path: path.clone(),
                    });
                }
                NewKeyTarget::Blob
            }
            TpmKeyLocation::Handle(h) => NewKeyTarget::Persistent(*h),
        };
        let device = self.device(&uri).await?;
        let created =
            device
                .create(template, target)
                .await
                .map_err(|f| match (f.kind, &location) {
                    (FailureKind::HandleInUse, TpmKeyLocation::Handle(handle)) => {
                        TpmError::HandleInUse {
                            uri: shown.clone(),
                            handle: *handle,
                        }
                    }
                    _ => tpm_error(&shown, f),
                })?;
        if let (TpmKeyLocation::File(path), Some(private)) = (&location, created.private) {
            write_key_file(&shown, path, algorithm, created.public, private).await?;
        }
        tracing::info!(key = %shown, %algorithm, "key created in the TPM");
        self.load_uri(&uri).await
    }

    /// The persistent keys in the owner range of the TPM `tcti` (default: the backend's).
    pub async fn list(&self, tcti: Option<String>) -> Result<Vec<TpmKeyInfo>, TpmError> {
        let probe = TpmUri {
            location: TpmKeyLocation::Handle(PERSISTENT_FIRST),
            tcti,
        };
        let device = self.device(&probe).await?;
        let found = device
            .list_persistent()
            .await
            .map_err(|f| tpm_error(&probe.to_string(), f))?;
        Ok(found
            .into_iter()
            .filter(|(h, _)| (PERSISTENT_FIRST..=PERSISTENT_LAST).contains(h))
            .map(|(handle, public)| {
                let key_ref = TpmUri {
                    location: TpmKeyLocation::Handle(handle),
                    tcti: probe.tcti.clone(),
                }
                .key_ref();
                match key::public_parts(&public) {
                    Ok(parts) => TpmKeyInfo {
                        handle,
                        algorithm: Some(parts.algorithm),
                        description: parts.algorithm.to_string(),
                        key_ref,
                    },
                    Err(found) => TpmKeyInfo {
                        handle,
                        algorithm: None,
                        description: found,
                        key_ref,
                    },
                }
            })
            .collect())
    }
}

async fn write_key_file(
    shown: &str,
    path: &std::path::Path,
    algorithm: KeyAlgorithm,
    public: tss_esapi::structures::Public,
    private: tss_esapi::structures::Private,
) -> Result<(), TpmError> {
    let key_file_err = |detail: String| TpmError::KeyFile {
        uri: shown.to_owned(),
        path: path.to_owned(),
        detail,
    };
    let json = KeyFile {
        algorithm,
        public,
        private,
    }
    .to_json()
    .map_err(key_file_err)?;
    let p = path.to_owned();
    tokio::task::spawn_blocking(move || {
        if let Some(parent) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            certfleet_keys::fs::create_dir_all(parent, 0o700)?;
        }
        certfleet_keys::fs::write_atomic_new(&p, json.as_bytes(), 0o600)
    })
    .await
    .map_err(|e| key_file_err(e.to_string()))?
    .map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            TpmError::AlreadyExists {
                uri: shown.to_owned(),
                path: path.to_owned(),
            }
        } else {
            key_file_err(e.to_string())
        }
    })
}

#[async_trait]
impl KeyBackend for TpmBackend {
    fn scheme(&self) -> &'static str {
        "tpm"
    }

    async fn load(&self, key_ref: &KeyRef) -> Result<Arc<dyn SigningKey>, KeyError> {
        let uri = TpmUri::parse(key_ref.as_str())?;
        let key: Arc<dyn SigningKey> = self.load_uri(&uri).await?;
        Ok(key)
    }
}
