//! The JSON documents that cross the boundary. Unknown fields are ignored and new fields get
//! defaults, so either side can grow them without an ABI bump.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One `_acme-challenge` TXT record. `fqdn` is absolute with a trailing dot.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TxtRecord {
    pub fqdn: String,
    pub value: String,
}

/// Input of `present` and `cleanup`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RecordsInput {
    pub records: Vec<TxtRecord>,
}

/// Input of the `apply` entry point: one combined change. Values in `remove` are removed
/// before those in `add` are added (a value in both ends up present).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ChangeInput {
    #[serde(default)]
    pub remove: Vec<TxtRecord>,
    #[serde(default)]
    pub add: Vec<TxtRecord>,
    /// The host checks every authoritative server for the added values before using them,
    /// so the plugin may skip its own read-back of what the provider accepted.
    #[serde(default)]
    pub host_checks_propagation: bool,
}

/// What a failing call (or `create`) returns.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// `config`, `auth`, `refused`, `not_found`, `network`, `provider`, `unsupported`,
    /// `internal` or `panic` (unknown kinds are read as `provider`).
    pub kind: String,
    /// Human-readable, lowercase, no trailing period; never contains a secret.
    pub message: String,
    /// The records the failure concerns, when known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<TxtRecord>,
}

/// Input of `check` (optional: older hosts send `{}`): the names about to be issued for.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CheckInput {
    #[serde(default)]
    pub names: Vec<String>,
}

/// Output of `check`: one line per thing tested.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CheckReport {
    pub checks: Vec<crate::CheckResult>,
}

/// Output of `metrics`: counters since the instance was created (`update_messages`,
/// `dns_queries`, `http_requests`, `commands_run`, … as the provider sees fit).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MetricsReport {
    #[serde(default)]
    pub counters: BTreeMap<String, u64>,
}
