//! The exclusive run lock of the SQLite store: an advisory `flock` on `batch.lock` beside
//! the database, holding the holder's description as JSON. The kernel drops the lock when
//! the process dies, however it dies, so a killed run never leaves a stale lock.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use certfleet_store::RunHolder;
use certfleet_store::StoreError;

/// Holds the lock until dropped (closing the file releases it).
#[derive(Debug)]
pub(crate) struct RunLock {
    _file: File,
}

pub(crate) fn acquire(
    path: &Path,
    location: &str,
    holder: &RunHolder,
) -> Result<RunLock, StoreError> {
    let io = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = certfleet_fs::open_private_file(path, 0o600).map_err(|e| io(e.into()))?;
    // SAFETY: flock on a file descriptor we own and keep open; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(io(err));
        }
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(io)?;
        let holder = serde_json::from_str::<RunHolder>(&text).unwrap_or_else(|_| RunHolder {
            node: "(unknown: the holder has not written its name yet)".to_owned(),
            pid: 0,
            host: "(unknown)".to_owned(),
            started_at: time::OffsetDateTime::UNIX_EPOCH,
        });
        return Err(StoreError::Locked {
            location: location.to_owned(),
            holder: Box::new(holder),
        });
    }
    let json = serde_json::to_string(holder).map_err(|e| io(std::io::Error::other(e)))?;
    file.set_len(0).map_err(io)?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    file.write_all(json.as_bytes()).map_err(io)?;
    file.sync_data().map_err(io)?;
    Ok(RunLock { _file: file })
}
