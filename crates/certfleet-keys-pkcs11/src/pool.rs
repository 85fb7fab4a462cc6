//! A pool of PKCS#11 sessions on one token.
//!
//! A cryptoki `Session` is `Send` but not `Sync`: one operation at a time. The pool keeps
//! idle sessions in a `Mutex<Vec<Session>>`, bounds concurrent operations with a semaphore
//! of `size` permits, opens sessions on demand up to that size, and runs every PKCS#11 call
//! on Tokio's blocking pool. A session that fails because it was closed is dropped, not
//! returned, so the next operation opens a fresh one.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use tokio::sync::Semaphore;

/// What the pool has done so far, to show that concurrent signers do not queue behind one
/// session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Most operations allowed at once (semaphore permits).
    pub size: usize,
    /// Sessions opened over the pool's life (replacements of closed sessions included).
    pub sessions_opened: u64,
    /// Sessions open right now (idle or in use).
    pub sessions_open: usize,
    /// Operations holding a session right now.
    pub in_use: usize,
    /// Most operations that ever held a permit at the same moment.
    pub peak_in_use: usize,
    /// Most sessions that ever ran a PKCS#11 call at the same moment: 2 or more proves
    /// that signing did not serialize behind one session.
    pub peak_busy: usize,
    /// Operations that had to wait because every permit was taken.
    pub waited: u64,
    /// Operations run.
    pub operations: u64,
}

#[derive(Debug)]
pub(crate) struct SessionPool {
    pkcs11: Pkcs11,
    slot: Slot,
    size: usize,
    idle: Mutex<Vec<Session>>,
    permits: Semaphore,
    opened: AtomicU64,
    open: AtomicUsize,
    in_use: AtomicUsize,
    peak_in_use: AtomicUsize,
    busy: AtomicUsize,
    peak_busy: AtomicUsize,
    waited: AtomicU64,
    operations: AtomicU64,
}

/// Errors that mean the session itself is gone: drop it rather than return it.
pub(crate) fn session_gone(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent,
            _
        )
    )
}

impl SessionPool {
    pub(crate) fn new(pkcs11: Pkcs11, slot: Slot, size: usize) -> SessionPool {
        let size = size.max(1);
        SessionPool {
            pkcs11,
            slot,
            size,
            idle: Mutex::new(Vec::with_capacity(size)),
            permits: Semaphore::new(size),
            opened: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            in_use: AtomicUsize::new(0),
            peak_in_use: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            peak_busy: AtomicUsize::new(0),
            waited: AtomicU64::new(0),
            operations: AtomicU64::new(0),
        }
    }

    pub(crate) fn stats(&self) -> PoolStats {
        PoolStats {
            size: self.size,
            sessions_opened: self.opened.load(Ordering::Relaxed),
            sessions_open: self.open.load(Ordering::Relaxed),
            in_use: self.in_use.load(Ordering::Relaxed),
            peak_in_use: self.peak_in_use.load(Ordering::Relaxed),
            peak_busy: self.peak_busy.load(Ordering::Relaxed),
            waited: self.waited.load(Ordering::Relaxed),
            operations: self.operations.load(Ordering::Relaxed),
        }
    }

    /// Drops every idle session (after the token logged out or closed them).
    pub(crate) fn discard_idle(&self) {
        let dropped = std::mem::take(&mut *lock(&self.idle));
        self.open.fetch_sub(dropped.len(), Ordering::Relaxed);
    }

    /// Closes every idle session (at shutdown); returns how many.
    pub(crate) fn close_idle(&self) -> usize {
        let sessions = std::mem::take(&mut *lock(&self.idle));
        self.open.fetch_sub(sessions.len(), Ordering::Relaxed);
        let mut closed = 0;
        for session in sessions {
            match session.close() {
                Ok(()) => closed += 1,
                Err(e) => tracing::warn!("C_CloseSession failed: {e}"),
            }
        }
        closed
    }

    /// Runs `op` on a session of this pool, on the blocking thread pool.
    ///
    /// The permit is held by this future (not the blocking task) until the result is back,
    /// so `in_use` counts exactly the operations that own a session.
    pub(crate) async fn run<T, F>(self: &Arc<Self>, op: F) -> Result<Result<T, CkError>, String>
    where
        T: Send + 'static,
        F: FnOnce(&Session) -> Result<T, CkError> + Send + 'static,
    {
        let _permit = match self.permits.try_acquire() {
            Ok(p) => p,
            Err(_) => {
                self.waited.fetch_add(1, Ordering::Relaxed);
                self.permits
                    .acquire()
                    .await
                    .map_err(|_| "the session pool is closed".to_owned())?
            }
        };
        let now = self.in_use.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_in_use.fetch_max(now, Ordering::Relaxed);
        let _in_use = InUse(&self.in_use);
        let pool = Arc::clone(self);
        let task = tokio::task::spawn_blocking(move || pool.run_blocking(op));
        task.await.map_err(|e| e.to_string())
    }

    fn run_blocking<T>(
        &self,
        op: impl FnOnce(&Session) -> Result<T, CkError>,
    ) -> Result<T, CkError> {
        let session = match lock(&self.idle).pop() {
            Some(s) => s,
            None => {
                let s = self.pkcs11.open_ro_session(self.slot)?;
                self.opened.fetch_add(1, Ordering::Relaxed);
                self.open.fetch_add(1, Ordering::Relaxed);
                s
            }
        };
        self.operations.fetch_add(1, Ordering::Relaxed);
        let busy = self.busy.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_busy.fetch_max(busy, Ordering::Relaxed);
        let result = op(&session);
        self.busy.fetch_sub(1, Ordering::Relaxed);
        match &result {
            Err(e) if session_gone(e) => {
                // Sessions die together (C_CloseAllSessions, token removed): drop the idle
                // ones too so the retry opens a fresh session.
                self.open.fetch_sub(1, Ordering::Relaxed);
                tracing::debug!("dropping PKCS#11 sessions that are gone: {e}");
                drop(session);
                self.discard_idle();
            }
            _ => lock(&self.idle).push(session),
        }
        result
    }
}

/// Decrements the in-use count when the operation's future completes or is dropped.
struct InUse<'a>(&'a AtomicUsize);

impl Drop for InUse<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Locks a mutex; a poisoned lock still guards valid data (sessions or flags).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
