//! The `finalizing` step through the shared order steps: the certificate key (made through
//! the run's [`certfleet_issue::KeyMaker`] right before finalize and stored with
//! `finalizing`), finalize of a `ready` order only, download with the preferred chain, the
//! checks, and the certificate directory written whole ([`certfleet_issue::bundle`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use certfleet_issue::bundle::{BundleDir, KeyOutput, Staging};
use certfleet_issue::output::CertificateMeta;
use certfleet_issue::steps::{Authorized, NextStep, next_step};
use certfleet_keys::{KeyAlgorithm, KeyError, KeyRef, SigningKey};

use super::authorize::JobCheckpoint;
use super::pending_key::{FileIdentity, file_identity, remove_pending_key};
use super::{JobDriver, now};
use crate::error::RunError;
use crate::store::{IssuedCert, JobStatus, JobUpdate};

impl JobDriver {
    /// The certificate key: the stored one, the one the spec names, or a new file key
    /// pending beside the certificate directory. Its reference is written with
    /// `finalizing` before finalize.
    pub(super) async fn cert_key(&mut self) -> Result<Arc<dyn SigningKey>, RunError> {
        let bundle = self.bundle()?;
        if let Some(r) = self.job.cert_key.clone()
            && let Some((key, r)) = self.stored_cert_key(r, &bundle).await?
        {
            // A renewal keeps the key of the certificate it replaces; its status still
            // has to say `finalizing` (with the key as this node names it) before finalize.
            if self.job.status != JobStatus::Finalizing
                || self.job.cert_key.as_deref() != Some(r.as_str())
            {
                self.write(JobUpdate::finalizing(r)).await?;
            }
            return Ok(key);
        }
        let pending = bundle.pending_key();
        let (key, generated) = match self.job.spec.key.clone() {
            Some(r) => (self.sh.load_key(r.as_str()).await?, false),
            None => {
                let alg = self.job.spec.key_algorithm.unwrap_or(KeyAlgorithm::EcP256);
                std::fs::create_dir_all(bundle.parent()).map_err(|source| KeyError::Io {
                    path: bundle.parent().to_owned(),
                    source,
                })?;
                let key = match self.sh.key_maker.generate(alg, &pending).await {
                    // Ours from an attempt that died before writing `finalizing`.
                    Err(KeyError::AlreadyExists { .. }) => {
                        self.sh.load_key(KeyRef::file(&pending)?.as_str()).await?
                    }
                    other => other?,
                };
                if let Some(hook) = self.sh.window_hook.clone() {
                    hook.before_key_recorded(&self.job);
                }
                (key, true)
            }
        };
        if generated {
            self.own_pending_key(&pending, false);
        }
        let sealing = generated.then_some(pending.as_path());
        self.record_cert_key(&key, sealing).await?;
        Ok(key)
    }

    /// Stores the key generated at `sealing` (sealed, for a fleet) and writes `finalizing`
    /// naming `key`: both fenced.
    async fn record_cert_key(
        &mut self,
        key: &Arc<dyn SigningKey>,
        sealing: Option<&Path>,
    ) -> Result<(), RunError> {
        if let Some(path) = sealing
            && self.store_new_key(path).await?
        {
            self.pending_key_stored();
        }
        self.write(JobUpdate::finalizing(key.key_ref().to_string()))
            .await
    }

