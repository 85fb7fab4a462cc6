//! From "these names, this key" to a certificate on disk.
//!
//! [`Issuer`] drives one ACME order through its life (RFC 8555 §7.4): new order, one
//! challenge per pending authorization through the configured [`ChallengeSolvers`], polling
//! with the CA's `Retry-After`, a CSR signed through the [`SigningKey`] seam, finalize,
//! download and chain choice. Solver records are always cleaned up, on failure too.
//! [`output`] writes the certificate directory atomically and [`renewal`] decides when a
//! certificate is due (ARI window, else a third of its lifetime left).
//!
//! This crate composes the ACME core with solvers; it knows nothing of configuration, of
//! which key backend or DNS provider is in use, or of the terminal.
//!
//! [`SigningKey`]: certfleet_keys::SigningKey

mod certinfo;
mod driver;
mod error;
pub mod output;
pub mod renewal;
mod solvers;
pub mod validation;

pub use certinfo::{CertificateInfo, first_pem_certificate};
pub use driver::{CertificateRequest, IssuedCertificate, Issuer, check_matches, pick_challenge};
pub use error::IssueError;
pub use solvers::{ChallengeKind, ChallengeSolvers};
