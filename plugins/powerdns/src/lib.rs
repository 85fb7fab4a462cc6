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

use certfleet_plugin_abi::{Logger, PluginError, export_plugin};
use certfleet_plugin_http::settings::in_range;
use certfleet_plugin_http::{ApiPlugin, ConfigTable, HeaderAuth, ProviderPlugin};
use serde::Deserialize;

/// The settings of this plugin beyond the API key and the HTTP settings ([`ConfigTable`]
/// takes those).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    url: String,
    #[serde(default = "default_server_id")]
    server_id: String,
    #[serde(default)]
    zone: Option<String>,
    #[serde(default = "default_ttl")]
    ttl: u32,
}

fn default_server_id() -> String {
    "localhost".to_owned()
}

fn default_ttl() -> u32 {
    60
}

/// The `powerdns` plugin.
#[derive(Debug)]
pub struct PowerDns;

impl ProviderPlugin for PowerDns {
    const NAME: &'static str = "powerdns";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    type Api = api::Api;

    fn create(mut table: ConfigTable, log: Logger) -> Result<api::Api, PluginError> {
        let http = table.http()?;
        let key = table.required_secret("api_key")?;
        let c: Config = table.rest()?;
        if c.server_id.is_empty() || c.server_id.contains(['/', '?', '#']) {
            return Err(PluginError::config(format!(
                "server_id = {:?}: expected a server id such as localhost",
                c.server_id
            )));
        }
        in_range("ttl", c.ttl, 1..=86_400)?;
        let client = http.client("url", &c.url, log)?;
        Ok(api::Api::new(
            client,
            HeaderAuth::new("x-api-key", key),
            c.server_id,
            c.zone,
            c.ttl,
            log,
        ))
    }
}

export_plugin!(ApiPlugin<PowerDns>);

#[cfg(test)]
mod tests;
