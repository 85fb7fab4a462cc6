//! Secret settings given inline, by environment variable or by file: `token`, `token_env`,
//! `token_file` (one of them), with errors that name the setting and never the value.

use std::path::Path;

use certfleet_plugin_abi::PluginError;

use crate::Secret;

/// Resolves the secret setting `name` from its three forms (`name`, `name_env`,
/// `name_file`). `Ok(None)` when none is given; an error when more than one is, when the
/// variable is unset or empty, or when the file cannot be read or is empty.
pub fn secret_setting(
    name: &str,
    inline: Option<String>,
    env: Option<&str>,
    file: Option<&Path>,
) -> Result<Option<Secret>, PluginError> {
    let given =
        usize::from(inline.is_some()) + usize::from(env.is_some()) + usize::from(file.is_some());
    if given > 1 {
        return Err(PluginError::config(format!(
            "{name}, {name}_env, {name}_file: give only one"
        )));
    }
    if let Some(v) = inline {
        if v.trim().is_empty() {
            return Err(PluginError::config(format!("{name}: is empty")));
        }
        return Ok(Some(Secret::new(v.trim())));
    }
    if let Some(var) = env {
        return match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(Some(Secret::new(v.trim()))),
            _ => Err(PluginError::config(format!(
                "{name}_env = {var:?}: the variable is not set or empty"
            ))),
        };
    }
    if let Some(path) = file {
        return read_secret_file(path)
            .map(Some)
            .map_err(|why| PluginError::config(format!("{name}_file = {path:?}: {why}")));
    }
    Ok(None)
}

/// The trimmed content of a secret file; the error says why (not what the file holds).
pub fn read_secret_file(path: &Path) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let text = text.trim();
    if text.is_empty() {
        return Err("the file is empty".to_owned());
    }
    Ok(Secret::new(text))
}
