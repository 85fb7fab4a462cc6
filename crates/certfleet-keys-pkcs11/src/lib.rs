//! PKCS#11 keys for certfleet: account and certificate keys generated on, and never
//! exported from, an HSM or token (SoftHSM2, YubiHSM, cloud HSMs…).
//!
//! Keys are named by RFC 7512 URIs ([`Pkcs11Uri`]):
//! `pkcs11:token=certfleet;object=acct?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/certfleet/pin`.
//!
//! - One `C_Initialize` per module per process, one open token per slot; the slot is found
//!   by the URI's attributes (RFC 7512 in full), reading each slot defensively so one bad
//!   slot or field does not hide the others. [`shutdown`] closes sessions, logs out and
//!   calls `C_Finalize` on every module: call it at the end of every command.
//! - A session pool per token (a semaphore of [`DEFAULT_POOL_SIZE`] permits, sessions
//!   opened on demand) with every PKCS#11 call on Tokio's blocking pool, so concurrent
//!   orders sign in parallel; one read-write session stays open so the login lasts.
//! - Login once per token; a rejected PIN is reported and never offered again
//!   ([`Pkcs11Error::PinIncorrect`]), across runs with a [`PinMemory`]; a logged-out token, a closed session or a stale
//!   object handle is recovered from once per signature.
//! - `CKM_ECDSA` over a software SHA-256/384 digest when the token lacks
//!   `CKM_ECDSA_SHA256`; RSA uses `CKM_SHA256_RSA_PKCS` (else `CKM_RSA_PKCS` + DigestInfo).
//! - Generated private keys are `Sensitive`, not `Extractable`.
//! - PINs live in [`Pin`] (`secrecy`), shown as `***` by `Debug`; URIs show `pin-value=***`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), certfleet_keys_pkcs11::Pkcs11Error> {
//! use certfleet_keys::{KeyAlgorithm, SigningKey};
//! use certfleet_keys_pkcs11::{Pkcs11Backend, Pkcs11Uri};
//! let backend = Pkcs11Backend::new();
//! let uri = Pkcs11Uri::parse(
//!     "pkcs11:token=certfleet;object=acct?module-path=/usr/lib/softhsm/libsofthsm2.so\
//!      &pin-source=file:/etc/certfleet/pin",
//! )?;
//! let key = backend.generate(&uri, KeyAlgorithm::EcP256).await?;
//! println!("{} {}", key.key_ref(), key.public_jwk().thumbprint());
//! # Ok(()) }
//! ```

mod discover;
mod error;
mod generate;
mod key;
mod pin;
mod pin_memory;
mod pool;
mod public;
mod raw;
mod token;
mod uri;

use std::sync::Arc;

use async_trait::async_trait;
use certfleet_keys::{KeyAlgorithm, KeyBackend, KeyError, KeyRef, SigningKey};

pub use error::Pkcs11Error;
pub use generate::KeyInfo;
pub use key::Pkcs11Key;
pub use pin::{Pin, PinSource};
pub use pin_memory::PinMemory;
pub use pool::PoolStats;
pub use token::{DEFAULT_POOL_SIZE, ShutdownReport, shutdown};
pub use uri::Pkcs11Uri;

/// Loads, generates and lists keys named by `pkcs11:` references.
#[derive(Clone, Debug)]
pub struct Pkcs11Backend {
    options: Options,
}

/// What every token operation of a backend needs.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub pool_size: usize,
    pub pin_memory: Option<PinMemory>,
}

impl Default for Pkcs11Backend {
    fn default() -> Self {
        Pkcs11Backend::new()
    }
}

impl Pkcs11Backend {
    /// A backend whose tokens get [`DEFAULT_POOL_SIZE`] sessions.
    pub fn new() -> Pkcs11Backend {
        Pkcs11Backend {
            options: Options {
                pool_size: DEFAULT_POOL_SIZE,
                pin_memory: None,
            },
        }
    }

    /// Sessions per token (at least 1), for tokens opened after this backend is used. A
    /// token is opened once per process, by whichever backend reaches it first.
    pub fn with_pool_size(pool_size: usize) -> Pkcs11Backend {
        let mut backend = Pkcs11Backend::new();
        backend.options.pool_size = pool_size.max(1);
        backend
    }

    /// Remembers PINs a token rejected in `memory` (a directory in the state directory),
    /// across runs, and never offers them again until their source changes.
    pub fn with_pin_memory(mut self, memory: PinMemory) -> Pkcs11Backend {
        self.options.pin_memory = Some(memory);
        self
    }

    /// Loads the key `uri` names.
    pub async fn load_uri(&self, uri: &Pkcs11Uri) -> Result<Arc<Pkcs11Key>, Pkcs11Error> {
        let (uri, opts) = (uri.clone(), self.options.clone());
        let shown = uri.to_string();
        key::blocking(&shown, move || Pkcs11Key::load_blocking(&uri, &opts))
            .await
            .map(Arc::new)
    }

    /// Generates a key pair of `algorithm` on the token `uri` names, labelled with its
    /// `object` (and `id` when given, else a fresh one). Refuses an existing label.
    pub async fn generate(
        &self,
        uri: &Pkcs11Uri,
        algorithm: KeyAlgorithm,
    ) -> Result<Arc<Pkcs11Key>, Pkcs11Error> {
        let (uri, opts) = (uri.clone(), self.options.clone());
        let shown = uri.to_string();
        key::blocking(&shown, move || {
            generate::generate_blocking(&uri, algorithm, &opts)
        })
        .await
        .map(Arc::new)
    }

    /// The private keys on the token `uri` names (its `object` and `id` are ignored).
    pub async fn list(&self, uri: &Pkcs11Uri) -> Result<Vec<KeyInfo>, Pkcs11Error> {
        let mut uri = uri.clone();
        uri.object = None;
        uri.id = None;
        let opts = self.options.clone();
        let shown = uri.to_string();
        key::blocking(&shown, move || generate::list_blocking(&uri, &opts)).await
    }
}

#[async_trait]
impl KeyBackend for Pkcs11Backend {
    fn scheme(&self) -> &'static str {
        "pkcs11"
    }

    async fn load(&self, key_ref: &KeyRef) -> Result<Arc<dyn SigningKey>, KeyError> {
        let uri = Pkcs11Uri::parse(key_ref.as_str())?;
        let key: Arc<dyn SigningKey> = self.load_uri(&uri).await?;
        Ok(key)
    }
}
