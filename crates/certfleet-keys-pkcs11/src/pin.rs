//! PINs and where they come from. A [`Pin`] never shows its value in `Debug` or `Display`;
//! a [`PinSource`] shows where the PIN is read from, never a literal PIN.

use std::fmt;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// Longest PIN file read; anything larger is not a PIN.
const MAX_PIN_FILE_BYTES: u64 = 4096;

/// A token PIN, wiped from memory when dropped.
#[derive(Clone)]
pub struct Pin(SecretString);

impl Pin {
    pub fn new(value: String) -> Pin {
        Pin(SecretString::from(value))
    }

    pub(crate) fn secret(&self) -> &SecretString {
        &self.0
    }

    /// A digest to remember a rejected PIN by without keeping the PIN itself.
    pub(crate) fn fingerprint(&self) -> [u8; 32] {
        Sha256::digest(self.0.expose_secret().as_bytes()).into()
    }
}

impl PartialEq for Pin {
    fn eq(&self, other: &Pin) -> bool {
        self.fingerprint() == other.fingerprint()
    }
}

impl Eq for Pin {}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(***)")
    }
}

/// Where a PIN comes from: RFC 7512 `pin-source` (a file), `pin-source=env:NAME` (a
/// certfleet extension) or a literal `pin-value`.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PinSource {
    /// `pin-source=file:/path` (or an absolute path): the first line of the file.
    File(PathBuf),
    /// `pin-source=env:NAME`: the value of an environment variable.
    Env(String),
    /// `pin-value=…` in the URI itself: works, but puts the PIN wherever the reference is
    /// stored (the state directory); a warning is logged on use.
    Value(Pin),
}

impl PinSource {
    /// Parses a `pin-source` value: `file:/path`, `/path` or `env:NAME`.
    pub fn parse(value: &str) -> Result<PinSource, String> {
        if let Some(name) = value.strip_prefix("env:") {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!("env:{name} is not an environment variable name"));
            }
            return Ok(PinSource::Env(name.to_owned()));
        }
        let path = value
            .strip_prefix("file://")
            .or_else(|| value.strip_prefix("file:"))
            .unwrap_or(value);
        if path.starts_with('/') {
            Ok(PinSource::File(PathBuf::from(path)))
        } else {
            Err(format!(
                "pin-source {value:?}: expected file:/absolute/path or env:VARIABLE"
            ))
        }
    }

    /// What to show people: the file or variable, never a literal PIN.
    pub fn describe(&self) -> String {
        match self {
            PinSource::File(p) => format!("file {}", p.display()),
            PinSource::Env(n) => format!("environment variable {n}"),
            PinSource::Value(_) => "pin-value".to_owned(),
        }
    }

    /// Reads the PIN (blocking: may read a file). Trailing CR/LF is removed.
    pub fn read(&self) -> Result<Pin, String> {
        let value = match self {
            PinSource::File(path) => {
                use std::io::Read;
                let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
                let mut text = String::new();
                file.take(MAX_PIN_FILE_BYTES + 1)
                    .read_to_string(&mut text)
                    .map_err(|e| e.to_string())?;
                if text.len() as u64 > MAX_PIN_FILE_BYTES {
                    return Err("file is too large to hold a PIN".to_owned());
                }
                let pin = text.lines().next().unwrap_or("").to_owned();
                // The buffer held the PIN too: wipe it through a SecretString.
                drop(SecretString::from(text));
                pin
            }
            PinSource::Env(name) => std::env::var(name).map_err(|e| e.to_string())?,
            PinSource::Value(pin) => return Ok(pin.clone()),
        };
        let value = value.trim_end_matches(['\r', '\n']).to_owned();
        if value.is_empty() {
            return Err("the PIN is empty".to_owned());
        }
        Ok(Pin::new(value))
    }
}

impl fmt::Debug for PinSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinSource::File(p) => f.debug_tuple("File").field(p).finish(),
            PinSource::Env(n) => f.debug_tuple("Env").field(n).finish(),
            PinSource::Value(_) => f.write_str("Value(***)"),
        }
    }
}

#[cfg(test)]
mod tests;
