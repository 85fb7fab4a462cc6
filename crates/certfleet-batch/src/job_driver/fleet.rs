//! A job on a server-backed store ([`crate::StateStore::shares_bundles`]): the store, not
//! this host's files, is the source of truth. A generated key is sealed with the fleet's
//! KEK and stored before `finalizing`, so any node can finish the order or renew it; the
//! bundle (chain, meta.json, key reference, sealed key) is stored, fenced, before `issued`;
//! a renewal reads the certificate it replaces from the store.

use std::path::Path;
use std::sync::Arc;

use certfleet_issue::IssuedCertificate;
use certfleet_issue::output::CertificateMeta;
use certfleet_keys::{KeyError, KeyRef, SigningKey};

use super::{JobDriver, now};
use crate::error::RunError;
use crate::store::StoredBundle;

impl JobDriver {
    /// Whether the store is a fleet's source of truth.
    pub(super) fn fleet(&self) -> bool {
        self.sh.store.shares_bundles()
    }

    /// Seals the key just generated at `path` and stores it with the job (fenced), before
    /// `finalizing` names it; whether it did. Without a KEK the key stays on this node
    /// (warned at start).
    pub(super) async fn store_new_key(&self, path: &Path) -> Result<bool, RunError> {
        let (true, Some(kek)) = (self.fleet(), self.sh.kek.as_ref()) else {
            return Ok(false);
        };
        let pem = std::fs::read(path).map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })?;
        let sealed = kek.seal(self.job.id, &pem)?;
        self.sh.store.put_job_key(&self.lease, &sealed).await?;
        Ok(true)
    }

    /// The job's key from the store, when this node cannot load the stored reference (the
    /// key was generated on another node, or this node gave its copy up when the job left
    /// it unissued): opened with the KEK and written as this node's
    /// pending key (0600), which goes again if the job leaves this node unissued
    /// ([`super::pending_key`]). `None` when the store holds no key for the job.
    pub(super) async fn key_from_store(
        &mut self,
        pending: &Path,
    ) -> Result<Option<Arc<dyn SigningKey>>, RunError> {
        let (true, Some(kek)) = (self.fleet(), self.sh.kek.as_ref()) else {
            return Ok(None);
        };
        let Some(sealed) = self.sh.store.job_key(self.job.id).await? else {
            return Ok(None);
        };
        let pem = kek.open(self.job.id, &sealed)?;
        if let Some(dir) = pending.parent() {
            std::fs::create_dir_all(dir).map_err(|source| KeyError::Io {
                path: dir.to_owned(),
                source,
            })?;
        }
        certfleet_keys::fs::write_atomic(pending, &pem, 0o600).map_err(|source| KeyError::Io {
            path: pending.to_owned(),
            source,
        })?;
        self.own_pending_key(pending, true);
        tracing::info!(job = %self.job.id, "certificate key taken from the store (not on this node)");
        if let Some(hook) = self.sh.window_hook.clone() {
            hook.before_key_recorded(&self.job);
        }
        let key_ref = KeyRef::file(pending)?;
        Ok(Some(self.sh.load_key(key_ref.as_str()).await?))
    }

    /// Before newOrder, which the job's next owner would send again (it finds no order to
    /// continue while ours is unsent): when a quarter of the lease or less is left by this
    /// node's clock, the lease is renewed first ([`JobDriver::check_lease`], fenced). A node
    /// paused after writing `ordering` (SIGSTOP, a VM freeze) for longer than its lease
    /// finds the job taken over and sends nothing, instead of making a second order. The
    /// lease as claimed, not as the orchestrator renews it since, is what is compared: at
    /// worst one store round trip more for a job that spent most of a lease before
    /// ordering.
    pub(super) async fn hold_lease_for_request(&mut self) -> Result<(), RunError> {
        let margin = crate::gcra::to_time(self.sh.config.lease_for / 4);
        if self.fleet() && now() + margin >= self.lease.expires_at {
            self.check_lease().await?;
        }
        Ok(())
    }

    /// Fails with [`crate::StoreError::Fenced`] unless this node still holds the job:
    /// checked before finalize is sent and before any file or issuance row is written.
    pub(super) async fn check_lease(&mut self) -> Result<(), RunError> {
        if self.fleet() {
            self.lease = self
                .sh
                .store
                .renew_lease(&self.lease, now(), self.sh.config.lease_for)
                .await?;
        }
        Ok(())
    }

    /// Stores the bundle (fenced) before `issued`.
    pub(super) async fn store_bundle(
        &self,
        issued: &IssuedCertificate,
        meta: &CertificateMeta,
        generated: bool,
    ) -> Result<(), RunError> {
        if !self.fleet() {
            return Ok(());
        }
        let sealed = if generated {
            self.sh.store.job_key(self.job.id).await?
        } else {
            None
        };
        let meta_json = serde_json::to_string_pretty(meta).map_err(|e| RunError::InvalidJob {
            job: self.job.id,
            detail: format!("encoding meta.json: {e}"),
        })?;
        let bundle = StoredBundle {
            job: self.job.id,
            serial: issued.info.serial_hex.clone(),
            not_after: issued.info.not_after,
            cert_pem: issued.chain.leaf_pem(),
            chain_pem: issued.chain.issuer_chain_pem(),
            meta_json,
            key_ref: meta.key_ref.to_string(),
            sealed_key: sealed,
            node: self.lease.node.clone(),
            stored_at: now(),
        };
        self.sh.store.put_bundle(&self.lease, &bundle).await?;
        Ok(())
    }

    /// The meta.json of the job's certificate as stored (a renewal's `replaces`).
    pub(super) async fn stored_meta(&self) -> Option<CertificateMeta> {
        if !self.fleet() {
            return None;
        }
        match self.sh.store.bundle(self.job.id).await {
            Ok(Some(b)) => serde_json::from_str(&b.meta_json).ok(),
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(job = %self.job.id, "no stored bundle: {e}");
                None
            }
        }
    }
}
