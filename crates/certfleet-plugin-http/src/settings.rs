//! Settings every HTTP plugin takes, checked the same way: `timeout_secs`, `max_attempts`,
//! `max_retry_secs` (read by [`crate::ConfigTable`]), and a credential sent in one header.

use std::fmt::Display;
use std::ops::RangeInclusive;
use std::time::Duration;

use certfleet_plugin_abi::PluginError;

use crate::{Auth, RetryPolicy, Secret};

/// A numeric setting inside `range`, else a configuration error naming it and the range.
pub fn in_range<T>(name: &str, value: T, range: RangeInclusive<T>) -> Result<T, PluginError>
where
    T: PartialOrd + Display + Copy,
{
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(PluginError::config(format!(
            "{name} = {value}: must be between {} and {}",
            range.start(),
            range.end()
        )))
    }
}

/// `timeout_secs` (per attempt), between 1 and 600.
pub fn timeout(timeout_secs: u64) -> Result<Duration, PluginError> {
    in_range("timeout_secs", timeout_secs, 1..=600).map(Duration::from_secs)
}

/// The retry policy of `max_attempts` (1–20) and `max_retry_secs` (total time, 1–3600).
pub fn retry_policy(max_attempts: u32, max_retry_secs: u64) -> Result<RetryPolicy, PluginError> {
    in_range("max_attempts", max_attempts, 1..=20)?;
    in_range("max_retry_secs", max_retry_secs, 1..=3600)?;
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
