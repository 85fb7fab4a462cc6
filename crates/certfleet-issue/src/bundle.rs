//! Certificate directories written whole.
//!
//! The path a user configures (`--out /etc/certs/example.com`) is a symbolic link to a
//! versioned sibling directory (`/etc/certs/.example.com.v7`). A new certificate is
//! written into a staging directory (`.example.com.tmp-<pid>-<n>`), synced, renamed to the
//! next version and swapped in by replacing the link atomically (a rename over it; a real
//! directory left by an older certfleet is swapped out with `renameat2(RENAME_EXCHANGE)`).
//! A reader therefore sees the old bundle or the new one, never a mix; the previous version
//! is kept so a reader that resolved the link a moment earlier can finish, older ones are
//! removed. A staging directory that is dropped uncommitted removes itself (and the parent
//! directories it created), and [`sweep`] removes what killed writers left behind.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use certfleet_keys::KeyRef;

use crate::IssueError;
use crate::IssuedCertificate;
use crate::output::{
    CERT_FILE, CHAIN_FILE, CertificateMeta, FULLCHAIN_FILE, KEY_REF_FILE, META_FILE, PRIVKEY_FILE,
};

/// Where the certificate key of a new bundle comes from.
#[derive(Debug)]
pub enum KeyOutput<'a> {
    /// Generated into the staging directory as `privkey.pem` ([`Staging::key_path`]).
    InStaging,
    /// A file key to become `privkey.pem`: hard-linked (the key bytes are not read), or
    /// copied with mode 0600 where links are not possible. The batch's pending key, or the
    /// current bundle's `privkey.pem` for a renewal that keeps its key.
    LinkFrom(&'a Path),
    /// The key lives elsewhere (a file the user named, a token, a TPM): write `key.ref`.
    Reference(&'a KeyRef),
}

/// A certificate directory at a stable path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleDir {
    stable: PathBuf,
    parent: PathBuf,
    name: OsString,
}

impl BundleDir {
    /// `stable` is the path users configure; its last component names the bundle.
    pub fn new(stable: &Path) -> Result<BundleDir, IssueError> {
        let stable = std::path::absolute(stable).map_err(|source| IssueError::Io {
            path: stable.to_owned(),
            source,
        })?;
        let (Some(parent), Some(name)) = (stable.parent(), stable.file_name()) else {
            return Err(IssueError::InvalidRequest(format!(
                "{}: a certificate directory needs a name (expected a path like /etc/certs/example.com)",
                stable.display()
            )));
        };
        Ok(BundleDir {
            parent: parent.to_owned(),
            name: name.to_owned(),
            stable: stable.clone(),
        })
    }

    pub fn stable(&self) -> &Path {
        &self.stable
    }

    pub fn parent(&self) -> &Path {
        &self.parent
    }

    /// `privkey.pem` of the current bundle (through the link).
    pub fn current_key(&self) -> PathBuf {
        self.stable.join(PRIVKEY_FILE)
    }

    /// Where the batch keeps a new key between `finalizing` and the bundle's commit.
    pub fn pending_key(&self) -> PathBuf {
        self.sibling(&["pending-key.pem"])
    }

    fn sibling(&self, parts: &[&str]) -> PathBuf {
        let mut n = OsString::from(".");
        n.push(&self.name);
        for p in parts {
            n.push(".");
            n.push(p);
        }
        self.parent.join(n)
    }

    /// A fresh staging directory beside the bundle (parents created as needed, and removed
    /// again if the staging directory is dropped uncommitted while they are empty).
    pub fn stage(&self) -> Result<Staging, IssueError> {
        let created = create_parents(&self.parent)?;
        let dir = self.sibling(&[&format!("tmp-{}-{}", std::process::id(), unique())]);
        let made = fs::DirBuilder::new()
            .mode(0o755)
            .create(&dir)
            .and_then(|()| fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)));
        let staging = Staging {
            bundle: self.clone(),
            dir,
            created,
            committed: false,
        };
        made.map_err(|source| io_err(&staging.dir, source))?;
        Ok(staging)
    }

    /// The version the stable link points to: `Some(n)` for `.name.vN`, `None` when there is
    /// no link (nothing yet, or a real directory from an older certfleet).
    fn current_version(&self) -> Option<u64> {
        let target = fs::read_link(&self.stable).ok()?;
        version_of(&self.name, target.file_name()?)
    }
}

