//! Filesystem trust rules, each in one place:
//! - [`TrustedLibrary`]: a shared library (DNS-01 plugin, PKCS#11 module) is loaded only if
//!   the file and every directory above it are owned by root or the running user and not
//!   writable by group or others (sticky directories aside), and it is loaded from the very
//!   descriptor that was checked (`/proc/self/fd/N`), so nothing can swap it in between;
//! - [`ensure_dir`] and [`open_private_file`]: state and output directories and files are
//!   created with an explicit mode (never the umask's), never through a symbolic link, and
//!   refused when others could write them;
//! - [`Beneath`]: a directory below a root reached without following symbolic links (the
//!   webroot's `.well-known/acme-challenge`), and files in it created `O_EXCL|O_NOFOLLOW`.
//!
//! Linux/Unix only, like the rest of certfleet's filesystem handling.

mod beneath;
mod owner;
mod private;
mod trusted;

use std::path::PathBuf;

pub use beneath::Beneath;
pub use owner::describe_owner;
pub use private::{ensure_dir, open_private_file, prepare_database_file, refuse_symlinks};
pub use trusted::TrustedLibrary;

/// Why a path was refused or could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FsError {
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A library whose file or directories someone other than root or us could change.
    #[error(
        "refusing to load {}: {what} {} {problem}; anyone who can change it could run code as this process (uid {euid})",
        .library.display(), .path.display()
    )]
    UntrustedLibrary {
        library: PathBuf,
        /// `file` or `directory`.
        what: &'static str,
        path: PathBuf,
        /// e.g. `is owned by uid 65534 (nobody), not by root or the running user` or
        /// `has mode 0777 (writable by group or others, not sticky)`.
        problem: String,
        euid: u32,
    },
    #[error("{} is a symbolic link; certfleet does not follow symbolic links here: {hint}", .path.display())]
    Symlink { path: PathBuf, hint: &'static str },
    #[error(
        "{} has mode {mode:04o}: writable by others, so anyone could replace what certfleet keeps there; chmod o-w it (or use another directory)",
        .path.display()
    )]
    OtherWritable { path: PathBuf, mode: u32 },
    #[error("{} is not a {expected}", .path.display())]
    WrongType {
        path: PathBuf,
        expected: &'static str,
    },
}

/// For callers whose errors carry an `io::Error` and the path already: the underlying I/O
/// error, or the refusal as an error of its own.
impl From<FsError> for std::io::Error {
    fn from(e: FsError) -> std::io::Error {
        match e {
            FsError::Io { source, .. } => source,
            other => std::io::Error::other(other),
        }
    }
}

impl FsError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> FsError {
        let path = path.into();
        move |source| FsError::Io { path, source }
    }
}

/// The effective user id of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests;
