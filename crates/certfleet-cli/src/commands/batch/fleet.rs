//! A fleet on a server-backed store: the key-encryption key every node holds, and
//! `certfleet batch deploy`, which materialises stored bundles into a directory of this host
//! (all, or by name), each written whole by the bundle writer and only when it changed.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use certfleet_batch::kek::Kek;
use certfleet_batch::store::{Deployment, StoredBundle};
use certfleet_batch::{Job, JobStatus, StateStore};
use certfleet_issue::bundle::{self, BundleDir, KeyOutput};
use certfleet_issue::output::{CertificateMeta, PRIVKEY_FILE};
use certfleet_keys::KeyRef;
use serde_json::json;
use time::OffsetDateTime;

use crate::context::Context;

/// The KEK from `[batch] key_encryption_key_file` (must not be readable by group or
/// others). `None` when unset.
pub fn load_kek(ctx: &Context) -> Result<Option<Arc<Kek>>> {
    let Some(path) = ctx.settings.batch.key_encryption_key_file.as_ref() else {
        return Ok(None);
    };
    let meta = std::fs::metadata(path)
        .with_context(|| format!("[batch] key_encryption_key_file {}", path.display()))?;
    if meta.mode() & 0o077 != 0 {
        bail!(
            "[batch] key_encryption_key_file {}: mode {:o} lets group or others read the \
             fleet's key-encryption key; expected 0600 (chmod 600 {0})",
            path.display(),
            meta.mode() & 0o777
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("[batch] key_encryption_key_file {}", path.display()))?;
    let kek = Kek::parse(&text)
        .with_context(|| format!("[batch] key_encryption_key_file {}", path.display()))?;
    Ok(Some(Arc::new(kek)))
}

/// Whether this host holds the job's certificate: its directory here has the issued
/// serial (on a fleet, other nodes' directories are not on this host).
pub fn deployed_here(job: &Job) -> bool {
    job.issued.as_ref().is_some_and(|i| {
        CertificateMeta::read(Path::new(&i.cert_dir)).is_ok_and(|m| m.serial == i.serial)
    })
}

/// What `batch deploy` did.
#[derive(Debug, Default)]
struct Outcome {
    deployed: Vec<String>,
    unchanged: Vec<String>,
    not_issued: Vec<String>,
    failed: Vec<String>,
}

/// `certfleet batch deploy --to DIR [--name NAME]…`.
pub async fn deploy(
    ctx: &Context,
    to: &Path,
    names: &[String],
    store_flag: Option<&str>,
) -> Result<()> {
    let store = ctx.open_store(store_flag).await?;
    if !store.shares_bundles() {
        bail!(
            "batch deploy reads certificates from a fleet's store; {} keeps them on the node \
             that issued them (use --store postgres://…)",
            store.location()
        );
    }
    let kek = load_kek(ctx)?;
    let Some(batch) = store.batches().await?.pop() else {
        bail!("the store {} holds no batch", store.location());
    };
    std::fs::create_dir_all(to).with_context(|| format!("--to {}", to.display()))?;
    let to = std::path::absolute(to)?;
    bundle::sweep(&to)?;
    let host = crate::context::hostname();
    let jobs = super::all_jobs(store.as_ref(), batch.id).await?;
    let mut out = Outcome::default();
    let mut wanted: Vec<&String> = names.iter().collect();
    for job in &jobs {
        let first = job.spec.names[0].clone();
        if !names.is_empty() {
            let before = wanted.len();
            wanted.retain(|n| !job.spec.names.contains(n));
            if wanted.len() == before {
                continue;
            }
        }
        if job.status != JobStatus::Issued {
            out.not_issued.push(first);
            continue;
        }
        let Some(stored) = store.bundle(job.id).await? else {
            out.not_issued.push(first);
            continue;
        };
        let dir = to.join(first.replace('*', "_"));
        match deploy_one(&stored, &dir, kek.as_deref()) {
            Ok(false) => out.unchanged.push(first),
            Ok(true) => {
                store
                    .record_deployment(&Deployment {
                        job: job.id,
                        host: host.clone(),
                        dir: dir.display().to_string(),
                        serial: stored.serial.clone(),
                        at: OffsetDateTime::now_utc(),
                    })
                    .await?;
                out.deployed.push(first);
            }
            Err(e) => {
                tracing::error!("{first}: {e:#}");
                out.failed.push(first);
            }
        }
    }
    tracing::info!(
        deployed = out.deployed.len(),
        unchanged = out.unchanged.len(),
        not_issued = out.not_issued.len(),
        failed = out.failed.len(),
        to = %to.display(),
        "batch deploy finished"
    );
    super::super::print_json(&json!({
        "to": to.display().to_string(),
        "deployed": out.deployed,
        "unchanged": out.unchanged,
        "not_issued": out.not_issued,
        "failed": out.failed,
        "unknown_names": wanted,
    }))?;
    if !out.failed.is_empty() || !wanted.is_empty() {
        bail!(
            "{} certificates could not be deployed, {} names are in no certificate of the batch",
            out.failed.len(),
            wanted.len()
        );
    }
    Ok(())
}

/// Writes one bundle whole into `dir` unless it holds this serial already; `true` if
/// written.
fn deploy_one(stored: &StoredBundle, dir: &Path, kek: Option<&Kek>) -> Result<bool> {
    let current = CertificateMeta::read(dir).ok();
    let has_key = dir.join(PRIVKEY_FILE).exists() || stored.sealed_key.is_none();
    if current.is_some_and(|m| m.serial == stored.serial) && has_key {
        return Ok(false);
    }
    let mut meta: CertificateMeta = serde_json::from_str(&stored.meta_json)
        .with_context(|| format!("stored meta.json of job {}", stored.job))?;
    let target = BundleDir::new(dir)?;
    let staging = target.stage()?;
    let key_ref: KeyRef;
    let key = match &stored.sealed_key {
        Some(sealed) => {
            let Some(kek) = kek else {
                bail!(
                    "its key is stored sealed; set [batch] key_encryption_key_file to the \
                     fleet's key-encryption key"
                );
            };
            let pem = kek.open(stored.job, sealed)?;
            certfleet_keys::fs::write_atomic_new(&staging.key_path(), &pem, 0o600)
                .with_context(|| staging.key_path().display().to_string())?;
            key_ref = KeyRef::file(&PathBuf::from(dir).join(PRIVKEY_FILE))?;
            KeyOutput::InStaging
        }
        None => {
            key_ref = stored.key_ref.parse()?;
            KeyOutput::Reference(&key_ref)
        }
    };
    meta.key_ref = key_ref.clone();
    staging.commit_pems(&stored.cert_pem, &stored.chain_pem, key, &meta)?;
    Ok(true)
}

/// `batch status --jobs` fields of a fleet: who issued, serial, notAfter, deployments.
pub async fn job_details(
    store: &dyn StateStore,
    batch: certfleet_batch::BatchId,
) -> Result<std::collections::HashMap<certfleet_batch::JobId, serde_json::Value>> {
    let mut details = std::collections::HashMap::new();
    let deployments = store.deployments(batch).await?;
    for d in deployments {
        let e = details
            .entry(d.job)
            .or_insert_with(|| json!({ "deployed": [] }));
        if let Some(list) = e["deployed"].as_array_mut() {
            list.push(json!({
                "host": d.host,
                "dir": d.dir,
                "serial": d.serial,
                "at": super::report::rfc3339(d.at),
            }));
        }
    }
    Ok(details)
}
