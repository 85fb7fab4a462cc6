//! The ACME protocol core ([RFC 8555](https://www.rfc-editor.org/rfc/rfc8555)): directory,
//! nonces, JWS, accounts (with external account binding and key rollover), orders,
//! authorizations, challenges, certificate download with alternate chains, revocation,
//! and ACME Renewal Information ([RFC 9773](https://www.rfc-editor.org/rfc/rfc9773)).
//!
//! **Architecture invariants.** The core knows nothing of DNS, HTTP challenge servers,
//! files or key hardware: it signs through `Arc<dyn certfleet_keys::SigningKey>` and
//! takes and returns bytes. It never sleeps to poll: [`PollPolicy::next_delay`] turns the
//! server's [`RetryAfter`] into a delay and the caller waits (the only sleep is the
//! bounded backoff between directory fetch attempts in [`AcmeClient::connect`]).
//!
//! The process must install a rustls crypto provider before connecting
//! (`rustls::crypto::ring::default_provider().install_default()`).
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use certfleet_acme::*;
//! # async fn demo(key: Arc<dyn certfleet_keys::SigningKey>, csr_der: Vec<u8>)
//! #     -> Result<(), AcmeError> {
//! let client = AcmeClient::connect("https://localhost:14000/dir", ClientConfig::default()).await?;
//! let account = client
//!     .new_account(key, &NewAccount { terms_of_service_agreed: true, ..Default::default() })
//!     .await?;
//! let mut order = account.new_order(&NewOrder::dns(["example.com"])).await?;
//! for url in &order.state.authorizations {
//!     let authz = account.authorization(url).await?;
//!     if let Some(ch) = authz.state.challenge(&ChallengeType::Dns01) {
//!         let txt = account.dns01_txt_value(ch.token.as_deref().unwrap_or_default());
//!         // publish `_acme-challenge.example.com. TXT txt`, then:
//!         # let _ = txt;
//!         account.respond_to_challenge(&ch.url).await?;
//!     }
//! }
//! let policy = PollPolicy::default();
//! let started = time::OffsetDateTime::now_utc();
//! let mut attempt = 0;
//! while !matches!(order.status(), OrderStatus::Ready | OrderStatus::Invalid) {
//!     let now = time::OffsetDateTime::now_utc();
//!     let delay = policy
//!         .next_delay(attempt, order.retry_after.as_ref(), now, started)
//!         .map_err(|source| AcmeError::PollExhausted { url: order.url.clone(), source })?;
//!     tokio::time::sleep(delay).await; // the caller's clock, not the core's
//!     attempt += 1;
//!     order = account.order(&order.url).await?;
//! }
//! let order = account.finalize(&order, &csr_der).await?;
//! // … poll until `valid`, then:
//! if let Some(cert_url) = &order.state.certificate {
//!     let dl = account.download_certificate(cert_url).await?;
//!     let chain = choose_chain(dl.chain.clone(), account.download_alternate_chains(&dl).await?, "ISRG Root X1");
//!     println!("{}", chain.pem);
//! }
//! println!("{:?}", client.stats());
//! # Ok(()) }
//! ```

// `AcmeError::Api` carries the whole typed problem (with subproblems) by value, as the
// public contract promises; errors are the cold path of network calls, so their size is
// irrelevant next to a round trip.
#![allow(clippy::result_large_err)]

mod account;
mod ari;
mod authz;
mod certificate;
mod chain;
mod client;
mod directory;
mod eab;
mod error;
mod escape;
mod http;
mod identifier;
mod jws;
mod nonce;
mod order;
pub mod persist;
mod poll;
mod problem;
mod revocation;
#[cfg(test)]
mod test_support;
mod wire_log;
mod x509;

pub use account::{Account, AccountState, AccountStatus, NewAccount, NewAccountOutcome};
pub use ari::{
    ARI_DEFAULT_RECHECK, ARI_MAX_RECHECK, ARI_MIN_RECHECK, CertId, InvalidCertId, RenewalInfo,
    RenewalWindow,
};
pub use authz::{
    Authorization, AuthorizationState, AuthorizationStatus, Challenge, ChallengeStatus,
    ChallengeType,
};
pub use certificate::{
    CertificateDownload, Link, MAX_ALTERNATE_CHAINS, parse_link_headers, parse_link_value,
};
pub use chain::{
    CertificateChain, InvalidChain, choose_chain, issuer_common_name, pem_encode,
    subject_common_name,
};
pub use client::{AcmeClient, ClientConfig};
pub use directory::{Directory, DirectoryMeta};
pub use eab::{ExternalAccountBinding, InvalidEabKey, MacAlgorithm, UnknownMacAlgorithm};
pub use error::AcmeError;
pub use escape::escape_ca_text;
pub use http::{MAX_CHAIN_BYTES, MAX_JSON_BYTES, RequestStats};
pub use identifier::{
    Identifier, IdentifierType, InvalidIdentifier, normalize_dns_name, validate_dns_name,
};
pub use jws::FlattenedJws;
pub use order::{NewOrder, Order, OrderList, OrderState, OrderStatus};
pub use poll::{PollExhausted, PollPolicy, RetryAfter};
pub use problem::{ACME_ERROR_PREFIX, Problem, ProblemKind, Subproblem};
pub use revocation::{RevocationReason, UnknownRevocationReason};
