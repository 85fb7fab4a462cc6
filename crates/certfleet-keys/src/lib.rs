//! Signing keys for ACME: the [`SigningKey`] seam every backend implements, the public
//! [`Jwk`] with its RFC 7638 thumbprint, persisted [`KeyRef`]s, the file backend
//! ([`mod@file`]), PKCS#10 CSRs signed through the seam ([`csr`]) and crash-safe file
//! writes ([`mod@fs`]). With the `conformance` feature, `conformance::check_signing_key` is
//! the test suite every backend must pass.
//!
//! The ACME core only ever sees `Arc<dyn SigningKey>`: it never learns where the private key
//! lives. Hardware backends (PKCS#11, TPM) implement the same trait in their own crates.
//!
//! ```no_run
//! # async fn demo() -> Result<(), certfleet_keys::KeyError> {
//! use certfleet_keys::{file::FileKey, KeyAlgorithm, SigningKey};
//! let key = FileKey::generate(KeyAlgorithm::EcP256, "/tmp/acct.pem".as_ref())?;
//! println!("{} {}", key.key_ref(), key.public_jwk().thumbprint());
//! let sig = key.sign(b"header.payload").await?; // 64-byte r||s for ES256
//! # let _ = sig; Ok(()) }
//! ```

mod algorithm;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod csr;
mod error;
pub mod file;
pub mod fs;
mod jwk;
mod key_ref;
mod signer;
pub mod spki_parts;
#[cfg(test)]
mod test_support;

pub use algorithm::{JwsAlgorithm, KeyAlgorithm};
pub use error::KeyError;
pub use jwk::Jwk;
pub use key_ref::{KeyRef, redact_pin_value};
pub use signer::{KeyBackend, SigningKey, load_key, x509_signature};
