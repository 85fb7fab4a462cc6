//! From "these names, this key" to a certificate on disk.
//!
//! [`steps`] are the steps of one ACME order (RFC 8555 §7.4), shared by every driver: new
//! order, one challenge per pending authorization through the configured
//! [`ChallengeSolvers`], polling under one policy ([`poll`]), a CSR signed through the
//! [`SigningKey`] seam, finalize, download and chain choice, the final check. Drivers say
//! what happens between steps through a [`Checkpoint`]: [`Issuer`] (`issue`, `renew`)
//! stores nothing; the batch job driver writes its store. Solver records are always
//! cleaned up, on failure too. [`bundle`] writes the certificate directory whole and
//! [`renewal`] decides when a certificate is due (ARI window, else a third of its lifetime
//! left).
//!
//! This crate composes the ACME core with solvers; it knows nothing of configuration, of
//! which key backend or DNS provider is in use, or of the terminal.
//!
//! [`SigningKey`]: certfleet_keys::SigningKey

pub mod bundle;
mod certinfo;
mod driver;
mod error;
mod key_maker;
pub mod output;
pub mod poll;
pub mod renewal;
mod solvers;
pub mod steps;
pub mod validation;

pub use certfleet_request::KeyChoice;
pub use certinfo::{CertificateInfo, first_pem_certificate};
pub use driver::{CertificateRequest, ExistingKey, IssuedCertificate, Issuer, pick_challenge};
pub use error::IssueError;
pub use key_maker::KeyMaker;
pub use poll::MIN_POLL_INTERVAL;
pub use solvers::{ChallengeKind, ChallengeSolvers};
pub use steps::{Checkpoint, OrderSteps, check_matches};
