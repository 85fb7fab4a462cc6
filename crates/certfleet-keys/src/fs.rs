//! Crash-safe file writes for keys and certificates.
//!
//! A reader (or a crash at any moment) sees either the old file or the complete new one,
//! never a truncated mix: the bytes go to a temporary file in the same directory, which is
//! created with its final mode (so it is never briefly world-readable), flushed to disk, and
//! then moved over the target; the directory is synced so the rename itself is durable.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rand_core::{OsRng, RngCore};

/// Writes `bytes` to `path` atomically, replacing any existing file; the file ends up with
/// exactly `mode` (Unix permission bits, e.g. `0o600` for keys, `0o644` for certificates).
///
/// On error the target is untouched and the temporary file is removed.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    write_with(path, mode, Replace::Yes, |f| f.write_all(bytes))
}

/// Like [`write_atomic`] but never replaces an existing file: fails with
/// [`io::ErrorKind::AlreadyExists`] if `path` exists (checked atomically where the
/// filesystem supports hard links, which all usual Unix filesystems do).
pub fn write_atomic_new(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    write_with(path, mode, Replace::No, |f| f.write_all(bytes))
}

/// Creates `dir` and any missing parents with `mode` (e.g. `0o700` for key directories).
/// Directories that already exist keep their mode.
pub fn create_dir_all(dir: &Path, mode: u32) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, mode);
    #[cfg(not(unix))]
    let _ = mode;
    builder.create(dir)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Replace {
    Yes,
    No,
}

/// The write path shared by the public functions; `fill` writes the content so tests can
/// inject a failure half-way through.
fn write_with(
    path: &Path,
    mode: u32,
    replace: Replace,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} does not name a file", path.display()),
        )
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if replace == Replace::No && path.symlink_metadata().is_ok() {
        return Err(already_exists(path));
    }

    let tmp = dir.join(format!(
        ".{}.tmp-{}-{:016x}",
        name.to_string_lossy(),
        std::process::id(),
        OsRng.next_u64()
    ));
    let mut file = open_new(&tmp, mode)?;
    // From here on the temporary file exists: remove it on every error path.
    let result = (|| {
        set_exact_mode(&file, mode)?;
        fill(&mut file)?;
        file.sync_all()?;
        drop(file);
        match replace {
            Replace::Yes => std::fs::rename(&tmp, path),
            Replace::No => link_new(&tmp, path),
        }
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(&dir)
}

fn already_exists(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("{} already exists", path.display()),
    )
}

/// Moves `tmp` to `path` unless `path` exists. `link` fails atomically with EEXIST, unlike
/// `rename`, which silently replaces.
fn link_new(tmp: &Path, path: &Path) -> io::Result<()> {
    match std::fs::hard_link(tmp, path) {
        Ok(()) => std::fs::remove_file(tmp),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(already_exists(path)),
        Err(_) => {
            // A filesystem without hard links (some FUSE, FAT): fall back to a checked
            // rename. The window between check and rename is tiny and only matters if two
            // processes create the same key file at once.
            if path.symlink_metadata().is_ok() {
                return Err(already_exists(path));
            }
            std::fs::rename(tmp, path)
        }
    }
}

#[cfg(unix)]
fn open_new(path: &Path, mode: u32) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    // create_new = O_CREAT|O_EXCL: never follows a planted symlink, never reuses a file.
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
}

#[cfg(not(unix))]
fn open_new(path: &Path, _mode: u32) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).open(path)
}

/// The creation mode is filtered by the umask; set it exactly so a `0o644` certificate is
/// readable even under `umask 077` (restricting further is the caller's choice of `mode`).
#[cfg(unix)]
fn set_exact_mode(file: &File, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_exact_mode(_file: &File, _mode: u32) -> io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests;
