//! What certfleet keeps in the state directory: the account per CA and the renewal
//! inventory. Only references to keys are stored, never key material. Every write is atomic.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use certfleet_keys::KeyRef;
use certfleet_keys::fs::write_atomic;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

/// `accounts/<slug>/account.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountRecord {
    pub directory: String,
    pub url: String,
    pub key_ref: KeyRef,
    #[serde(default)]
    pub contact: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Set when the account was deactivated through certfleet.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub deactivated_at: Option<OffsetDateTime>,
}

/// `inventory/<first name>.json`: what `renew` needs to issue the same certificate again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InventoryEntry {
    pub names: Vec<String>,
    pub out_dir: PathBuf,
    pub key_ref: KeyRef,
    /// `privkey.pem` in `out_dir` is the key (certfleet generated it).
    pub key_in_out_dir: bool,
    pub challenge: String,
    #[serde(default)]
    pub http_listen: Option<String>,
    #[serde(default)]
    pub webroot: Option<PathBuf>,
    /// The DNS provider plugin of a dns-01 certificate (`renew` reuses it).
    #[serde(default)]
    pub dns_plugin: Option<String>,
    #[serde(default)]
    pub profile: Option<String>,
    #[serde(default)]
    pub preferred_chain: Option<String>,
    pub directory: String,
    /// Shell command run after each renewal (`--deploy-hook`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_hook: Option<String>,
    /// Keep the certificate key on renewal (`--reuse-key`); default: a new key each time.
    #[serde(default)]
    pub reuse_key: bool,
    /// Set when certfleet revoked the current certificate: renewal is then due at once
    /// (and, after keyCompromise, never with the same key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Revocation>,
}

/// A revocation certfleet made, recorded in the inventory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revocation {
    pub serial: String,
    /// The RFC 5280 reason name (`keyCompromise`, `unspecified`, …).
    pub reason: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

impl Revocation {
    pub fn key_compromised(&self) -> bool {
        self.reason == "keyCompromise"
    }
}

impl StateDir {
    pub fn new(root: PathBuf) -> StateDir {
        StateDir { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn account_path(&self, directory: &str) -> PathBuf {
        self.root
            .join("accounts")
            .join(directory_slug(directory))
            .join("account.json")
    }

    pub fn default_cert_dir(&self, first_name: &str) -> PathBuf {
        self.root.join("certs").join(path_name(first_name))
    }

    fn inventory_dir(&self) -> PathBuf {
        self.root.join("inventory")
    }

    fn inventory_path(&self, first_name: &str) -> PathBuf {
        self.inventory_dir()
            .join(format!("{}.json", path_name(first_name)))
    }

    pub fn load_account(&self, directory: &str) -> Result<Option<AccountRecord>> {
        read_json(&self.account_path(directory))
    }

    /// The account for `directory`, or an error telling the user how to create one.
    pub fn require_account(&self, directory: &str) -> Result<AccountRecord> {
        let record = self.load_account(directory)?.with_context(|| {
            format!(
                "no account registered for {directory} in {}: run `certfleet account register --key KEYREF --agree-tos` first",
                self.root.display()
            )
        })?;
        if let Some(when) = record.deactivated_at {
            anyhow::bail!(
                "the account {} was deactivated on {when}; deactivation is permanent: register a new account with `certfleet account register`",
                record.url
            );
        }
        Ok(record)
    }

    pub fn save_account(&self, record: &AccountRecord) -> Result<()> {
        write_json(&self.account_path(&record.directory), record, 0o600)
    }

    pub fn save_inventory(&self, entry: &InventoryEntry) -> Result<()> {
        let first = entry
            .names
            .first()
            .context("inventory entry without names")?;
        write_json(
            &self.inventory_path(first),
            entry,
            entry.key_ref.file_mode(),
        )
    }

    /// Removes a certificate's inventory entry; `false` when there was none.
    pub fn remove_inventory(&self, first_name: &str) -> Result<bool> {
        let path = self.inventory_path(first_name);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }

    pub fn load_inventory(&self, first_name: &str) -> Result<Option<InventoryEntry>> {
        read_json(&self.inventory_path(first_name))
    }

    /// Every inventory entry, sorted by first name.
    pub fn inventory(&self) -> Result<Vec<InventoryEntry>> {
        let dir = self.inventory_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        };
        let mut out = Vec::new();
        for entry in entries {
            let path = entry
                .with_context(|| format!("reading {}", dir.display()))?
                .path();
            if path.extension().is_some_and(|e| e == "json")
                && let Some(item) = read_json::<InventoryEntry>(&path)?
            {
                out.push(item);
            }
        }
        out.sort_by(|a, b| a.names.cmp(&b.names));
        Ok(out)
    }
}

/// Host, port and path of the directory URL, safe as one path component.
pub fn directory_slug(directory: &str) -> String {
    let trimmed = directory
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    trimmed
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A certificate's first name as a path component (`*.x` → `_wildcard.x`).
pub fn path_name(name: &str) -> String {
    match name.strip_prefix("*.") {
        Some(rest) => format!("_wildcard.{rest}"),
        None => name.to_owned(),
    }
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("{} is not valid certfleet state", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T, mode: u32) -> Result<()> {
    if let Some(parent) = path.parent() {
        certfleet_fs::ensure_dir(parent, 0o700)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut json = serde_json::to_vec_pretty(value)?;
    json.push(b'\n');
    write_atomic(path, &json, mode).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_and_path_names_are_single_components() {
        assert_eq!(
            directory_slug("https://localhost:14000/dir"),
            "localhost_14000_dir"
        );
        assert_eq!(
            directory_slug("https://acme-v02.api.letsencrypt.org/directory"),
            "acme-v02.api.letsencrypt.org_directory"
        );
        assert_eq!(path_name("*.example.com"), "_wildcard.example.com");
        assert_eq!(path_name("www.example.com"), "www.example.com");
    }

    #[test]
    fn inventory_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::new(dir.path().to_owned());
        assert!(state.inventory().expect("empty").is_empty());
        let entry = InventoryEntry {
            names: vec!["a.test".into(), "b.test".into()],
            out_dir: dir.path().join("out"),
            key_ref: "file:/k.pem".parse().expect("ref"),
            key_in_out_dir: true,
            challenge: "http-01".into(),
            http_listen: Some("127.0.0.1:80".into()),
            webroot: None,
            dns_plugin: None,
            profile: None,
            preferred_chain: None,
            directory: "https://ca/dir".into(),
            deploy_hook: None,
            reuse_key: false,
            revoked: None,
        };
        state.save_inventory(&entry).expect("save");
        let all = state.inventory().expect("list");
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].names, entry.names);
        assert!(state.load_inventory("a.test").expect("load").is_some());
        assert!(state.remove_inventory("a.test").expect("remove"));
        assert!(!state.remove_inventory("a.test").expect("gone"));
        assert!(state.inventory().expect("list").is_empty());
    }
}
