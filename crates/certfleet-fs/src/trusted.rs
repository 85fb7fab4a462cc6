//! Shared libraries we run code from: plugins and PKCS#11 modules.

use std::fs::File;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::{FsError, describe_owner, euid};

/// Group- or other-writable permission bits.
const GROUP_OTHER_WRITE: u32 = 0o022;
const STICKY: u32 = 0o1000;

/// A library file, open, that passed the trust checks. Load it with
/// [`TrustedLibrary::load_and_keep`]: the loader is given `/proc/self/fd/N`, so it maps
/// exactly the file that was checked, whatever happens to its name meanwhile.
#[derive(Debug)]
pub struct TrustedLibrary {
    file: File,
    real_path: PathBuf,
}

impl TrustedLibrary {
    /// Opens `path` and checks it: a regular file, owned by root or the running user and
    /// not writable by group or others, in directories (every one up to `/`) that are owned
    /// by root or the running user and not writable by group or others unless sticky.
    pub fn open(path: &Path) -> Result<TrustedLibrary, FsError> {
        let file = File::open(path).map_err(FsError::io(path))?;
        let meta = file.metadata().map_err(FsError::io(path))?;
        if !meta.is_file() {
            return Err(FsError::WrongType {
                path: path.to_owned(),
                expected: "regular file",
            });
        }
        let fd_path = fd_path(&file);
        // The name the kernel has for what we opened: symlinks resolved, so the directories
        // checked below are the ones that actually hold the file.
        let real_path = std::fs::read_link(&fd_path).map_err(FsError::io(path))?;
        let untrusted = |what, at: &Path, problem| FsError::UntrustedLibrary {
            library: path.to_owned(),
            what,
            path: at.to_owned(),
            problem,
            euid: euid(),
        };
        if let Some(problem) = problem(meta.uid(), meta.mode(), false) {
            return Err(untrusted("file", &real_path, problem));
        }
        for dir in real_path.ancestors().skip(1) {
            let m = std::fs::symlink_metadata(dir).map_err(FsError::io(dir))?;
            if let Some(problem) = problem(m.uid(), m.mode(), true) {
                return Err(untrusted("directory", dir, problem));
            }
        }
        Ok(TrustedLibrary { file, real_path })
    }

    /// Runs `load` (`dlopen`, or a library that calls it) on `/proc/self/fd/N`. When it
    /// succeeds the descriptor stays open for the life of the process: dlopen knows a loaded
    /// library by its path name, so were the number reused, the next library loaded through
    /// it would be handed this one. When it fails the descriptor is closed.
    pub fn load_and_keep<T, E>(self, load: impl FnOnce(&Path) -> Result<T, E>) -> Result<T, E> {
        let loaded = load(&self.load_path())?;
        let _kept_open_for_the_loader = self.file.into_raw_fd();
        Ok(loaded)
    }

    /// `/proc/self/fd/N` for the checked descriptor.
    pub(crate) fn load_path(&self) -> PathBuf {
        fd_path(&self.file)
    }

    /// The file's real path (symlinks resolved), for messages and registries.
    pub fn real_path(&self) -> &Path {
        &self.real_path
    }
}

fn fd_path(file: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// What is wrong with an owner and mode, if anything.
fn problem(uid: u32, mode: u32, is_dir: bool) -> Option<String> {
    if uid != 0 && uid != euid() {
        return Some(format!(
            "is owned by {}, not by root or the running user",
            describe_owner(uid)
        ));
    }
    let sticky_dir = is_dir && mode & STICKY != 0;
    if mode & GROUP_OTHER_WRITE != 0 && !sticky_dir {
        return Some(format!(
            "has mode {:04o} (owner {}): writable by group or others; chmod go-w it",
            mode & 0o7777,
            describe_owner(uid)
        ));
    }
    None
}
