//! `tpm:` key references.
//!
//! ```text
//! tpm:file=/var/lib/certfleet/acct.tpmkey?tcti=device:/dev/tpmrm0
//! tpm:handle=0x81000010?tcti=swtpm:host=127.0.0.1,port=2321
//! ```
//! `file=` names a key file (the TPM-wrapped private blob and the public area, usable only
//! on the TPM that made it); `handle=` a persistent object in the owner range. `tcti`
//! (optional) says how to reach the TPM; without it the backend's default is used.

use std::fmt;
use std::path::PathBuf;

use certfleet_keys::KeyRef;

use crate::TpmError;

/// First and last handle of the owner's persistent range (TPM 2.0 Part 2, §7.5).
pub const PERSISTENT_FIRST: u32 = 0x8100_0000;
pub const PERSISTENT_LAST: u32 = 0x817f_ffff;

/// Where a TPM key lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TpmKeyLocation {
    /// A key file written by `certfleet key generate --backend tpm --out PATH`.
    File(PathBuf),
    /// A persistent handle (`0x81000000`–`0x817fffff`).
    Handle(u32),
}

/// A parsed `tpm:` reference.
#[derive(Clone, PartialEq, Eq)]
pub struct TpmUri {
    pub location: TpmKeyLocation,
    pub tcti: Option<String>,
}

impl TpmUri {
    pub fn parse(input: &str) -> Result<TpmUri, TpmError> {
        let invalid = |detail: String| TpmError::InvalidUri {
            uri: input.to_owned(),
            detail,
        };
        let body = input
            .strip_prefix("tpm:")
            .ok_or_else(|| invalid("does not start with tpm:".to_owned()))?;
        let (path, query) = body.split_once('?').unwrap_or((body, ""));
        let location = match path.split_once('=') {
            Some(("file", p)) => {
                let p = pct_decode(p).map_err(&invalid)?;
                if !p.starts_with('/') {
                    return Err(invalid("file= must be an absolute path".to_owned()));
                }
                TpmKeyLocation::File(PathBuf::from(p))
            }
            Some(("handle", h)) => TpmKeyLocation::Handle(parse_handle(h).map_err(&invalid)?),
            _ => {
                return Err(invalid(
                    "expected tpm:file=/path/key.tpmkey or tpm:handle=0x81……".to_owned(),
                ));
            }
        };
        let mut tcti = None;
        for attr in query.split('&').filter(|a| !a.is_empty()) {
            match attr.split_once('=') {
                Some(("tcti", v)) if tcti.is_none() && !v.is_empty() => {
                    tcti = Some(pct_decode(v).map_err(&invalid)?);
                }
                Some(("tcti", _)) => return Err(invalid("tcti empty or given twice".to_owned())),
                _ => return Err(invalid(format!("unknown query attribute {attr:?}"))),
            }
        }
        Ok(TpmUri { location, tcti })
    }

    /// The reference to persist.
    pub fn key_ref(&self) -> KeyRef {
        // "tpm:" followed by a non-empty location: always a valid key reference.
        self.to_string()
            .parse()
            .expect("a rendered tpm: reference is a valid key reference")
    }
}

/// A persistent handle as `0x81000010` (or decimal).
pub fn parse_handle(text: &str) -> Result<u32, String> {
    let value = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => text.parse(),
    }
    .map_err(|_| format!("handle {text:?} is not a number"))?;
    if !(PERSISTENT_FIRST..=PERSISTENT_LAST).contains(&value) {
        return Err(format!(
            "handle {value:#010x} is outside the owner's persistent range \
             {PERSISTENT_FIRST:#010x}-{PERSISTENT_LAST:#010x}"
        ));
    }
    Ok(value)
}

impl fmt::Display for TpmUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            TpmKeyLocation::File(p) => write!(f, "tpm:file={}", pct_encode(&p.to_string_lossy()))?,
            TpmKeyLocation::Handle(h) => write!(f, "tpm:handle={h:#010x}")?,
        }
        if let Some(t) = &self.tcti {
            write!(f, "?tcti={}", pct_encode(t))?;
        }
        Ok(())
    }
}

impl fmt::Debug for TpmUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TpmUri").field(&self.to_string()).finish()
    }
}

fn pct_decode(raw: &str) -> Result<String, String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let b = raw
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent-encoding in {raw:?}"))?;
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{raw:?} is not UTF-8"))
}

/// Keeps paths and TCTI strings readable; encodes what would end an attribute.
fn pct_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/:,=@+".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests;
