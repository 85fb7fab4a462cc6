//! Settings every HTTP plugin takes, checked the same way: `timeout_secs`, `max_attempts`,
//! `max_retry_secs`, and a credential sent in one header.

use std::time::Duration;

use certfleet_plugin_abi::PluginError;

use crate::{Auth, RetryPolicy, Secret};

pub fn default_timeout_secs() -> u64 {
    30
}

pub fn default_max_attempts() -> u32 {
    5
}

pub fn default_max_retry_secs() -> u64 {
    60
}

/// `timeout_secs` (per attempt), between 1 and 600.
pub fn timeout(timeout_secs: u64) -> Result<Duration, PluginError> {
    if !(1..=600).contains(&timeout_secs) {
        return Err(PluginError::config(format!(
            "timeout_secs = {timeout_secs}: must be between 1 and 600"
        )));
    }
    Ok(Duration::from_secs(timeout_secs))
}

/// The retry policy of `max_attempts` (1–20) and `max_retry_secs` (total time, 1–3600).
pub fn retry_policy(max_attempts: u32, max_retry_secs: u64) -> Result<RetryPolicy, PluginError> {
    if !(1..=20).contains(&max_attempts) {
        return Err(PluginError::config(format!(
            "max_attempts = {max_attempts}: must be between 1 and 20"
        )));
    }
    if !(1..=3600).contains(&max_retry_secs) {
        return Err(PluginError::config(format!(
            "max_retry_secs = {max_retry_secs}: must be between 1 and 3600"
        )));
    }
    Ok(RetryPolicy {
        max_attempts,
        max_elapsed: Duration::from_secs(max_retry_secs),
        ..RetryPolicy::default()
    })
}

/// A credential sent as one header: `Authorization: Bearer …` or `X-API-Key: …`.
#[derive(Debug)]
pub struct HeaderAuth {
    header: &'static str,
    prefix: &'static str,
    secret: Secret,
}

impl HeaderAuth {
    pub fn bearer(secret: Secret) -> HeaderAuth {
        HeaderAuth {
            header: "authorization",
            prefix: "Bearer ",
            secret,
        }
    }

    pub fn new(header: &'static str, secret: Secret) -> HeaderAuth {
        HeaderAuth {
            header,
            prefix: "",
            secret,
        }
    }
}

impl Auth for HeaderAuth {
    fn headers(
        &self,
        _: &str,
        _: &str,
        _: &[(String, String)],
        _: &[u8],
    ) -> Result<Vec<(String, String)>, PluginError> {
        Ok(vec![(
            self.header.to_owned(),
            format!("{}{}", self.prefix, self.secret.expose()),
        )])
    }

    fn secrets(&self) -> Vec<&Secret> {
        vec![&self.secret]
    }
}
