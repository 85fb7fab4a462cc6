//! Rejected PINs remembered across runs, so a wrong PIN file costs one login attempt in
//! total, not one per cron run (three runs would lock a token, or put a TPM into
//! dictionary-attack lockout).
//!
//! What is stored is a fingerprint, never the PIN: HMAC-SHA256 under a random key of this
//! state directory over the token's identity, the PIN source's description (file or
//! variable name) and the SHA-256 of the PIN. The fingerprint changes as soon as the PIN
//! source's content changes, so a corrected PIN file is tried again. The key and the list
//! are two 0600 files in a 0700 directory: without the key a fingerprint says nothing
//! about the PIN; whoever can read the key can also read the PIN file it protects.

use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use crate::pin::{Pin, PinSource};

const KEY_FILE: &str = "key";
const LIST_FILE: &str = "rejected";
/// Fingerprints kept: old ones go first (a token rarely sees more wrong PIN sources).
const MAX_ENTRIES: usize = 256;

/// Where rejected-PIN fingerprints are kept (a directory inside the state directory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinMemory {
    dir: PathBuf,
}

impl PinMemory {
    /// Fingerprints in `dir` (created 0700 on first use).
    pub fn new(dir: impl Into<PathBuf>) -> PinMemory {
        PinMemory { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether `pin`, read from `source`, was rejected by the token `token_id` before.
    /// Nothing is written: a directory where no PIN was ever rejected stays empty.
    pub(crate) fn is_rejected(
        &self,
        token_id: &str,
        source: &PinSource,
        pin: &Pin,
    ) -> Result<bool, String> {
        let Some(key) = self.existing_key()? else {
            return Ok(false);
        };
        let fingerprint = fingerprint(&key, token_id, source, pin)?;
        Ok(self.entries()?.contains(&fingerprint))
    }

    /// Remembers that the token `token_id` rejected `pin`, read from `source`.
    pub(crate) fn remember(
        &self,
        token_id: &str,
        source: &PinSource,
        pin: &Pin,
    ) -> Result<(), String> {
        let key = match self.existing_key()? {
            Some(key) => key,
            None => self.new_key()?,
        };
        let fingerprint = fingerprint(&key, token_id, source, pin)?;
        self.append(&fingerprint)
    }

    fn append(&self, fingerprint: &str) -> Result<(), String> {
        let mut entries = self.entries()?;
        if entries.iter().any(|e| e == fingerprint) {
            return Ok(());
        }
        entries.push(fingerprint.to_owned());
        let skip = entries.len().saturating_sub(MAX_ENTRIES);
        let mut text = entries[skip..].join("\n");
        text.push('\n');
        self.ensure_dir()?;
        let path = self.dir.join(LIST_FILE);
        certfleet_keys::fs::write_atomic(&path, text.as_bytes(), 0o600)
            .map_err(|e| format!("writing {}: {e}", path.display()))
    }

    fn entries(&self) -> Result<Vec<String>, String> {
        let path = self.dir.join(LIST_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(format!("reading {}: {e}", path.display())),
        }
    }

    fn ensure_dir(&self) -> Result<(), String> {
        certfleet_keys::fs::create_dir_all(&self.dir, 0o700)
            .map_err(|e| format!("creating {}: {e}", self.dir.display()))
    }

    /// The directory's HMAC key, if one was made.
    fn existing_key(&self) -> Result<Option<Vec<u8>>, String> {
        let path = self.dir.join(KEY_FILE);
        match std::fs::read(&path) {
            Ok(key) if key.len() == 32 => Ok(Some(key)),
            Ok(key) => Err(format!(
                "{}: {} bytes, expected a 32-byte key (remove the file to make a new one)",
                path.display(),
                key.len()
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("reading {}: {e}", path.display())),
        }
    }

    /// Makes the directory's HMAC key (on the first rejected PIN).
    fn new_key(&self) -> Result<Vec<u8>, String> {
        let path = self.dir.join(KEY_FILE);
        self.ensure_dir()?;
        let mut key = vec![0u8; 32];
        OsRng.fill_bytes(&mut key);
        match certfleet_keys::fs::write_atomic_new(&path, &key, 0o600) {
            Ok(()) => Ok(key),
            // Another process made it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))
            }
            Err(e) => Err(format!("writing {}: {e}", path.display())),
        }
    }
}

/// HMAC-SHA256 under the directory's key over the token, the source's description and the
/// PIN's digest.
fn fingerprint(
    key: &[u8],
    token_id: &str,
    source: &PinSource,
    pin: &Pin,
) -> Result<String, String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|e| e.to_string())?;
    mac.update(token_id.as_bytes());
    mac.update(&[0]);
    mac.update(source.describe().as_bytes());
    mac.update(&[0]);
    mac.update(&Sha256::digest(pin.secret().expose_secret().as_bytes()));
    Ok(hex(&mac.finalize().into_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_rejected_pin_is_remembered_until_the_source_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let memory = PinMemory::new(dir.path().join("pins"));
        let pin_file = dir.path().join("pin");
        std::fs::write(&pin_file, "0000\n").expect("write");
        let source = PinSource::File(pin_file.clone());
        let wrong = source.read().expect("read");
        assert!(!memory.is_rejected("tok", &source, &wrong).expect("read"));
        assert!(
            !memory.dir().exists(),
            "nothing written before a PIN is rejected"
        );
        memory.remember("tok", &source, &wrong).expect("remember");
        memory
            .remember("tok", &source, &wrong)
            .expect("remember twice");
        // A new process (a new PinMemory on the same directory) still knows it.
        let again = PinMemory::new(dir.path().join("pins"));
        assert!(again.is_rejected("tok", &source, &wrong).expect("read"));
        assert_eq!(again.entries().expect("entries").len(), 1);
        // Another token, or a corrected file, is tried.
        assert!(!again.is_rejected("other", &source, &wrong).expect("read"));
        std::fs::write(&pin_file, "1234\n").expect("write");
        let fixed = source.read().expect("read");
        assert!(!again.is_rejected("tok", &source, &fixed).expect("read"));
        // Nothing in the directory holds the PIN or its plain digest; both files are 0600.
        let digest = hex(&Sha256::digest(b"0000"));
        for name in [KEY_FILE, LIST_FILE] {
            let path = dir.path().join("pins").join(name);
            let bytes = std::fs::read(&path).expect("read");
            assert!(!bytes.windows(4).any(|w| w == b"0000"), "{name}");
            assert!(!String::from_utf8_lossy(&bytes).contains(&digest), "{name}");
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
    }
}
