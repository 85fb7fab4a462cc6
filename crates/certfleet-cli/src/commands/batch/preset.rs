//! Which rate-limit preset a batch runs under: `--rate-limits`, else `[batch] rate_limits`,
//! else (`auto`, the default) the one that follows the ACME directory URL — Let's Encrypt's
//! production and staging presets only for their own directories, `none` (reactive pauses
//! after a 429/503 only) for every other CA.

use anyhow::{Context as _, Result};
use certfleet_batch::{Limits, Preset};

/// Let's Encrypt's production directory.
pub const LETSENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory.
pub const LETSENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// The preset a run uses and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chosen {
    pub preset: Preset,
    /// As the user writes it: `letsencrypt`, `letsencrypt-staging`, `none`.
    pub name: &'static str,
    /// `--rate-limits`, `[batch] rate_limits`, or `the directory URL`.
    pub source: &'static str,
}

pub fn preset_name(p: Preset) -> &'static str {
    match p {
        Preset::LetsEncrypt => "letsencrypt",
        Preset::LetsEncryptStaging => "letsencrypt-staging",
        Preset::None => "none",
    }
}

/// The preset for `directory` when nothing names one.
pub fn for_directory(directory: &str) -> Preset {
    let d = directory.trim().trim_end_matches('/').to_ascii_lowercase();
    if d == LETSENCRYPT {
        Preset::LetsEncrypt
    } else if d == LETSENCRYPT_STAGING {
        Preset::LetsEncryptStaging
    } else {
        Preset::None
    }
}

/// Flag first, then the configured value (`auto`: by the directory).
pub fn choose(flag: Option<&str>, configured: &str, directory: &str) -> Result<Chosen> {
    let (value, source) = match flag {
        Some(f) => (f, "--rate-limits"),
        None => (configured, "[batch] rate_limits"),
    };
    let preset = if value.trim().eq_ignore_ascii_case("auto") {
        return Ok(Chosen {
            preset: for_directory(directory),
            name: preset_name(for_directory(directory)),
            source: "the directory URL",
        });
    } else {
        value.parse::<Preset>().with_context(|| {
            format!("{source}: expected auto, letsencrypt, letsencrypt-staging or none")
        })?
    };
    Ok(Chosen {
        preset,
        name: preset_name(preset),
        source,
    })
}

/// Logs the choice; a Let's Encrypt preset for another CA gets a hint how to change it.
pub fn announce(chosen: &Chosen, limits: &Limits, directory: &str) {
    tracing::info!(
        preset = chosen.name,
        source = chosen.source,
        "rate-limit preset: {} (from {})",
        chosen.name,
        chosen.source
    );
    tracing::debug!(?limits, "rate limits in force");
    if chosen.preset != Preset::None && for_directory(directory) == Preset::None {
        tracing::info!(
            "the {} preset paces orders for Let's Encrypt, but the directory is {directory}: \
             use --rate-limits none (or set [batch] rate_limits / [batch.limits] for this CA) \
             if its limits differ",
            chosen.name
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preset_follows_the_directory_unless_named() {
        let pebble = "https://127.0.0.1:14000/dir";
        let c = choose(None, "auto", LETSENCRYPT).expect("auto");
        assert_eq!(
            (c.preset, c.source),
            (Preset::LetsEncrypt, "the directory URL")
        );
        let c = choose(None, "AUTO", &format!("{LETSENCRYPT_STAGING}/")).expect("auto");
        assert_eq!(c.preset, Preset::LetsEncryptStaging);
        assert_eq!(
            choose(None, "auto", pebble).expect("auto").preset,
            Preset::None
        );
        let c = choose(Some("letsencrypt"), "none", pebble).expect("flag");
        assert_eq!((c.preset, c.source), (Preset::LetsEncrypt, "--rate-limits"));
        let c = choose(None, "letsencrypt-staging", pebble).expect("config");
        assert_eq!(c.name, "letsencrypt-staging");
        let err = choose(Some("lenient"), "auto", pebble).expect_err("unknown");
        assert!(format!("{err:#}").contains("lenient"), "{err:#}");
    }
}
