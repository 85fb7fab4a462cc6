//! State and output directories and the files certfleet keeps in them.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::FsError;

const OTHER_WRITE: u32 = 0o002;
const STICKY: u32 = 0o1000;

/// Makes sure `dir` is a directory certfleet can keep things in, creating it (and missing
/// parents) with exactly `mode` (`0o700` for state, `0o755` for certificates a web server
/// reads), whatever the umask. An existing `dir` keeps its mode but is refused when it is a
/// symbolic link, not a directory, or writable by others (without the sticky bit).
pub fn ensure_dir(dir: &Path, mode: u32) -> Result<(), FsError> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) => check_dir(dir, &meta),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let created = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(mode)
                .create(dir);
            created.map_err(FsError::io(dir))?;
            // The umask may have removed bits the caller asked for (0755 under umask 077);
            // set exactly what was asked.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
                .map_err(FsError::io(dir))?;
            let meta = std::fs::symlink_metadata(dir).map_err(FsError::io(dir))?;
            check_dir(dir, &meta)
        }
        Err(e) => Err(FsError::io(dir)(e)),
    }
}

fn check_dir(dir: &Path, meta: &std::fs::Metadata) -> Result<(), FsError> {
    if meta.file_type().is_symlink() {
        return Err(FsError::Symlink {
            path: dir.to_owned(),
            hint: "name the real directory instead",
        });
    }
    if !meta.is_dir() {
        return Err(FsError::WrongType {
            path: dir.to_owned(),
            expected: "directory",
        });
    }
    let mode = meta.mode();
    if mode & OTHER_WRITE != 0 && mode & STICKY == 0 {
        return Err(FsError::OtherWritable {
            path: dir.to_owned(),
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

/// Opens (creating if needed) a file certfleet owns, such as the batch database or its run
/// lock, read-write, never through a symbolic link (`O_NOFOLLOW`), and leaves it with
/// exactly `mode` (an existing file with looser permissions is tightened).
pub fn open_private_file(path: &Path, mode: u32) -> Result<File, FsError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                FsError::Symlink {
                    path: path.to_owned(),
                    hint: "someone planted it; remove it (certfleet creates this file itself)",
                }
            } else {
                FsError::io(path)(e)
            }
        })?;
    let meta = file.metadata().map_err(FsError::io(path))?;
    if !meta.is_file() {
        return Err(FsError::WrongType {
            path: path.to_owned(),
            expected: "regular file",
        });
    }
    if meta.mode() & 0o7777 != mode {
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(FsError::io(path))?;
    }
    Ok(file)
}

/// Refuses any of `paths` that is a symbolic link (paths that do not exist are fine): for
/// files another library creates, such as SQLite's `-wal` and `-shm` beside a database.
pub fn refuse_symlinks<P: AsRef<Path>>(paths: &[P]) -> Result<(), FsError> {
    for path in paths {
        let path = path.as_ref();
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(FsError::Symlink {
                path: path.to_owned(),
                hint: "someone planted it; remove it (certfleet creates this file itself)",
            });
        }
    }
    Ok(())
}

/// Prepares a database file another library (SQLite) will open: creates it 0600 without
/// following a symlink (an existing looser one is tightened) and refuses symlinks at its
/// companion files (`<db>-wal`, `<db>-shm`, `<db>-journal`). The library should still open
/// it with its own no-follow flag.
pub fn prepare_database_file(db: &Path) -> Result<(), FsError> {
    drop(open_private_file(db, 0o600)?);
    let companion = |suffix: &str| {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        std::path::PathBuf::from(p)
    };
    refuse_symlinks(&[companion("-wal"), companion("-shm"), companion("-journal")])
}
