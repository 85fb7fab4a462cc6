//! `route53`: a certfleet DNS-01 plugin for the AWS Route 53 REST API, requests signed with
//! SigV4 (`sigv4.rs`, hand-written against the AWS specification and its published test
//! vectors, on hmac + sha2).
//!
//! Route 53 keeps a TXT RRset as one object, so each batch is a read-modify-write per
//! hosted zone: read the RRsets of the batch's names, then one `ChangeResourceRecordSets`
//! with a `DELETE` of each RRset exactly as read plus a `CREATE` of its new value list (so a
//! concurrent change makes Route 53 refuse the batch, and the zone is read again), values
//! added or removed one by one so other TXT values survive. The plugin returns once every
//! change is `INSYNC` (`GetChange`). Hosted zones are listed once per instance and matched by
//! longest suffix; private zones are ignored.
//!
//! Settings (`[plugins.route53]`): credentials (see `creds.rs`: settings, environment or the
//! shared credentials file), `region` (default `us-east-1`, Route 53's signing region),
//! `endpoint` (default `https://route53.amazonaws.com`; tests use an emulator),
//! `hosted_zone_id` (skip the zone lookup), `ttl` (default 60), `poll_interval_millis`
//! (default 2000), `insync_timeout_secs` (default 180), `timeout_secs`, `max_attempts`,
//! `max_retry_secs`.

mod api;
mod creds;
mod sigv4;
mod xml;

use std::path::PathBuf;
use std::time::Duration;

use certfleet_plugin_abi::{Logger, PluginError, export_plugin};
use certfleet_plugin_http::settings::in_range;
use certfleet_plugin_http::{ApiPlugin, ConfigTable, ProviderPlugin};
use serde::Deserialize;

use crate::api::{Settings, SigV4Auth};
use crate::creds::CredentialSettings;

/// The settings of this plugin beyond the HTTP settings ([`ConfigTable`] takes those).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    access_key_id: Option<String>,
    #[serde(default)]
    access_key_id_env: Option<String>,
    #[serde(default)]
    secret_access_key: Option<String>,
    #[serde(default)]
    secret_access_key_env: Option<String>,
    #[serde(default)]
    secret_access_key_file: Option<PathBuf>,
    #[serde(default)]
    session_token: Option<String>,
    #[serde(default)]
    session_token_env: Option<String>,
    #[serde(default)]
    credentials_file: Option<PathBuf>,
    #[serde(default)]
    profile: Option<String>,
    #[serde(default = "default_region")]
    region: String,
    #[serde(default = "default_endpoint")]
    endpoint: String,
    #[serde(default)]
    hosted_zone_id: Option<String>,
    #[serde(default = "default_ttl")]
    ttl: u32,
    #[serde(default = "default_poll_interval")]
    poll_interval_millis: u64,
    #[serde(default = "default_insync_timeout")]
    insync_timeout_secs: u64,
}

fn default_region() -> String {
    "us-east-1".to_owned()
}

fn default_endpoint() -> String {
    "https://route53.amazonaws.com".to_owned()
}

fn default_ttl() -> u32 {
    60
}

fn default_poll_interval() -> u64 {
    2000
}

fn default_insync_timeout() -> u64 {
    180
}

/// The `route53` plugin.
#[derive(Debug)]
pub struct Route53;

impl ProviderPlugin for Route53 {
    const NAME: &'static str = "route53";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    type Api = api::Api;

    fn create(mut table: ConfigTable, log: Logger) -> Result<api::Api, PluginError> {
        let http = table.http()?;
        let c: Config = table.rest()?;
        let (creds, source) = creds::resolve(
            CredentialSettings {
                access_key_id: c.access_key_id,
                access_key_id_env: c.access_key_id_env,
                secret_access_key: c.secret_access_key,
                secret_access_key_env: c.secret_access_key_env,
                secret_access_key_file: c.secret_access_key_file,
                session_token: c.session_token,
                session_token_env: c.session_token_env,
                credentials_file: c.credentials_file,
                profile: c.profile,
            },
            &|var| std::env::var(var).ok(),
        )?;
        if c.region.is_empty()
            || !c
                .region
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
        {
            return Err(PluginError::config(format!(
                "region = {:?}: expected a region such as us-east-1",
                c.region
            )));
        }
        if let Some(id) = &c.hosted_zone_id
            && (id.is_empty() || !id.chars().all(|ch| ch.is_ascii_alphanumeric()))
        {
            return Err(PluginError::config(format!(
                "hosted_zone_id = {id:?}: expected an id such as Z1D633PJN98FT9 (without /hostedzone/)"
            )));
        }
        in_range("ttl", c.ttl, 1..=172_800)?;
        in_range("poll_interval_millis", c.poll_interval_millis, 10..=60_000)?;
        in_range("insync_timeout_secs", c.insync_timeout_secs, 1..=3600)?;
        let client = http.client("endpoint", &c.endpoint, log)?;
        let host = endpoint_host(client.base());
        Ok(api::Api::new(
            client,
            SigV4Auth {
                creds,
                region: c.region,
                host,
            },
            Settings {
                hosted_zone_id: c.hosted_zone_id,
                ttl: c.ttl,
                poll_interval: Duration::from_millis(c.poll_interval_millis),
                insync_timeout: Duration::from_secs(c.insync_timeout_secs),
                credential_source: source,
            },
            log,
        ))
    }
}

/// `host[:port]` of a base URL, as the `Host` header carries it (the default port omitted).
fn endpoint_host(base: &str) -> String {
    let (scheme, rest) = base.split_once("://").unwrap_or(("https", base));
    let authority = rest.split('/').next().unwrap_or(rest);
    let default = if scheme == "http" { ":80" } else { ":443" };
    authority
        .strip_suffix(default)
        .unwrap_or(authority)
        .to_owned()
}

export_plugin!(ApiPlugin<Route53>);

#[cfg(test)]
mod tests;
