//! Anti-replay nonces ([RFC 8555 §6.5](https://www.rfc-editor.org/rfc/rfc8555#section-6.5)).
//!
//! Every response may carry a fresh `Replay-Nonce`, errors included; keeping them in a
//! pool means `newNonce` is only asked when the pool runs dry. Nonces expire on the
//! server, so the pool hands out the newest first and forgets nonces older than
//! [`MAX_AGE`].
//!
//! The capacity is sized for a batch: each order in flight leaves its response's nonce
//! here while it does local work (a store write, a key) before its next request, so a
//! pool smaller than the number of orders in flight drops nonces it then has to ask
//! `newNonce` for again (with 8, one `HEAD newNonce` per 1.4 certificates at 32 orders).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;

/// Default pool capacity: above any sane number of orders in flight on one account.
pub(crate) const DEFAULT_CAPACITY: usize = 512;

/// Nonces kept longer are dropped unused: well inside what CAs accept (Boulder's nonces
/// survive minutes under load), so a pool that sat idle does not answer with `badNonce`s.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(60);

/// A bounded LIFO of unused nonces, shared by every clone of a client.
#[derive(Debug)]
pub(crate) struct NoncePool {
    nonces: Mutex<VecDeque<(Instant, String)>>,
    capacity: usize,
    max_age: Duration,
}

impl NoncePool {
    pub(crate) fn new(capacity: usize, max_age: Duration) -> NoncePool {
        NoncePool {
            nonces: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            max_age,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(Instant, String)>> {
        // A panic while holding the lock cannot leave the deque inconsistent (every
        // operation is a single push or pop), so a poisoned lock is still usable.
        self.nonces.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a nonce, dropping the oldest when full.
    pub(crate) fn push(&self, nonce: String) {
        let mut q = self.lock();
        if q.len() >= self.capacity {
            q.pop_front();
        }
        q.push_back((Instant::now(), nonce));
    }

    /// Takes the newest nonce; when that one is too old, so are all the others.
    pub(crate) fn take(&self) -> Option<String> {
        let mut q = self.lock();
        let (born, nonce) = q.pop_back()?;
        if born.elapsed() > self.max_age {
            q.clear();
            return None;
        }
        Some(nonce)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// The response's `Replay-Nonce`, if present and well formed. RFC 8555 §6.5.1: the value
/// is base64url; clients MUST ignore invalid values.
pub(crate) fn replay_nonce(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("replay-nonce")?.to_str().ok()?.trim();
    let valid = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    valid.then(|| value.to_owned())
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn pool_is_bounded_and_newest_first() {
        let pool = NoncePool::new(3, MAX_AGE);
        for n in ["a", "b", "c", "d"] {
            pool.push(n.to_owned());
        }
        assert_eq!(pool.len(), 3);
        assert_eq!(pool.take().as_deref(), Some("d"));
        assert_eq!(pool.take().as_deref(), Some("c"));
        assert_eq!(pool.take().as_deref(), Some("b"));
        assert_eq!(pool.take(), None);
    }

    #[test]
    fn stale_nonces_are_forgotten() {
        let pool = NoncePool::new(4, Duration::from_millis(1));
        pool.push("old".to_owned());
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(pool.take(), None, "a nonce past its age is not handed out");
        assert_eq!(pool.len(), 0);
        pool.push("new".to_owned());
        assert_eq!(pool.take().as_deref(), Some("new"));
    }

    #[test]
    fn replay_nonce_must_be_base64url() {
        let mut h = HeaderMap::new();
        assert_eq!(replay_nonce(&h), None);
        h.insert(
            "Replay-Nonce",
            HeaderValue::from_static("oFvnlFP1wIhRlYS2jTaXbA"),
        );
        assert_eq!(replay_nonce(&h).as_deref(), Some("oFvnlFP1wIhRlYS2jTaXbA"));
        h.insert("Replay-Nonce", HeaderValue::from_static("not/base64+url="));
        assert_eq!(replay_nonce(&h), None);
        h.insert("Replay-Nonce", HeaderValue::from_static(""));
        assert_eq!(replay_nonce(&h), None);
    }
}