/// A staging directory; [`Staging::commit`] swaps it in, dropping it removes it.
#[derive(Debug)]
pub struct Staging {
    bundle: BundleDir,
    dir: PathBuf,
    created: Vec<PathBuf>,
    committed: bool,
}

impl Staging {
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Where a key generated for this bundle goes ([`KeyOutput::InStaging`]).
    pub fn key_path(&self) -> PathBuf {
        self.dir.join(PRIVKEY_FILE)
    }

    /// Writes the bundle's files, syncs them and swaps the bundle in. Returns the stable
    /// path.
    pub fn commit(
        self,
        issued: &IssuedCertificate,
        key: KeyOutput<'_>,
        meta: &CertificateMeta,
    ) -> Result<PathBuf, IssueError> {
        let leaf = issued.chain.leaf_pem();
        let issuers = issued.chain.issuer_chain_pem();
        self.commit_pems(&leaf, &issuers, key, meta)
    }

    /// [`Staging::commit`] from the PEM texts (a bundle read back from a fleet's store).
    /// [`KeyOutput::InStaging`] expects `privkey.pem` written into [`Staging::key_path`].
    pub fn commit_pems(
        mut self,
        leaf: &str,
        issuers: &str,
        key: KeyOutput<'_>,
        meta: &CertificateMeta,
    ) -> Result<PathBuf, IssueError> {
        self.fill_pems(leaf, issuers, key, meta)?;
        self.publish()
    }

    /// [`Staging::commit`] in two steps: the files written and synced under the staging
    /// name, published later by [`Staging::publish`] (a fleet publishes only after its
    /// fenced store write; dropped unpublished, nothing appears at the stable path).
    pub fn fill(
        &mut self,
        issued: &IssuedCertificate,
        key: KeyOutput<'_>,
        meta: &CertificateMeta,
    ) -> Result<(), IssueError> {
        let leaf = issued.chain.leaf_pem();
        let issuers = issued.chain.issuer_chain_pem();
        self.fill_pems(&leaf, &issuers, key, meta)
    }

    fn fill_pems(
        &mut self,
        leaf: &str,
        issuers: &str,
        key: KeyOutput<'_>,
        meta: &CertificateMeta,
    ) -> Result<(), IssueError> {
        let dir = self.dir.clone();
        let mut files = FileBatch::default();
        match key {
            KeyOutput::InStaging => {
                if !self.key_path().exists() {
                    return Err(IssueError::InvalidRequest(format!(
                        "{}: the new key is missing from the staging directory",
                        self.key_path().display()
                    )));
                }
            }
            KeyOutput::LinkFrom(src) => link_or_copy(src, &self.key_path())?,
            KeyOutput::Reference(r) => files.write(
                dir.join(KEY_REF_FILE),
                format!("{r}\n").as_bytes(),
                r.file_mode(),
            )?,
        }
        files.write(dir.join(CERT_FILE), leaf.as_bytes(), 0o644)?;
        files.write(dir.join(CHAIN_FILE), issuers.as_bytes(), 0o644)?;
        files.write(
            dir.join(FULLCHAIN_FILE),
            format!("{leaf}{issuers}").as_bytes(),
            0o644,
        )?;
        let json = serde_json::to_vec_pretty(meta)
            .map_err(|e| io_err(&dir.join(META_FILE), io::Error::other(e)))?;
        // Holds the key reference (PIN redacted): 0600 for a token key.
        files.write(dir.join(META_FILE), &json, meta.key_ref.file_mode())?;
        files.sync()?;
        sync_dir(&dir)?;
        Ok(())
    }

    /// Swaps the filled staging directory in; returns the stable path.
    pub fn publish(mut self) -> Result<PathBuf, IssueError> {
        self.swap_in()?;
        self.committed = true;
        Ok(self.bundle.stable.clone())
    }

