//! Helpers shared by certfleet's HTTP-API DNS-01 plugins (`route53`, `cloudflare`,
//! `powerdns`), so each policy is written once: a blocking [`ApiClient`] (ureq on rustls/ring)
//! with bounded retries and backoff on 429/5xx honouring `Retry-After`, zone lookup by longest
//! suffix ([`zone`]), secrets from a setting, an environment variable or a file
//! ([`secret_setting`]), the redacting [`Secret`], and JSON parsing that reports malformed
//! answers clearly ([`parse_json`]).
//!
//! Plugins link this crate statically: the C ABI of `certfleet-plugin-abi` stays the only
//! run-time seam between certfleet and a plugin.

mod client;
mod config;
mod creds;
mod plugin;
mod retry;
mod secret;
pub mod settings;
pub mod zone;

pub use client::{ApiClient, Auth, Counters, NoAuth, Request, Response, parse_json, snippet};
pub use config::{ConfigTable, HttpSettings};
pub use creds::{read_secret_file, secret_setting};
pub use plugin::{ApiPlugin, ChangeOp, ProviderApi, ProviderPlugin};
pub use retry::{RetryPolicy, parse_retry_after};
pub use secret::{Secret, redact};
pub use settings::HeaderAuth;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_client;
