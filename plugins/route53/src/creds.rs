//! Where the static AWS keys come from, first match wins: the plugin's settings
//! (`access_key_id` + `secret_access_key` | `secret_access_key_env` | `secret_access_key_file`),
//! the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), the
//! shared credentials file (`credentials_file`, else `$AWS_SHARED_CREDENTIALS_FILE`, else
//! `~/.aws/credentials`; profile `profile`, else `$AWS_PROFILE`, else `default`).

use std::path::{Path, PathBuf};

use certfleet_plugin_abi::PluginError;
use certfleet_plugin_http::{Secret, secret_setting};

use crate::sigv4::Credentials;

/// The credential settings of `[plugins.route53]`.
#[derive(Debug, Default)]
pub struct CredentialSettings {
    pub access_key_id: Option<String>,
    pub access_key_id_env: Option<String>,
    pub secret_access_key: Option<String>,
    pub secret_access_key_env: Option<String>,
    pub secret_access_key_file: Option<PathBuf>,
    pub session_token: Option<String>,
    pub session_token_env: Option<String>,
    pub credentials_file: Option<PathBuf>,
    pub profile: Option<String>,
}

/// The credentials and where they came from (for `check`; never the values).
pub fn resolve(
    s: CredentialSettings,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Credentials, String), PluginError> {
    let key_id = match (s.access_key_id, s.access_key_id_env.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(PluginError::config(
                "access_key_id, access_key_id_env: give only one",
            ));
        }
        (Some(k), None) => Some(k),
        (None, Some(var)) => Some(env(var).filter(|v| !v.is_empty()).ok_or_else(|| {
            PluginError::config(format!(
                "access_key_id_env = {var:?}: the variable is not set or empty"
            ))
        })?),
        (None, None) => None,
    };
    let secret = secret_setting(
        "secret_access_key",
        s.secret_access_key,
        s.secret_access_key_env.as_deref(),
        s.secret_access_key_file.as_deref(),
    )?;
    let token = secret_setting(
        "session_token",
        s.session_token,
        s.session_token_env.as_deref(),
        None,
    )?;
    match (key_id, secret) {
        (Some(id), Some(secret)) => {
            return Ok((creds(id, secret, token)?, "the plugin settings".to_owned()));
        }
        (Some(_), None) => {
            return Err(PluginError::config(
                "access_key_id is set but secret_access_key (or _env, _file) is not",
            ));
        }
        (None, Some(_)) => {
            return Err(PluginError::config(
                "secret_access_key is set but access_key_id (or access_key_id_env) is not",
            ));
        }
        (None, None) => {}
    }
    if let (Some(id), Some(secret)) = (
        env("AWS_ACCESS_KEY_ID").filter(|v| !v.is_empty()),
        env("AWS_SECRET_ACCESS_KEY").filter(|v| !v.is_empty()),
    ) {
        let token = env("AWS_SESSION_TOKEN")
            .filter(|v| !v.is_empty())
            .map(Secret::new);
        return Ok((
            creds(id, Secret::new(secret), token)?,
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY".to_owned(),
        ));
    }
    let file = s
        .credentials_file
        .or_else(|| env("AWS_SHARED_CREDENTIALS_FILE").map(PathBuf::from))
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(".aws/credentials")));
    let profile = s
        .profile
        .or_else(|| env("AWS_PROFILE"))
        .unwrap_or_else(|| "default".to_owned());
    let Some(file) = file else {
        return Err(no_credentials("no credentials file (HOME is not set)"));
    };
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) => {
            return Err(no_credentials(&format!(
                "cannot read {}: {e}",
                file.display()
            )));
        }
    };
    let (id, secret, token) = profile_keys(&text, &profile).ok_or_else(|| {
        no_credentials(&format!(
            "{} has no profile [{profile}] with aws_access_key_id and aws_secret_access_key",
            file.display()
        ))
    })?;
    Ok((
        creds(id, secret, token)?,
        format!("{} [{profile}]", file.display()),
    ))
}

fn no_credentials(why: &str) -> PluginError {
    PluginError::config(format!(
        "no AWS credentials: set access_key_id and secret_access_key (or secret_access_key_env, \
         secret_access_key_file), or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a shared \
         credentials file; {why}"
    ))
}

fn creds(id: String, secret: Secret, token: Option<Secret>) -> Result<Credentials, PluginError> {
    let id = id.trim().to_owned();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(PluginError::config(
            "access_key_id: expected letters and digits only (such as AKIAIOSFODNN7EXAMPLE)",
        ));
    }
    Ok(Credentials {
        access_key_id: id,
        secret_access_key: secret,
        session_token: token,
    })
}

/// `aws_access_key_id`, `aws_secret_access_key` and `aws_session_token` of `[profile]` in
/// an INI-style shared credentials file.
pub fn profile_keys(text: &str, profile: &str) -> Option<(String, Secret, Option<Secret>)> {
    let mut in_profile = false;
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_profile = name.trim() == profile;
            continue;
        }
        if !in_profile {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().to_owned();
            match k.trim().to_ascii_lowercase().as_str() {
                "aws_access_key_id" => id = Some(v),
                "aws_secret_access_key" => secret = Some(Secret::new(v)),
                "aws_session_token" => token = Some(Secret::new(v)),
                _ => {}
            }
        }
    }
    Some((id?, secret?, token))
}
