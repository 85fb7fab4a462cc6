//! `certificates` (list what the inventory holds, read from each certificate directory) and
//! `delete` (a certificate's files and inventory entry, optionally revoked first).

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use certfleet_acme::RevocationReason;
use certfleet_issue::output::{CERT_FILE, CertificateMeta};
use certfleet_issue::renewal::{RenewalDecision, decide};
use certfleet_issue::{CertificateInfo, first_pem_certificate};
use serde_json::json;
use time::OffsetDateTime;

use super::print_json;
use crate::cli::{CertificatesArgs, DeleteArgs};
use crate::context::Context;
use crate::logging::to_second;
use crate::state::InventoryEntry;

/// One line of `certificates`.
struct Listed {
    entry: InventoryEntry,
    meta: Option<CertificateMeta>,
    key_kind: String,
    status: String,
    renew_at: Option<OffsetDateTime>,
}

fn examine(entry: InventoryEntry, now: OffsetDateTime) -> Listed {
    let meta = CertificateMeta::read(&entry.out_dir).ok();
    let key_kind = key_kind(&entry);
    let Some(m) = &meta else {
        return Listed {
            entry,
            meta: None,
            key_kind,
            status: "missing (certificate directory gone or unreadable)".into(),
            renew_at: None,
        };
    };
    let revoked = entry.revoked.as_ref().filter(|r| r.serial == m.serial);
    // Offline: the lifetime rule (a renewal asks the CA's ARI window when it offers one).
    let decision = decide(now, m.not_before, m.not_after, None, &m.serial);
    let (status, renew_at) = match (revoked, &decision) {
        (Some(r), _) => (format!("revoked ({})", r.reason), Some(now)),
        (None, _) if now >= m.not_after => ("expired".into(), Some(now)),
        (None, RenewalDecision::Due(_)) => ("due for renewal".into(), Some(now)),
        (None, RenewalDecision::NotYet { renew_at, .. }) => ("valid".into(), Some(*renew_at)),
    };
    Listed {
        entry,
        meta,
        key_kind,
        status,
        renew_at,
    }
}

/// `ec-p256 (file, made by certfleet)`, from the certificate's public key and the key
/// reference, without loading the key (a token may need a PIN).
fn key_kind(entry: &InventoryEntry) -> String {
    let spki = std::fs::read_to_string(entry.out_dir.join(CERT_FILE))
        .ok()
        .and_then(|pem| first_pem_certificate(&pem).ok())
        .and_then(|der| CertificateInfo::from_der(&der).ok())
        .map(|info| info.public_key_der)
        .unwrap_or_default();
    let contains = |oid: &[u8]| spki.windows(oid.len()).any(|w| w == oid);
    let alg = if contains(&[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]) {
        "ec-p256"
    } else if contains(&[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22]) {
        "ec-p384"
    } else if contains(&[0x06, 0x03, 0x2b, 0x65, 0x70]) {
        "ed25519"
    } else if contains(&[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
    ]) {
        "rsa"
    } else {
        "unknown"
    };
    let source = match (entry.key_ref.scheme(), entry.key_in_out_dir) {
        ("file", true) => "file, made by certfleet".to_owned(),
        (scheme, _) => scheme.to_owned(),
    };
    format!("{alg} ({source})")
}

pub fn list(ctx: &Context, args: CertificatesArgs) -> Result<()> {
    let now = OffsetDateTime::now_utc();
    let listed: Vec<Listed> = ctx
        .state
        .inventory()?
        .into_iter()
        .map(|e| examine(e, now))
        .collect();
    if args.json {
        let items: Vec<serde_json::Value> = listed
            .iter()
            .map(|l| {
                json!({
                    "names": l.entry.names,
                    "directory": l.entry.out_dir,
                    "serial": l.meta.as_ref().map(|m| m.serial.clone()),
                    "not_after": l.meta.as_ref().map(|m| to_second(m.not_after)),
                    "renewal_time": l.renew_at.map(to_second),
                    "ca": l.entry.directory,
                    "key": l.key_kind,
                    "key_ref": l.entry.key_ref.to_string(),
                    "status": l.status,
                    "revoked": l.entry.revoked.as_ref().map(|r| json!({
                        "serial": r.serial, "reason": r.reason, "at": to_second(r.at),
                    })),
                    "deploy_hook": l.entry.deploy_hook,
                    "reuse_key": l.entry.reuse_key,
                })
            })
            .collect();
        return print_json(&serde_json::Value::Array(items));
    }
    if listed.is_empty() {
        println!(
            "no certificates in the inventory of {}",
            ctx.state.root().display()
        );
        return Ok(());
    }
    for l in &listed {
        println!("{}", l.entry.names[0]);
        println!("  names:      {}", l.entry.names.join(", "));
        println!("  status:     {}", l.status);
        if let Some(m) = &l.meta {
            println!("  serial:     {}", m.serial);
            println!("  not after:  {}", to_second(m.not_after));
        }
        if let Some(t) = l.renew_at {
            println!("  renews:     {}", to_second(t));
        }
        println!("  key:        {}", l.key_kind);
        println!("  CA:         {}", l.entry.directory);
        println!("  directory:  {}", l.entry.out_dir.display());
        if let Some(h) = &l.entry.deploy_hook {
            println!("  deploy:     {h}");
        }
    }
    Ok(())
}

