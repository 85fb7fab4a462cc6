//! A fleet node's pending key files: the certificate key this node generated for a job, or
//! restored from the store, lives on its disk only while the node works on the job. A job
//! that leaves the node unissued — its fenced write refused (another node took it over),
//! or deferred, failed or stopped — takes its pending key file with it when the store holds
//! the key (sealed with the KEK): the next owner, this node included, restores it from there.
//! Without a copy in the store the file stays (it is the only one), except after a refusal,
//! where the new owner makes its own key. A file a killed run of this node left is this
//! node's too once it claims the job again. One host (SQLite) keeps its pending keys: no
//! store holds them and no other node can take its jobs.

use std::path::{Path, PathBuf};

use certfleet_keys::KeyRef;

use super::JobDriver;
use crate::error::RunError;
use crate::store::JobId;

/// Device and inode: which file a path names (an atomic rewrite makes another).
pub(super) type FileIdentity = (u64, u64);

/// A pending key file as this node wrote it.
pub(super) struct OwnPendingKey {
    path: PathBuf,
    identity: FileIdentity,
    /// The store holds the key too (sealed by this node, or restored from there).
    in_store: bool,
}

/// Why a job left this node.
pub(super) enum Leaving {
    /// A fenced write or lease check was refused: the job is another node's now.
    Refused,
    /// Deferred, failed or stopped by an error: any node may take the job up later.
    Unissued,
}

impl JobDriver {
    /// Notes the pending key file at `path` as this node just wrote it (`in_store`: the
    /// store holds the key too). Only a fleet's jobs leave a node, so one host spends no
    /// `stat` here.
    pub(super) fn own_pending_key(&mut self, path: &Path, in_store: bool) {
        if self.fleet() {
            self.own_pending = file_identity(path).map(|identity| OwnPendingKey {
                path: path.to_owned(),
                identity,
                in_store,
            });
        }
    }

    /// A claimed job whose recorded key is the pending key file on this node's disk: a run of
    /// this node that died after `finalizing` made it. The file is this node's as if this
    /// run had made it, so it leaves with the job by the same rule (the store holds the key
    /// when that run sealed it). Without this, a job that then left the node unissued left
    /// the private key behind.
    pub(super) async fn adopt_pending_key_on_disk(&mut self) -> Result<(), RunError> {
        let Some(recorded) = self.job.cert_key.as_deref() else {
            return Ok(());
        };
        if !self.fleet() {
            return Ok(());
        }
        // An unreadable reference or output directory is reported by the step that needs
        // it (`cert_key`), which fails the job the usual way.
        let (Some(path), Ok(bundle)) = (
            recorded.parse::<KeyRef>().ok().and_then(|r| r.file_path()),
            self.bundle(),
        ) else {
            return Ok(());
        };
        if path != bundle.pending_key() || !path.exists() {
            return Ok(());
        }
        let in_store = self.sh.store.job_key(self.job.id).await?.is_some();
        self.own_pending_key(&path, in_store);
        Ok(())
    }

    /// The key of the noted pending key file was sealed into the store.
    pub(super) fn pending_key_stored(&mut self) {
        if let Some(own) = &mut self.own_pending {
            own.in_store = true;
        }
    }

    /// Notes the pending key file as staged into the certificate directory (`identity` as
    /// the blocking pool saw it); whether the store holds it carries over from the note of
    /// the same file.
    pub(super) fn pending_key_staged(&mut self, path: &Path, identity: FileIdentity) {
        let in_store = self
            .own_pending
            .as_ref()
            .is_some_and(|own| own.identity == identity && own.in_store);
        self.own_pending = Some(OwnPendingKey {
            path: path.to_owned(),
            identity,
            in_store,
        });
    }

    /// The job leaves this node unissued: removes the noted pending key file when that is
    /// safe (see the module), while the path still names that file (another run on this
    /// host may have written its own there since).
    pub(super) fn drop_own_pending_key(&mut self, leaving: Leaving) {
        let Some(own) = self.own_pending.take() else {
            return;
        };
        let keep = matches!(leaving, Leaving::Unissued) && !own.in_store;
        if !keep && file_identity(&own.path) == Some(own.identity) {
            remove_pending_key(true, &own.path, self.job.id);
        }
    }
}

/// The [`FileIdentity`] of `path`.
pub(super) fn file_identity(path: &Path) -> Option<FileIdentity> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Removes the key generated for the job (once the published bundle holds it, or the job
/// left this node).
pub(super) fn remove_pending_key(generated: bool, pending: &Path, job: JobId) {
    if generated
        && let Err(e) = std::fs::remove_file(pending)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(job = %job, "could not remove {}: {e}", pending.display());
    }
}
