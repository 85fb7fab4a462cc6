//! RFC 7512 `pkcs11:` URIs, the subset a signing key needs.
//!
//! ```text
//! pkcs11:token=certfleet;object=acct;id=%01%02;type=private
//!       ?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/certfleet/pin
//! ```
//! Path attributes (RFC 7512 §2.3, all of them, so what `p11tool --detailed-url` prints
//! works as-is): `token` (required: slots are found by token label), `object` (label) and/or
//! `id` (percent-encoded bytes), `serial`, `manufacturer`, `model`, `type` (`private` only),
//! `slot-id`, `slot-description`, `slot-manufacturer`, `library-manufacturer`,
//! `library-description`, `library-version` (`M` or `M.m`). Text values are compared with
//! the token's fields trimmed of blanks and NULs. Query attributes: `module-path`
//! (required), `pin-source` (`file:/path` or the certfleet extension `env:NAME`),
//! `pin-value` (accepted, warned about, never written to files). `module-name` is refused
//! with a hint; `pin-value=***` (a reference whose PIN was removed when it was stored) is
//! refused with the way to give a PIN that can be stored.

use std::fmt;
use std::path::PathBuf;

use certfleet_keys::KeyRef;

use crate::Pkcs11Error;
use crate::pin::{Pin, PinSource};

/// A parsed `pkcs11:` key (or token) reference.
#[derive(Clone, PartialEq, Eq)]
pub struct Pkcs11Uri {
    pub token: String,
    pub object: Option<String>,
    pub id: Option<Vec<u8>>,
    pub serial: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub slot_id: Option<u64>,
    pub slot_description: Option<String>,
    pub slot_manufacturer: Option<String>,
    pub library_manufacturer: Option<String>,
    pub library_description: Option<String>,
    /// `(major, minor)`; `library-version=2` means `(2, 0)`.
    pub library_version: Option<(u8, u8)>,
    pub module_path: Option<PathBuf>,
    pub pin: Option<PinSource>,
}

/// What a redacted `pin-value` looks like in a stored reference.
pub(crate) const REDACTED_PIN: &str = "***";

impl Pkcs11Uri {
    /// A URI for `token` with nothing else set.
    pub fn for_token(token: &str) -> Pkcs11Uri {
        Pkcs11Uri {
            token: token.to_owned(),
            object: None,
            id: None,
            serial: None,
            manufacturer: None,
            model: None,
            slot_id: None,
            slot_description: None,
            slot_manufacturer: None,
            library_manufacturer: None,
            library_description: None,
            library_version: None,
            module_path: None,
            pin: None,
        }
    }