pub async fn delete(ctx: &Context, args: DeleteArgs) -> Result<()> {
    let name = crate::names::normalize(std::slice::from_ref(&args.name))?.remove(0);
    let entry = ctx.state.load_inventory(&name)?.with_context(|| {
        format!(
            "--name {name:?}: no certificate with that first name in the inventory of {} (`certfleet certificates` lists them)",
            ctx.state.root().display()
        )
    })?;
    let _lock = crate::lock::certificate(&ctx.state, &name, "delete")?;
    if args.revoke {
        let pem = std::fs::read_to_string(entry.out_dir.join(CERT_FILE)).with_context(|| {
            format!(
                "--revoke: reading {} (without it nothing can be revoked; delete without --revoke)",
                entry.out_dir.join(CERT_FILE).display()
            )
        })?;
        let der = first_pem_certificate(&pem)?;
        let (_, account) = ctx.for_directory(&entry.directory).account().await?;
        account
            .revoke(&der, Some(RevocationReason::CessationOfOperation))
            .await
            .with_context(|| {
                format!("revoking the certificate of {name} at {}", entry.directory)
            })?;
        tracing::info!("{name}: revoked (cessationOfOperation)");
    }
    let removed = remove_bundle(&entry.out_dir)?;
    ctx.state.remove_inventory(&name)?;
    println!(
        "deleted {name}: {removed} entries under {} and its inventory entry",
        entry.out_dir.display()
    );
    Ok(())
}

/// Removes a certificate directory written by certfleet: the stable link and its version
/// directories (`.NAME.vN`) and pending key, or an older real directory holding
/// `meta.json`. Anything else at that path is refused, not removed.
fn remove_bundle(stable: &Path) -> Result<usize> {
    let (Some(parent), Some(name)) = (stable.parent(), stable.file_name()) else {
        bail!("{}: not a certificate directory path", stable.display());
    };
    let name = name.to_string_lossy();
    let mut removed = 0;
    match std::fs::symlink_metadata(stable) {
        Ok(m) if m.file_type().is_symlink() => {
            std::fs::remove_file(stable)
                .with_context(|| format!("removing {}", stable.display()))?;
            removed += 1;
        }
        Ok(m) if m.is_dir() => {
            if !stable.join("meta.json").is_file() {
                bail!(
                    "{}: no meta.json in it, so it is not a certificate directory certfleet wrote; not removing it",
                    stable.display()
                );
            }
            std::fs::remove_dir_all(stable)
                .with_context(|| format!("removing {}", stable.display()))?;
            removed += 1;
        }
        Ok(_) => bail!(
            "{}: not a directory or link; not removing it",
            stable.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", stable.display())),
    }
    let version_prefix = format!(".{name}.v");
    let pending = format!(".{name}.pending-key.pem");
    let entries = match std::fs::read_dir(parent) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e).with_context(|| format!("reading {}", parent.display())),
    };
    for item in entries {
        let item = item.with_context(|| format!("reading {}", parent.display()))?;
        let file = item.file_name().to_string_lossy().into_owned();
        let is_version = file
            .strip_prefix(&version_prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        let path = item.path();
        if is_version {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("removing {}", path.display()))?;
            removed += 1;
        } else if file == pending {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_bundle_takes_the_link_and_versions_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path();
        for v in ["v1", "v2"] {
            std::fs::create_dir(p.join(format!(".a.test.{v}"))).expect("version");
        }
        std::fs::create_dir(p.join(".a.test.vx")).expect("other");
        std::fs::create_dir(p.join(".a.testing.v1")).expect("other bundle");
        std::os::unix::fs::symlink(".a.test.v2", p.join("a.test")).expect("link");
        assert_eq!(remove_bundle(&p.join("a.test")).expect("removed"), 3);
        assert!(!p.join("a.test").exists());
        assert!(p.join(".a.test.vx").exists() && p.join(".a.testing.v1").exists());
        std::fs::create_dir(p.join("plain")).expect("plain");
        let err = remove_bundle(&p.join("plain")).expect_err("refused");
        assert!(format!("{err}").contains("no meta.json"), "{err}");
    }
}