    /// The key the job names (`reference`), as `(key, reference on this node)`: loaded here,
    /// else from the bundle a killed run committed, else (a fleet) from the store. `None`
    /// when the key is gone everywhere and the job makes its own: a new key before the CSR,
    /// never a failure loop. A key named by the spec (token, file) is never replaced.
    async fn stored_cert_key(
        &mut self,
        reference: String,
        bundle: &BundleDir,
    ) -> Result<Option<(Arc<dyn SigningKey>, String)>, RunError> {
        let key_ref: KeyRef = reference.parse()?;
        let err = match self.sh.load_key(&reference).await {
            Ok(k) => return Ok(Some((k, reference))),
            Err(e) => e,
        };
        // The pending key went into the bundle in a run killed before it stored `issued`;
        // the bundle's key is that key.
        if in_bundle(&key_ref, bundle) {
            let current = KeyRef::file(&bundle.current_key())?;
            if let Ok(k) = self.sh.load_key(current.as_str()).await {
                return Ok(Some((k, current.to_string())));
            }
        }
        if let Some(k) = self.key_from_store(&bundle.pending_key()).await? {
            let r = k.key_ref().to_string();
            return Ok(Some((k, r)));
        }
        if self.fleet() && self.job.spec.key.is_none() {
            tracing::warn!(job = %self.job.id, "the certificate key {reference} is not on this node and not in the store ({err}); making a new one");
            return Ok(None);
        }
        Err(err.into())
    }

    /// `<output_dir>/<first name>` (`*` written `_`), the run's root when the job names
    /// no output directory.
    pub(super) fn out_dir(&self) -> PathBuf {
        let first = self.job.spec.names[0].replace('*', "_");
        match &self.job.spec.output_dir {
            Some(d) => d.join(first),
            None => self.sh.config.output_root.join(first),
        }
    }

    pub(super) fn bundle(&self) -> Result<BundleDir, RunError> {
        Ok(BundleDir::new(&self.out_dir())?)
    }

    /// Finalizes (only a `ready` order), waits for `valid`, downloads, writes the
    /// certificate directory whole, then writes `issued`.
    pub(super) async fn finalize(&mut self) -> Result<JobStatus, RunError> {
        let Some((order, assumed_ready)) = self.current_order().await? else {
            return Ok(JobStatus::Ordering);
        };
        let sh = self.sh.clone();
        match next_step(order.state.status, assumed_ready) {
            NextStep::Reorder => {
                return self
                    .reorder(format!("order {} became invalid", order.url))
                    .await;
            }
            NextStep::Authorize => {
                self.write(JobUpdate::to(JobStatus::Authorizing)).await?;
                self.order = Some((order, false));
                return Ok(JobStatus::Authorizing);
            }
            NextStep::Finalize => {}
        }
        let steps = self.steps.clone();
        let preferred_chain = self.job.spec.preferred_chain.clone();
        let names = self.job.spec.names.clone();
        let issued = steps
            .finalize(
                Authorized {
                    order,
                    assumed_ready,
                },
                &names,
                preferred_chain.as_deref(),
                &mut JobCheckpoint {
                    driver: self,
                    status: JobStatus::Finalizing,
                },
            )
            .await?;
        let bundle = self.bundle()?;
        let generated = in_bundle(issued.key.key_ref(), &bundle);
        let key_ref = if generated {
            KeyRef::file(&bundle.current_key())?
        } else {
            issued.key.key_ref().clone()
        };
        let meta = CertificateMeta::new(
            &issued,
            key_ref.clone(),
            sh.account.url(),
            sh.account.client().directory_url(),
        );
        // Saves the work of staging when the lease is already lost; not the fence itself.
        self.check_lease().await?;
        let pending = bundle.pending_key();
        let files = BundleFiles {
            bundle: bundle.clone(),
            pending: pending.clone(),
            generated,
            key_ref: key_ref.clone(),
            publish_now: !self.fleet(),
            job: self.job.id,
        };
        let (issued_copy, meta_copy) = (issued.clone(), meta.clone());
        let (own_pending, unpublished) =
            off_thread(move || files.write(&issued_copy, &meta_copy)).await?;
        if let Some(identity) = own_pending {
            self.pending_key_staged(&pending, identity);
        }
        if unpublished.is_some()
            && let Some(hook) = sh.window_hook.clone()
        {
            hook.before_fenced_publish(&self.job);
        }
        // Fenced: a node whose lease was taken over stores no bundle and so records no
        // issuance; a crash before `issued` is repeated by the next owner with the same
        // serial, which the store records once.
        self.store_bundle(&issued, &meta, generated).await?;
        let mut update = JobUpdate::issued(IssuedCert {
            serial: issued.info.serial_hex.clone(),
            not_after: issued.info.not_after,
            cert_dir: bundle.stable().display().to_string(),
            node: Some(self.lease.node.clone()),
        })
        .recording(sh.governor.issuance(
            &self.ctx,
            &issued.info.serial_hex,
            issued.info.not_after,
            now(),
        ));
        // From now on the key is the bundle's (a renewal keeps it).
        update.cert_key = Some(key_ref.to_string());
        self.write(update).await?;
        if let Some(staging) = unpublished {
            // A fleet publishes only after its fenced `issued` write: a node that lost the
            // lease at any point before it (paused, partitioned) drops the staging
            // directory unpublished. Once `issued`, no other node takes the job, so this
            // publish is the owner's (a crash here leaves the bundle in the store, where
            // `batch deploy` and the due decisions read it).
            let job = self.job.id;
            off_thread(move || {
                staging.publish()?;
                remove_pending_key(generated, &pending, job);
                Ok(())
            })
            .await?;
        }
        tracing::info!(job = %self.job.id, names = %self.job.spec.names.join(","), serial = %issued.info.serial_hex, "certificate issued");
        if let Some(hook) = sh.issued_hook.clone() {
            let job = self.job.clone();
            let outcome = tokio::task::spawn_blocking(move || hook.issued(&job))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r);
            if let Err(e) = outcome {
                tracing::warn!(job = %self.job.id, "after issuance: {e}");
            }
        }
        Ok(JobStatus::Issued)
    }
}

