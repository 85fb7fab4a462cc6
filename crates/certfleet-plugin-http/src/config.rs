//! A plugin's `[plugins.NAME]` table read in parts, so that what every HTTP plugin takes is
//! read and checked once: the HTTP settings (`timeout_secs`, `max_attempts`,
//! `max_retry_secs`), secrets in their three forms, then the plugin's own settings from what
//! is left (a plugin's `deny_unknown_fields` still catches a misspelt key).

use std::path::PathBuf;
use std::time::Duration;

use certfleet_plugin_abi::{Logger, PluginError};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::settings::{retry_policy, timeout};
use crate::{ApiClient, RetryPolicy, Secret, secret_setting};

/// Defaults of the HTTP settings.
const TIMEOUT_SECS: u64 = 30;
const MAX_ATTEMPTS: u32 = 5;
const MAX_RETRY_SECS: u64 = 60;

/// The `[plugins.NAME]` table of one plugin, taken apart key by key.
#[derive(Debug)]
pub struct ConfigTable {
    plugin: &'static str,
    map: Map<String, Value>,
}

/// `timeout_secs` and the retry policy, checked.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

impl HttpSettings {
    /// The API client for the URL in the setting `url_setting`.
    pub fn client(
        self,
        url_setting: &str,
        url: &str,
        log: Logger,
    ) -> Result<ApiClient, PluginError> {
        ApiClient::new(url_setting, url, self.timeout, self.retry, log)
    }
}

impl ConfigTable {
    /// `config` as the host passes it: a JSON object (`null`: no settings).
    pub fn new(plugin: &'static str, config: Value) -> Result<ConfigTable, PluginError> {
        let map = match config {
            Value::Object(map) => map,
            Value::Null => Map::new(),
            _ => {
                return Err(PluginError::config(format!(
                    "[plugins.{plugin}]: expected a table of settings"
                )));
            }
        };
        Ok(ConfigTable { plugin, map })
    }

    /// `timeout_secs` (1–600, default 30), `max_attempts` (1–20, default 5) and
    /// `max_retry_secs` (1–3600, default 60).
    pub fn http(&mut self) -> Result<HttpSettings, PluginError> {
        let timeout_secs = self.take("timeout_secs")?.unwrap_or(TIMEOUT_SECS);
        let max_attempts = self.take("max_attempts")?.unwrap_or(MAX_ATTEMPTS);
        let max_retry_secs = self.take("max_retry_secs")?.unwrap_or(MAX_RETRY_SECS);
        Ok(HttpSettings {
            timeout: timeout(timeout_secs)?,
            retry: retry_policy(max_attempts, max_retry_secs)?,
        })
    }

    /// The secret `name`, given as `name`, `name_env` or `name_file` (exactly one).
    pub fn required_secret(&mut self, name: &str) -> Result<Secret, PluginError> {
        let inline = self.take_text(name)?;
        let env = self.take_text(&format!("{name}_env"))?;
        let file = self.take_text(&format!("{name}_file"))?.map(PathBuf::from);
        secret_setting(name, inline, env.as_deref(), file.as_deref())?.ok_or_else(|| {
            PluginError::config(format!(
                "{name}: missing (set {name}, {name}_env or {name}_file)"
            ))
        })
    }

    /// The plugin's own settings from the keys not taken yet.
    pub fn rest<T: DeserializeOwned>(self) -> Result<T, PluginError> {
        let plugin = self.plugin;
        serde_json::from_value(Value::Object(self.map))
            .map_err(|e| PluginError::config(format!("[plugins.{plugin}]: {e}")))
    }

    fn take<T: DeserializeOwned>(&mut self, key: &str) -> Result<Option<T>, PluginError> {
        let Some(value) = self.map.remove(key) else {
            return Ok(None);
        };
        serde_json::from_value(value)
            .map(Some)
            .map_err(|e| PluginError::config(format!("[plugins.{}]: {key}: {e}", self.plugin)))
    }

    /// A text setting; the error never quotes the value (it may be a secret).
    fn take_text(&mut self, key: &str) -> Result<Option<String>, PluginError> {
        match self.map.remove(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(PluginError::config(format!(
                "[plugins.{}]: {key}: expected a string",
                self.plugin
            ))),
        }
    }
}
