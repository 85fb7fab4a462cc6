//! `cloudflare`: a certfleet DNS-01 plugin for the Cloudflare v4 API.
//!
//! Cloudflare keeps every TXT value as its own record with its own id, so values are added
//! and removed one by one and other values on the same name are never touched. Per zone and
//! batch: one listing of the zone's TXT records (paginated) and one
//! `POST /zones/{id}/dns_records/batch` per 100 changes (Cloudflare applies a batch all or
//! nothing). Zones are listed once per instance and matched by longest suffix.
//!
//! Settings (`[plugins.cloudflare]`): `api_token` | `api_token_env` | `api_token_file`
//! (an API token with Zone:Read and DNS:Edit, sent as `Authorization: Bearer`, never
//! logged), `base_url` (default `https://api.cloudflare.com/client/v4`; tests point it at a
//! local fake), `ttl` (default 120; 1 means automatic), `timeout_secs`, `max_attempts`,
//! `max_retry_secs`.

mod api;

use std::collections::BTreeMap;
use std::path::PathBuf;

use certfleet_plugin_abi::{CheckResult, Logger, Plugin, PluginError, TxtRecord, export_plugin};
use certfleet_plugin_http::settings::{
    default_max_attempts, default_max_retry_secs, default_timeout_secs, retry_policy, timeout,
};
use certfleet_plugin_http::{ApiClient, HeaderAuth, secret_setting};
use serde::Deserialize;

use crate::api::Op;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    api_token: Option<String>,
    #[serde(default)]
    api_token_env: Option<String>,
    #[serde(default)]
    api_token_file: Option<PathBuf>,
    #[serde(default = "default_base_url")]
    base_url: String,
    #[serde(default = "default_ttl")]
    ttl: u64,
    #[serde(default = "default_timeout_secs")]
    timeout_secs: u64,
    #[serde(default = "default_max_attempts")]
    max_attempts: u32,
    #[serde(default = "default_max_retry_secs")]
    max_retry_secs: u64,
}

fn default_base_url() -> String {
    "https://api.cloudflare.com/client/v4".to_owned()
}

fn default_ttl() -> u64 {
    120
}

/// The `cloudflare` plugin instance.
#[derive(Debug)]
pub struct Cloudflare {
    api: api::Api,
}

impl Plugin for Cloudflare {
    const NAME: &'static str = "cloudflare";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn create(config: serde_json::Value, log: Logger) -> Result<Self, PluginError> {
        let c: Config = serde_json::from_value(config)
            .map_err(|e| PluginError::config(format!("[plugins.cloudflare]: {e}")))?;
        let token = secret_setting(
            "api_token",
            c.api_token,
            c.api_token_env.as_deref(),
            c.api_token_file.as_deref(),
        )?
        .ok_or_else(|| {
            PluginError::config(
                "api_token: missing (set api_token, api_token_env or api_token_file)",
            )
        })?;
        if c.ttl != 1 && !(30..=86_400).contains(&c.ttl) {
            return Err(PluginError::config(format!(
                "ttl = {}: must be 1 (automatic) or between 30 and 86400",
                c.ttl
            )));
        }
        let client = ApiClient::new(
            "base_url",
            &c.base_url,
            timeout(c.timeout_secs)?,
            retry_policy(c.max_attempts, c.max_retry_secs)?,
            log,
        )?;
        Ok(Cloudflare {
            api: api::Api::new(client, HeaderAuth::bearer(token), c.ttl, log),
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
            .metrics(&[("change_requests", &self.api.batches)])
    }
}

export_plugin!(Cloudflare);

#[cfg(test)]
mod tests;