    fn swap_in(&self) -> Result<(), IssueError> {
        let b = &self.bundle;
        let current = b.current_version();
        let next = current.map_or(1, |n| n + 1);
        let version = b.sibling(&[&format!("v{next}")]);
        if version.exists() {
            // Left by a run killed between this rename and the swap: nothing points to it.
            fs::remove_dir_all(&version).map_err(|e| io_err(&version, e))?;
        }
        fs::rename(&self.dir, &version).map_err(|e| io_err(&version, e))?;
        let link = b.sibling(&[&format!("link-{}-{}", std::process::id(), unique())]);
        let target = version.file_name().unwrap_or(OsStr::new(""));
        symlink(target, &link).map_err(|e| io_err(&link, e))?;
        let legacy = fs::symlink_metadata(&b.stable).is_ok_and(|m| m.is_dir());
        if legacy {
            // A real directory written by an older certfleet: exchange it with the link in
            // one step, then keep it as the previous version.
            exchange(&link, &b.stable)?;
            let previous = b.sibling(&["v0"]);
            let kept = if previous.exists() {
                fs::remove_dir_all(&link)
            } else {
                fs::rename(&link, &previous)
            };
            kept.map_err(|e| io_err(&link, e))?;
        } else if let Err(e) = fs::rename(&link, &b.stable) {
            let _ = fs::remove_file(&link);
            return Err(io_err(&b.stable, e));
        }
        sync_dir(&b.parent)?;
        if let Some(old) = current.and_then(|c| c.checked_sub(1)) {
            let stale = b.sibling(&[&format!("v{old}")]);
            if let Err(e) = fs::remove_dir_all(&stale)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!("could not remove {}: {e}", stale.display());
            }
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        if let Err(e) = fs::remove_dir_all(&self.dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!("could not remove {}: {e}", self.dir.display());
        }
        for d in self.created.iter().rev() {
            // Only while empty: something else may have been put there meanwhile.
            let _ = fs::remove_dir(d);
        }
    }
}

/// Removes what killed writers left in `parent`: staging directories, links and
/// temporary files (of `certfleet_keys::fs::write_atomic` too) whose process is gone, and version directories no bundle link points to (keeping each
/// bundle's current and previous version). Returns how many entries were removed.
pub fn sweep(parent: &Path) -> Result<usize, IssueError> {
    let entries = match fs::read_dir(parent) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err(parent, e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|e| io_err(parent, e))?;
        let file_name = entry.file_name();
        let Some(leftover) = Leftover::parse(file_name.as_bytes()) else {
            continue;
        };
        let stale = match leftover {
            Leftover::Writer { pid } => !process_alive(pid),
            Leftover::Version { name, n } => {
                let bundle = BundleDir {
                    stable: parent.join(OsStr::from_bytes(name)),
                    parent: parent.to_owned(),
                    name: OsStr::from_bytes(name).to_owned(),
                };
                let current = bundle.current_version();
                // Only directories that are certificate bundles, never a user's own.
                !current.is_some_and(|c| n == c || n + 1 == c)
                    && entry.path().join(META_FILE).exists()
            }
        };
        if stale {
            let path = entry.path();
            let outcome = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            match outcome {
                Ok(()) => {
                    tracing::debug!("removed {} left by an interrupted run", path.display());
                    removed += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path, e)),
            }
        }
    }
    Ok(removed)
}

/// A leftover candidate: `.NAME.tmp-PID-N` / `.NAME.link-PID-N`, or `.NAME.vN`.
enum Leftover<'a> {
    Writer { pid: u32 },
    Version { name: &'a [u8], n: u64 },
}

