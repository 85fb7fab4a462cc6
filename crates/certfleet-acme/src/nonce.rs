//! Anti-replay nonces ([RFC 8555 §6.5](https://www.rfc-editor.org/rfc/rfc8555#section-6.5)).
//!
//! Every response may carry a fresh `Replay-Nonce`, errors included; keeping them in a
//! small pool means `newNonce` is only asked when the pool runs dry. Nonces expire on the
//! server, so the pool is small and hands out the newest first.

use std::collections::VecDeque;
use std::sync::Mutex;

use reqwest::header::HeaderMap;

/// Default pool capacity.
pub(crate) const DEFAULT_CAPACITY: usize = 8;

/// A bounded LIFO of unused nonces, shared by every clone of a client.
#[derive(Debug)]
pub(crate) struct NoncePool {
    nonces: Mutex<VecDeque<String>>,
    capacity: usize,
}

impl NoncePool {
    pub(crate) fn new(capacity: usize) -> NoncePool {
        NoncePool {
            nonces: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<String>> {
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
        q.push_back(nonce);
    }

    /// Takes the newest nonce.
    pub(crate) fn take(&self) -> Option<String> {
        self.lock().pop_back()
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
        let pool = NoncePool::new(3);
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
