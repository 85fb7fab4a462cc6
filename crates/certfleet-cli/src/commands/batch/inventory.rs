//! Batch certificates in the renewal inventory, so `certfleet renew --all` covers them:
//! each entry is written as its certificate is issued (on the orchestrator's blocking
//! threads, overlapping the network work of other jobs) and any missing one at the end.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use anyhow::Result;
use certfleet_batch::{IssuedHook, Job, JobId};
use certfleet_issue::ChallengeKind;
use certfleet_issue::output::PRIVKEY_FILE;

use crate::state::{InventoryEntry, StateDir};

/// Everything an inventory entry needs besides the job.
#[derive(Debug)]
pub struct InventoryWriter {
    pub state: StateDir,
    pub http_listen: Option<String>,
    pub webroot: Option<PathBuf>,
    pub directory: String,
    /// Deploy hooks from the batch (names key, see `hooks::names_key`), recorded for
    /// renewals; a certificate without one keeps the hook its entry records.
    pub deploy_hooks: std::collections::HashMap<String, String>,
    /// Jobs whose entry the issuance hook wrote in this run: the end-of-run pass does not
    /// read those back (one file read per certificate of the batch).
    pub written: Mutex<HashSet<JobId>>,
}

impl InventoryWriter {
    /// The entry of an issued job (`None` for a job without a certificate yet).
    fn entry(&self, job: &Job) -> Result<Option<InventoryEntry>> {
        let (Some(issued), Some(key)) = (&job.issued, &job.cert_key) else {
            return Ok(None);
        };
        let out_dir = PathBuf::from(&issued.cert_dir);
        let key_ref: certfleet_keys::KeyRef = key.parse()?;
        let challenge = job.spec.challenge.unwrap_or(ChallengeKind::Dns01);
        let http01 = challenge == ChallengeKind::Http01;
        Ok(Some(InventoryEntry {
            names: job.spec.names.clone(),
            key_in_out_dir: key_ref.file_path() == Some(out_dir.join(PRIVKEY_FILE)),
            out_dir,
            key_ref,
            http_listen: self.http_listen.clone().filter(|_| http01),
            webroot: self.webroot.clone().filter(|_| http01),
            dns_plugin: job
                .spec
                .dns_plugin
                .clone()
                .filter(|_| challenge == ChallengeKind::Dns01),
            challenge: challenge.as_str().to_owned(),
            profile: job.spec.profile.clone(),
            preferred_chain: job.spec.preferred_chain.clone(),
            directory: self.directory.clone(),
            deploy_hook: None,
            reuse_key: false,
            revoked: None,
        }))
    }

    /// At the end of a run: writes the entry of `job` unless this run's hook wrote it.
    pub fn save_if_not_written(&self, job: &Job) -> Result<()> {
        if self.written().contains(&job.id) {
            return Ok(());
        }
        self.save(job)
    }

    fn written(&self) -> std::sync::MutexGuard<'_, HashSet<JobId>> {
        self.written.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes the entry of `job` unless the stored one already says the same.
    fn save(&self, job: &Job) -> Result<()> {
        let Some(mut entry) = self.entry(job)? else {
            return Ok(());
        };
        let hook = self
            .deploy_hooks
            .get(&super::hooks::names_key(&entry.names))
            .cloned();
        entry.deploy_hook = hook.clone();
        if let Some(stored) = self.state.load_inventory(&entry.names[0])? {
            // What the operator set for renewals stays unless the batch names a hook.
            entry.deploy_hook = hook.or_else(|| stored.deploy_hook.clone());
            entry.reuse_key = stored.reuse_key;
            if stored == entry {
                return Ok(());
            }
        }
        self.state.save_inventory(&entry)
    }
}

impl IssuedHook for InventoryWriter {
    fn issued(&self, job: &Job) -> Result<(), String> {
        self.save(job)
            .map_err(|e| format!("adding to the renewal inventory: {e:#}"))?;
        self.written().insert(job.id);
        Ok(())
    }
}