/// The certificate directory of one issued job, as [`BundleFiles::write`] writes it.
struct BundleFiles {
    bundle: BundleDir,
    pending: PathBuf,
    /// The key was generated for the job (the pending key, or the bundle's own).
    generated: bool,
    key_ref: KeyRef,
    /// One host: publish at once; a fleet publishes after its fenced `issued` write.
    publish_now: bool,
    job: crate::store::JobId,
}

impl BundleFiles {
    /// Stages the directory (and publishes it when `publish_now`); returns the identity of
    /// the pending key file as this node staged it, and the staging left to publish.
    fn write(
        &self,
        issued: &certfleet_issue::IssuedCertificate,
        meta: &CertificateMeta,
    ) -> Result<(Option<FileIdentity>, Option<Staging>), RunError> {
        let pending = &self.pending;
        // The pending key file as this node, holding the lease, stages it: a refused publish
        // (a fleet's) removes this very file, never one written at the path since.
        let own_pending = (self.generated && !self.publish_now)
            .then(|| file_identity(pending))
            .flatten();
        let current = self.bundle.current_key();
        let key_output = match self.generated {
            true if pending.exists() => KeyOutput::LinkFrom(pending),
            true => KeyOutput::LinkFrom(&current),
            false => KeyOutput::Reference(&self.key_ref),
        };
        let mut staging = self.bundle.stage()?;
        staging.fill(issued, key_output, meta)?;
        if !self.publish_now {
            return Ok((own_pending, Some(staging)));
        }
        // One host: the directory before `issued`, so a crash in between repeats the
        // download (same serial) and never leaves `issued` without files.
        staging.publish()?;
        // The bundle holds the key now; a crash after `issued` must not leave the pending
        // key behind (a resumed job finds the key in the bundle).
        remove_pending_key(self.generated, pending, self.job);
        Ok((own_pending, None))
    }
}

/// Runs file work (several files written and synced) on the blocking pool, off the async
/// thread the other orders run on.
async fn off_thread<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, RunError> + Send + 'static,
) -> Result<T, RunError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| RunError::Task(format!("writing the certificate directory: {e}")))?
}

/// A file key that belongs to the certificate directory: the pending key or the bundle's
/// `privkey.pem`.
fn in_bundle(key_ref: &KeyRef, bundle: &BundleDir) -> bool {
    key_ref
        .file_path()
        .is_some_and(|p| p == bundle.pending_key() || p == bundle.current_key())
}