impl<'a> Leftover<'a> {
    fn parse(file_name: &'a [u8]) -> Option<Leftover<'a>> {
        let rest = file_name.strip_prefix(b".")?;
        let dot = rest.iter().rposition(|b| *b == b'.')?;
        let (name, tail) = (&rest[..dot], std::str::from_utf8(&rest[dot + 1..]).ok()?);
        if name.is_empty() {
            return None;
        }
        if let Some(v) = tail.strip_prefix('v') {
            return Some(Leftover::Version {
                name,
                n: v.parse().ok()?,
            });
        }
        let writer = tail
            .strip_prefix("tmp-")
            .or_else(|| tail.strip_prefix("link-"))?;
        let (pid, n) = writer.split_once('-')?;
        // Ours count in decimal; `certfleet_keys::fs::write_atomic` names its temporary
        // files `.NAME.tmp-PID-HEX`.
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(Leftover::Writer {
            pid: pid.parse().ok()?,
        })
    }
}

fn version_of(name: &OsStr, file_name: &OsStr) -> Option<u64> {
    match Leftover::parse(file_name.as_bytes())? {
        Leftover::Version { name: n, n: v } if n == name.as_bytes() => Some(v),
        _ => None,
    }
}

fn process_alive(pid: u32) -> bool {
    pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists()
}

fn unique() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Creates `dir` and its missing parents (0755); returns those it created, outermost first.
fn create_parents(dir: &Path) -> Result<Vec<PathBuf>, IssueError> {
    let mut missing = Vec::new();
    let mut d = Some(dir);
    while let Some(p) = d {
        if p.exists() {
            break;
        }
        missing.push(p.to_owned());
        d = p.parent();
    }
    missing.reverse();
    for p in &missing {
        match fs::DirBuilder::new().mode(0o755).create(p) {
            // Exactly 0755 whatever the umask: web servers running as another user read
            // certificates from here.
            Ok(()) => fs::set_permissions(p, fs::Permissions::from_mode(0o755))
                .map_err(|e| io_err(p, e))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(p, e)),
        }
    }
    // A symlinked or other-writable output directory is refused (someone else could swap
    // what we write into).
    certfleet_fs::ensure_dir(dir, 0o755).map_err(|e| io_err(dir, e.into()))?;
    Ok(missing)
}

/// Files written together and then made durable together: each is still `fsync`ed before
/// the caller syncs the directory and publishes it, but the writeback of all of them is
/// started first, so a file system that syncs a new file's directory and inode block with it
/// (ext4) writes those once for the whole bundle instead of once per file.
#[derive(Default)]
struct FileBatch {
    written: Vec<(PathBuf, File)>,
}

impl FileBatch {
    fn write(&mut self, path: PathBuf, bytes: &[u8], mode: u32) -> Result<(), IssueError> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        f.write_all(bytes).map_err(|e| io_err(&path, e))?;
        self.written.push((path, f));
        Ok(())
    }

    fn sync(self) -> Result<(), IssueError> {
        for (path, f) in &self.written {
            // Only a hint: a file system that refuses it loses the head start, not the
            // durability, and the `fsync` below reports any write that failed.
            if let Err(e) = start_writeback(f) {
                tracing::debug!("{}: no early writeback: {e}", path.display());
            }
        }
        for (path, f) in &self.written {
            f.sync_all().map_err(|e| io_err(path, e))?;
        }
        Ok(())
    }
}

/// `sync_file_range(SYNC_FILE_RANGE_WRITE)`: queues the file's dirty pages for writeback
/// without waiting. Only a head start: durability still comes from the `fsync` after it.
fn start_writeback(f: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor; offset 0 and length 0 mean the whole file.
    let rc = unsafe { libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn write_synced(path: &Path, bytes: &[u8], mode: u32) -> Result<(), IssueError> {
    let mut files = FileBatch::default();
    files.write(path.to_owned(), bytes, mode)?;
    files.sync()
}

fn link_or_copy(src: &Path, dst: &Path) -> Result<(), IssueError> {
    match fs::hard_link(src, dst) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(io_err(src, e)),
        Err(_) => {
            let bytes = fs::read(src).map_err(|e| io_err(src, e))?;
            write_synced(dst, &bytes, 0o600)
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), IssueError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, e))
}

/// `renameat2(RENAME_EXCHANGE)`: both paths exist before and after, swapped atomically.
fn exchange(a: &Path, b: &Path) -> Result<(), IssueError> {
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|e| io_err(p, io::Error::new(io::ErrorKind::InvalidInput, e)))
    };
    let (ca, cb) = (c(a)?, c(b)?);
    // SAFETY: both arguments are valid NUL-terminated paths that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io_err(b, io::Error::last_os_error()))
    }
}

fn io_err(path: &Path, source: io::Error) -> IssueError {
    IssueError::Io {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests;
