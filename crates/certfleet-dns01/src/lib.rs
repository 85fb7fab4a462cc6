//! The DNS-01 solver seam (RFC 8555 §8.4).
//!
//! A solver receives a *batch* of TXT records and makes them visible in DNS (`present`),
//! then removes exactly those values (`cleanup`). Batches let a provider send one update per
//! zone for many orders at once. Solvers see only record names and values: never the account
//! key, the key authorization, or anything else of the ACME exchange. Checking that the
//! records have propagated is the host's job, not the solver's.
//!
//! Two records may share a name (a wildcard and its base domain in one order): solvers must
//! add and delete single values, never replace the whole RRset.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// One `_acme-challenge` TXT record to present.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TxtRecord {
    /// Fully qualified owner name with trailing dot, e.g. `_acme-challenge.www.example.com.`.
    pub fqdn: String,
    /// The TXT value: base64url(SHA-256(key authorization)), 43 characters.
    pub value: String,
}

impl TxtRecord {
    /// The record for `domain` (a wildcard's `*.` already stripped, as in the authorization).
    pub fn for_domain(domain: &str, value: impl Into<String>) -> TxtRecord {
        let domain = domain.trim_end_matches('.');
        TxtRecord {
            fqdn: format!("_acme-challenge.{domain}."),
            value: value.into(),
        }
    }
}

impl fmt::Display for TxtRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} TXT \"{}\"", self.fqdn, self.value)
    }
}

/// Why a solver could not present or clean up records.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Dns01Error {
    /// The provider rejected or failed the change; `records` are the ones affected.
    #[error("{provider}: {detail} (records: {})", join(records))]
    Provider {
        provider: String,
        detail: String,
        records: Vec<TxtRecord>,
    },
    /// Records did not become visible in time; `detail` names the lagging servers and what
    /// they answered.
    #[error(
        "records not visible after {waited_secs}s: {detail} (records: {})",
        join(records)
    )]
    NotPropagated {
        waited_secs: u64,
        detail: String,
        records: Vec<TxtRecord>,
    },
    /// The solver is misconfigured (names the setting).
    #[error("{provider}: configuration: {detail}")]
    Config { provider: String, detail: String },
}

fn join(records: &[TxtRecord]) -> String {
    records
        .iter()
        .map(|r| r.fqdn.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Presents and removes DNS-01 TXT records. Implementations must be safe to call
/// concurrently for disjoint batches.
#[async_trait]
pub trait Dns01Solver: Send + Sync + fmt::Debug {
    /// Short name for logs and errors (`rfc2136`, `route53`, …).
    fn name(&self) -> &str;

    /// Adds every record of the batch (each value individually, keeping other values on the
    /// same name). Returns when the provider has accepted the change, not when it has
    /// propagated.
    async fn present(&self, records: &[TxtRecord]) -> Result<(), Dns01Error>;

    /// Removes exactly these values. Removing a value that is already gone is not an error.
    async fn cleanup(&self, records: &[TxtRecord]) -> Result<(), Dns01Error>;

    /// Removes `change.remove`, then adds `change.add`: one change per zone where the
    /// provider can carry both (an RFC 2136 UPDATE holds deletes and adds). The default is
    /// [`cleanup`](Dns01Solver::cleanup) then [`present`](Dns01Solver::present).
    async fn apply(&self, change: Change<'_>) -> Result<(), Dns01Error> {
        if !change.remove.is_empty() {
            self.cleanup(change.remove).await?;
        }
        if !change.add.is_empty() {
            self.present(change.add).await?;
        }
        Ok(())
    }
}

/// A combined change for [`Dns01Solver::apply`].
#[derive(Clone, Copy, Debug)]
pub struct Change<'a> {
    /// Values to remove (first).
    pub remove: &'a [TxtRecord],
    /// Values to add (after the removals: a value in both ends up present).
    pub add: &'a [TxtRecord],
    /// The caller checks every authoritative server for the added values before using
    /// them, so a solver may skip its own read-back of what the provider accepted.
    pub host_checks_propagation: bool,
}

/// Waits until presented records are visible where the CA will look (every authoritative
/// server of the zone, optionally recursive resolvers). Lives on the host side so each
/// provider does not reimplement it; without one, challenges are answered right after
/// `present` returns.
#[async_trait]
pub trait PropagationCheck: Send + Sync + fmt::Debug {
    async fn wait_until_visible(&self, records: &[TxtRecord]) -> Result<(), Dns01Error>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_name_for_domain_and_trailing_dot() {
        assert_eq!(
            TxtRecord::for_domain("example.com", "v").fqdn,
            "_acme-challenge.example.com."
        );
        assert_eq!(
            TxtRecord::for_domain("example.com.", "v").fqdn,
            "_acme-challenge.example.com."
        );
    }
}
