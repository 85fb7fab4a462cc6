//! `powerdns`: a certfleet DNS-01 plugin for the PowerDNS Authoritative HTTP API.
//!
//! PowerDNS stores a TXT RRset as one object and `PATCH …/zones/{zone}` replaces a whole
//! RRset, so each batch is a read-modify-write per zone: one `GET` of the zone, one `PATCH`
//! carrying every changed RRset of it, values added or removed one by one so that other TXT
//! values on the same name survive. Writes of one instance are serialised (calls may run
//! concurrently) so two batches never overwrite each other's read.
//!
//! Settings (`[plugins.powerdns]`): `url` (the API's web server, e.g.
//! `http://127.0.0.1:8081`), `api_key` | `api_key_env` | `api_key_file` (sent as
//! `X-API-Key`, never logged), `server_id` (default `localhost`), `zone` (default: found by
//! longest suffix among the server's zones), `ttl` (default 60), `timeout_secs`,
//! `max_attempts`, `max_retry_secs`.

mod api;

use std::collections::BTreeMap;
use std::path::PathBuf;

use certfleet_plugin_abi::{CheckResult, Logger, Plugin, PluginError, TxtRecord, export_plugin};
use certfleet_plugin_http::settings::{
    default_max_attempts, default_max_retry_secs, default_timeout_secs, in_range, retry_policy,
    timeout,
};
use certfleet_plugin_http::{ApiClient, HeaderAuth, secret_setting};
use serde::Deserialize;

use crate::api::Op;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    url: String,
    #[serde(default)]
    api_key: Option<String>,
    #[serde(default)]
    api_key_env: Option<String>,
    #[serde(default)]
    api_key_file: Option<PathBuf>,
    #[serde(default = "default_server_id")]
    server_id: String,
    #[serde(default)]
    zone: Option<String>,
    #[serde(default = "default_ttl")]
    ttl: u32,
    #[serde(default = "default_timeout_secs")]
    timeout_secs: u64,
    #[serde(default = "default_max_attempts")]
    max_attempts: u32,
    #[serde(default = "default_max_retry_secs")]
    max_retry_secs: u64,
}

fn default_server_id() -> String {
    "localhost".to_owned()
}

fn default_ttl() -> u32 {
    60
}

/// The `powerdns` plugin instance.
#[derive(Debug)]
pub struct PowerDns {
    api: api::Api,
}

impl Plugin for PowerDns {
    const NAME: &'static str = "powerdns";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn create(config: serde_json::Value, log: Logger) -> Result<Self, PluginError> {
        let c: Config = serde_json::from_value(config)
            .map_err(|e| PluginError::config(format!("[plugins.powerdns]: {e}")))?;
        let key = secret_setting(
            "api_key",
            c.api_key,
            c.api_key_env.as_deref(),
            c.api_key_file.as_deref(),
        )?
        .ok_or_else(|| {
            PluginError::config("api_key: missing (set api_key, api_key_env or api_key_file)")
        })?;
        if c.server_id.is_empty() || c.server_id.contains(['/', '?', '#']) {
            return Err(PluginError::config(format!(
                "server_id = {:?}: expected a server id such as localhost",
                c.server_id
            )));
        }
        in_range("ttl", c.ttl, 1..=86_400)?;
        let client = ApiClient::new(
            "url",
            &c.url,
            timeout(c.timeout_secs)?,
            retry_policy(c.max_attempts, c.max_retry_secs)?,
            log,
        )?;
        Ok(PowerDns {
            api: api::Api::new(
                client,
                HeaderAuth::new("x-api-key", key),
                c.server_id,
                c.zone,
                c.ttl,
                log,
            ),
        })
    }

    fn present(&self, records: &[TxtRecord]) -> Result<(), PluginError> {
        self.api.change(records, Op::Add)
    }

    fn cleanup(&self, records: &[TxtRecord]) -> Result<(), PluginError> {
        self.api.change(records, Op::Remove)
    }

    fn check(&self) -> Result<Vec<CheckResult>, PluginError> {
        Ok(self.api.check())
    }

    fn metrics(&self) -> BTreeMap<String, u64> {
        self.api
            .client
            .counters
            .metrics(&[("change_requests", &self.api.patches)])
    }
}

export_plugin!(PowerDns);

#[cfg(test)]
mod tests;
