//! One writer per certificate and per state directory: `flock(2)` on files under
//! `<state>/locks/`, taken without waiting. The holder writes who it is into the file, so
//! the process that loses can say which process holds it. The kernel drops the lock when
//! the holder exits, however it exits; the file itself stays (it is only a name).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use time::OffsetDateTime;

use crate::state::{StateDir, path_name};

/// A held lock; released on drop (the descriptor closes).
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

/// The lock of one certificate (by first name).
pub fn certificate(state: &StateDir, first_name: &str, what: &str) -> Result<Lock> {
    let path = state
        .root()
        .join("locks")
        .join(format!("cert-{}.lock", path_name(first_name)));
    acquire(&path, &format!("certificate {first_name}"), what)
}

/// The lock of the whole state directory (`renew --all`).
pub fn state_dir(state: &StateDir, what: &str) -> Result<Lock> {
    let path = state.root().join("locks").join("renew-all.lock");
    acquire(
        &path,
        &format!(
            "the state directory {} (renew --all)",
            state.root().display()
        ),
        what,
    )
}

fn acquire(path: &Path, subject: &str, what: &str) -> Result<Lock> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("opening the lock file {}", path.display()))?;
    // SAFETY: flock on a descriptor this function owns; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            bail!(
                "{subject} is locked by another certfleet run ({}); lock file {}: try again when it has finished",
                if holder.is_empty() {
                    "holder unknown"
                } else {
                    holder
                },
                path.display()
            );
        }
        return Err(err).with_context(|| format!("locking {}", path.display()));
    }
    let holder = format!(
        "pid {} on {}, `certfleet {what}`, since {}",
        std::process::id(),
        crate::context::hostname(),
        crate::logging::to_second(OffsetDateTime::now_utc())
    );
    file.set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| file.write_all(holder.as_bytes()))
        .with_context(|| format!("writing the lock holder to {}", path.display()))?;
    tracing::debug!("holding {}", path.display());
    Ok(Lock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_with_the_holder_named_and_gets_it_after_release() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::new(dir.path().to_owned());
        let first = certificate(&state, "a.test", "renew --name a.test").expect("first");
        // flock locks belong to the open file description: a second open conflicts even
        // in the same process.
        let err = certificate(&state, "a.test", "renew --force").expect_err("second");
        let text = format!("{err:#}");
        assert!(text.contains("certificate a.test is locked"), "{text}");
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert!(text.contains("renew --name a.test"), "{text}");
        // Another certificate is independent.
        let _other = certificate(&state, "b.test", "renew").expect("other cert");
        assert!(dir.path().join("locks/cert-a.test.lock").is_file());
        drop(first);
        // Free once closed, but a test beside this one that spawns a process (the deploy
        // hook tests) may have forked in between: its child holds the open file description,
        // and with it the lock, until it execs. So: free within a bound, not at once.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match certificate(&state, "a.test", "renew") {
                Ok(_) => break,
                Err(e)
                    if std::time::Instant::now() < deadline
                        && format!("{e:#}").contains("locked") =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => panic!("free again: {e:#}"),
            }
        }
    }
}