    /// Parses a `pkcs11:` URI; errors show the input with any `pin-value` redacted.
    pub fn parse(input: &str) -> Result<Pkcs11Uri, Pkcs11Error> {
        let shown = certfleet_keys::redact_pin_value(input).into_owned();
        let invalid = |detail: String| Pkcs11Error::InvalidUri {
            uri: shown.clone(),
            detail,
        };
        let body = input
            .strip_prefix("pkcs11:")
            .ok_or_else(|| invalid("does not start with pkcs11:".to_owned()))?;
        let (path, query) = body.split_once('?').unwrap_or((body, ""));
        let mut uri = Pkcs11Uri::for_token("");
        let mut token = None;
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (name, raw) = attr
                .split_once('=')
                .ok_or_else(|| invalid(format!("path attribute {attr:?} has no '='")))?;
            let bytes = pct_decode(raw).map_err(&invalid)?;
            let text = || {
                String::from_utf8(bytes.clone())
                    .map_err(|_| invalid(format!("{name} is not UTF-8")))
            };
            let slot = match name {
                "token" => &mut token,
                "object" => &mut uri.object,
                "serial" => &mut uri.serial,
                "manufacturer" => &mut uri.manufacturer,
                "model" => &mut uri.model,
                "id" => {
                    set_once(&mut uri.id, bytes.clone(), name).map_err(&invalid)?;
                    continue;
                }
                "type" => {
                    if text()? != "private" {
                        return Err(invalid(format!(
                            "type={}: only private keys sign; use type=private or leave it out",
                            text()?
                        )));
                    }
                    continue;
                }
                "slot-description" => &mut uri.slot_description,
                "slot-manufacturer" => &mut uri.slot_manufacturer,
                "library-manufacturer" => &mut uri.library_manufacturer,
                "library-description" => &mut uri.library_description,
                "slot-id" => {
                    let id = text()?.parse::<u64>().map_err(|_| {
                        invalid(format!(
                            "slot-id={:?} is not a decimal number",
                            text().unwrap_or_default()
                        ))
                    })?;
                    set_once(&mut uri.slot_id, id, name).map_err(&invalid)?;
                    continue;
                }
                "library-version" => {
                    let version = parse_version(&text()?).map_err(&invalid)?;
                    set_once(&mut uri.library_version, version, name).map_err(&invalid)?;
                    continue;
                }
                other => return Err(invalid(format!("unknown path attribute {other:?}"))),
            };
            set_once(slot, text()?, name).map_err(&invalid)?;
        }
        for attr in query.split('&').filter(|a| !a.is_empty()) {
            let (name, raw) = attr
                .split_once('=')
                .ok_or_else(|| invalid(format!("query attribute {attr:?} has no '='")))?;
            let value = String::from_utf8(pct_decode(raw).map_err(&invalid)?)
                .map_err(|_| invalid(format!("{name} is not UTF-8")))?;
            match name {
                "module-path" => {
                    if !value.starts_with('/') {
                        return Err(invalid("module-path must be an absolute path".to_owned()));
                    }
                    set_once(&mut uri.module_path, PathBuf::from(value), name).map_err(&invalid)?;
                }
                "pin-source" => {
                    let source = PinSource::parse(&value).map_err(&invalid)?;
                    set_once(&mut uri.pin, source, "pin-source/pin-value").map_err(&invalid)?;
                }
                "pin-value" => {
                    if value == REDACTED_PIN {
                        return Err(invalid(
                            "pin-value=*** is a PIN removed when the reference was stored \
                             (certfleet never writes a PIN to a file): give the PIN with \
                             pin-source=file:/path/to/pin or pin-source=env:VARIABLE"
                                .to_owned(),
                        ));
                    }
                    let source = PinSource::Value(Pin::new(value));
                    set_once(&mut uri.pin, source, "pin-source/pin-value").map_err(&invalid)?;
                }
                "module-name" => {
                    return Err(invalid(
                        "module-name is not supported; give the module file with \
                         module-path=/path/to/module.so"
                            .to_owned(),
                    ));
                }
                other => return Err(invalid(format!("unknown query attribute {other:?}"))),
            }
        }
        uri.token = token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| invalid("no token=LABEL (tokens are found by label)".to_owned()))?;
        Ok(uri)
    }

    /// The exact reference text, `pin-value` included (for persisting).
    pub fn to_uri_string(&self) -> String {
        self.render(false)
    }

    /// The reference to persist for this key.
    pub fn key_ref(&self) -> KeyRef {
        // Always "pkcs11:token=…": a lowercase scheme and a non-empty rest, which `KeyRef`
        // accepts.
        self.to_uri_string()
            .parse()
            .expect("a rendered pkcs11: URI is a valid key reference")
    }

    fn render(&self, redact: bool) -> String {
        let mut path = vec![format!(
            "token={}",
            pct_encode(self.token.as_bytes(), false)
        )];
        let slot_id = self.slot_id.map(|id| id.to_string());
        let version = self
            .library_version
            .map(|(major, minor)| format!("{major}.{minor}"));
        for (name, value) in [
            ("manufacturer", &self.manufacturer),
            ("model", &self.model),
            ("serial", &self.serial),
            ("slot-id", &slot_id),
            ("slot-description", &self.slot_description),
            ("slot-manufacturer", &self.slot_manufacturer),
            ("library-manufacturer", &self.library_manufacturer),
            ("library-description", &self.library_description),
            ("library-version", &version),
            ("object", &self.object),
        ] {
            if let Some(v) = value {
                path.push(format!("{name}={}", pct_encode(v.as_bytes(), false)));
            }
        }
        if let Some(id) = &self.id {
            let hex: String = id.iter().map(|b| format!("%{b:02x}")).collect();
            path.push(format!("id={hex}"));
        }
        if self.object.is_some() || self.id.is_some() {
            path.push("type=private".to_owned());
        }
        let mut query = Vec::new();
        if let Some(m) = &self.module_path {
            query.push(format!(
                "module-path={}",
                pct_encode(m.to_string_lossy().as_bytes(), true)
            ));
        }
        match &self.pin {
            Some(PinSource::File(p)) => query.push(format!(
                "pin-source=file:{}",
                pct_encode(p.to_string_lossy().as_bytes(), true)
            )),
            Some(PinSource::Env(n)) => query.push(format!("pin-source=env:{n}")),
            Some(PinSource::Value(pin)) => {
                use secrecy::ExposeSecret;
                let value = if redact {
                    "***".to_owned()
                } else {
                    pct_encode(pin.secret().expose_secret().as_bytes(), true)
                };
                query.push(format!("pin-value={value}"));
            }
            None => {}
        }
        let mut out = format!("pkcs11:{}", path.join(";"));
        if !query.is_empty() {
            out.push('?');
            out.push_str(&query.join("&"));
        }
        out
    }
}

/// `Display` is the reference with any `pin-value` shown as `***`.
impl fmt::Display for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(true))
    }
}

impl fmt::Debug for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Pkcs11Uri")
            .field(&self.render(true))
            .finish()
    }
}

/// RFC 7512 `library-version`: `M` or `M.m`, decimal.
fn parse_version(text: &str) -> Result<(u8, u8), String> {
    let bad = || format!("library-version={text:?}: expected MAJOR or MAJOR.MINOR");
    let (major, minor) = text.split_once('.').unwrap_or((text, "0"));
    Ok((
        major.parse().map_err(|_| bad())?,
        minor.parse().map_err(|_| bad())?,
    ))
}

fn set_once<T>(slot: &mut Option<T>, value: T, name: &str) -> Result<(), String> {
    if slot.is_some() {
        return Err(format!("{name} given twice"));
    }
    *slot = Some(value);
    Ok(())
}

fn pct_decode(raw: &str) -> Result<Vec<u8>, String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent-encoding in {raw:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Percent-encodes everything but RFC 3986 unreserved characters and a few that are safe
/// in the attribute position; `/` and `:` stay readable in query values (paths).
fn pct_encode(bytes: &[u8], query: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        let plain =
            b.is_ascii_alphanumeric() || b"-._~:@!$'()*+,".contains(&b) || (query && b == b'/');
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests;
