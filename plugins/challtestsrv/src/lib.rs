//! `challtestsrv`: a certfleet DNS-01 plugin that sets and clears TXT records through
//! pebble-challtestsrv's management API (`POST /set-txt`, `POST /clear-txt`), for tests and
//! demos against Pebble.
//!
//! Settings (`[plugins.challtestsrv]`): `url` (default `http://127.0.0.1:8055`; plain HTTP),
//! `timeout_secs` (default 10, per request), and an optional bearer token for a management
//! API behind an authenticating proxy: `token`, or `token_env` naming an environment variable
//! that holds it. The token is never logged or quoted in errors.
//!
//! challtestsrv's `clear-txt` removes every value of a name, so cleanup of one of two values
//! on the same name (wildcard + apex) removes both; certfleet cleans a whole order's batch at
//! once, so that is harmless there.
//!
//! `set-txt` appends, even a value the name already has. A present is made idempotent, as
//! with every DNS provider: a value this process presented is not sent again, and the first
//! value of a name in this process clears the name first — what an earlier process left
//! (a run killed before its cleanup, whose resumed jobs present the same values again)
//! would otherwise pile up until the answer outgrows a DNS message and the CA's lookup
//! fails (Pebble: "dns: buffer size too small"). So, as with cleanup, two processes must not
//! present values for one name at the same time.

mod http;

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use certfleet_plugin_abi::{
    CheckResult, ErrorKind, Logger, Plugin, PluginError, TxtRecord, export_plugin,
};
use serde::Deserialize;

use crate::http::{Endpoint, Secret};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_url")]
    url: String,
    #[serde(default = "default_timeout")]
    timeout_secs: u64,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    token_env: Option<String>,
}

fn default_url() -> String {
    "http://127.0.0.1:8055".to_owned()
}

fn default_timeout() -> u64 {
    10
}

/// The `challtestsrv` plugin instance.
pub struct Challtestsrv {
    endpoint: Endpoint,
    log: Logger,
    requests: AtomicU64,
    /// Values this process set and has not cleared, per name.
    presented: Mutex<BTreeMap<String, BTreeSet<String>>>,
}

impl std::fmt::Debug for Challtestsrv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Challtestsrv")
            .field("endpoint", &self.endpoint.to_string())
            .finish_non_exhaustive()
    }
}

impl Plugin for Challtestsrv {
    const NAME: &'static str = "challtestsrv";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn create(config: serde_json::Value, log: Logger) -> Result<Self, PluginError> {
        let config: Config = serde_json::from_value(config)
            .map_err(|e| PluginError::config(format!("[plugins.challtestsrv]: {e}")))?;
        let token = match (config.token, config.token_env) {
            (Some(_), Some(_)) => {
                return Err(PluginError::config(
                    "token and token_env: give one or the other",
                ));
            }
            (Some(t), None) => Some(Secret::new(t)),
            (None, Some(var)) => Some(Secret::new(std::env::var(&var).map_err(|_| {
                PluginError::config(format!("token_env = {var:?}: the variable is not set"))
            })?)),
            (None, None) => None,
        };
        if config.timeout_secs == 0 {
            return Err(PluginError::config("timeout_secs: must be at least 1"));
        }
        let endpoint =
            Endpoint::parse(&config.url, Duration::from_secs(config.timeout_secs), token)?;
        Ok(Challtestsrv {
            endpoint,
            log,
            requests: AtomicU64::new(0),
            presented: Mutex::new(BTreeMap::new()),
        })
    }

    fn present(&self, records: &[TxtRecord]) -> Result<(), PluginError> {
        // Held across the requests: a local test server, and a name's clear must not
        // overtake another thread's value for it.
        let mut presented = self
            .presented
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut set = 0;
        for r in records {
            let failed = |e: PluginError| e.with_records(std::slice::from_ref(r));
            let values = match presented.entry(r.fqdn.clone()) {
                Entry::Occupied(known) => known.into_mut(),
                Entry::Vacant(first) => {
                    self.post("/clear-txt", &serde_json::json!({"host": r.fqdn}))
                        .map_err(failed)?;
                    first.insert(BTreeSet::new())
                }
            };
            if values.contains(&r.value) {
                continue;
            }
            let body = serde_json::json!({"host": r.fqdn, "value": r.value});
            self.post("/set-txt", &body).map_err(failed)?;
            values.insert(r.value.clone());
            set += 1;
        }
        self.log.debug(&format!(
            "set {set} of {} TXT values through challtestsrv (the others were set already)",
            records.len()
        ));
        Ok(())
    }

    fn cleanup(&self, records: &[TxtRecord]) -> Result<(), PluginError> {
        let names: BTreeSet<&str> = records.iter().map(|r| r.fqdn.as_str()).collect();
        let mut presented = self
            .presented
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut first = None;
        for name in names {
            match self.post("/clear-txt", &serde_json::json!({"host": name})) {
                Ok(()) => {
                    presented.remove(name);
                }
                Err(e) => {
                    self.log.warn(&e.message);
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn check(&self) -> Result<Vec<CheckResult>, PluginError> {
        let what = format!("management API {}", self.endpoint);
        self.requests.fetch_add(1, Ordering::Relaxed);
        // challtestsrv has no read-only endpoint: any HTTP answer to GET / shows it listens
        // and that a token (if any) got through the proxy.
        Ok(vec![match self.endpoint.request("GET", "/", None) {
            Ok((401 | 403, _)) => {
                CheckResult::failed(what, "the token was rejected (HTTP 401/403)")
            }
            Ok((status, _)) => CheckResult::ok(what, format!("reachable (HTTP {status})")),
            Err(e) => CheckResult::failed(what, e.message),
        }])
    }

    fn metrics(&self) -> BTreeMap<String, u64> {
        BTreeMap::from([(
            "http_requests".to_owned(),
            self.requests.load(Ordering::Relaxed),
        )])
    }
}

impl Challtestsrv {
    fn post(&self, path: &str, body: &serde_json::Value) -> Result<(), PluginError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let (status, text) = self.endpoint.request("POST", path, Some(body))?;
        match status {
            200..=299 => Ok(()),
            401 | 403 => Err(PluginError::new(
                ErrorKind::Auth,
                format!(
                    "POST {}{path}: HTTP {status}: the token was rejected",
                    self.endpoint
                ),
            )),
            _ => Err(PluginError::new(
                ErrorKind::Provider,
                format!(
                    "POST {}{path}: HTTP {status}: {}",
                    self.endpoint,
                    text.chars().take(200).collect::<String>()
                ),
            )),
        }
    }
}

export_plugin!(Challtestsrv);
