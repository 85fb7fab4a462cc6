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

use certfleet_plugin_abi::{Logger, PluginError, export_plugin};
use certfleet_plugin_http::{ApiPlugin, ConfigTable, HeaderAuth, ProviderPlugin};
use serde::Deserialize;

/// The settings of this plugin beyond the API token and the HTTP settings
/// ([`ConfigTable`] takes those).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_base_url")]
    base_url: String,
    #[serde(default = "default_ttl")]
    ttl: u64,
}

fn default_base_url() -> String {
    "https://api.cloudflare.com/client/v4".to_owned()
}

fn default_ttl() -> u64 {
    120
}

/// The `cloudflare` plugin.
#[derive(Debug)]
pub struct Cloudflare;

impl ProviderPlugin for Cloudflare {
    const NAME: &'static str = "cloudflare";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    type Api = api::Api;

    fn create(mut table: ConfigTable, log: Logger) -> Result<api::Api, PluginError> {
        let http = table.http()?;
        let token = table.required_secret("api_token")?;
        let c: Config = table.rest()?;
        if c.ttl != 1 && !(30..=86_400).contains(&c.ttl) {
            return Err(PluginError::config(format!(
                "ttl = {}: must be 1 (automatic) or between 30 and 86400",
                c.ttl
            )));
        }
        let client = http.client("base_url", &c.base_url, log)?;
        Ok(api::Api::new(client, HeaderAuth::bearer(token), c.ttl, log))
    }
}

export_plugin!(ApiPlugin<Cloudflare>);

#[cfg(test)]
mod tests;
