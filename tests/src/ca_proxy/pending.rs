//! Pending authorizations per account, as the CA double sees them: an authorization of a
//! created `pending` order counts from the newOrder answer until an answer shows it (or
//! its order) decided. Let's Encrypt refuses new orders beyond 300 per account ("too many
//! currently pending authorizations"); the proxy records the highest count and refuses
//! alike when [`super::ProxyLimits::pending_authorizations_per_account`] is set.
//!
//! The count is the client's view (an order polled late stays pending here a little longer
//! than at Pebble), so it is an upper bound of what Pebble holds: a client that keeps it
//! under the limit keeps the real count under it too.

use std::collections::HashMap;

use serde_json::Value;

/// Pending authorizations by path, and their account.
#[derive(Debug, Default)]
pub(crate) struct PendingAuthorizations {
    /// Authorization path → account (`kid`).
    owner: HashMap<String, String>,
    per_account: HashMap<String, u64>,
    /// Highest count of any account so far.
    pub(crate) max: u64,
}

fn path_of(url: &str) -> Option<String> {
    url::Url::parse(url).ok().map(|u| u.path().to_owned())
}

fn authorization_paths(order: &Value) -> Vec<String> {
    order["authorizations"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|u| u.as_str())
                .filter_map(path_of)
                .collect()
        })
        .unwrap_or_default()
}

impl PendingAuthorizations {
    /// Pending authorizations of `account` now.
    pub(crate) fn of(&self, account: &str) -> u64 {
        self.per_account.get(account).copied().unwrap_or(0)
    }

    /// A newOrder answer (201) of `account`.
    pub(crate) fn order_created(&mut self, account: &str, order: &Value) {
        if order["status"] != "pending" {
            return;
        }
        for path in authorization_paths(order) {
            if self.owner.contains_key(&path) {
                continue; // A pending authorization reused by a second order.
            }
            self.owner.insert(path, account.to_owned());
            let n = self.per_account.entry(account.to_owned()).or_default();
            *n += 1;
            self.max = self.max.max(*n);
        }
    }

    /// Any other answer: an order that is no longer `pending` decided all its
    /// authorizations; an authorization that is no longer `pending` is decided.
    pub(crate) fn observed(&mut self, path: &str, body: &Value) {
        let Some(status) = body["status"].as_str() else {
            return;
        };
        if status == "pending" {
            return;
        }
        if body["authorizations"].is_array() {
            for p in authorization_paths(body) {
                self.decided(&p);
            }
        } else if body["identifier"].is_object() {
            self.decided(path);
        }
    }

    fn decided(&mut self, path: &str) {
        if let Some(account) = self.owner.remove(path)
            && let Some(n) = self.per_account.get_mut(&account)
        {
            *n = n.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn authorizations_count_until_their_order_or_themselves_are_decided() {
        let mut p = PendingAuthorizations::default();
        let order = |status: &str, authz: &[&str]| {
            json!({"status": status, "authorizations":
                authz.iter().map(|a| format!("https://ca.test:14000/authZ/{a}")).collect::<Vec<_>>()})
        };
        p.order_created("acct", &order("pending", &["a", "b"]));
        p.order_created("acct", &order("pending", &["c"]));
        p.order_created("other", &order("ready", &["d"]));
        assert_eq!((p.of("acct"), p.of("other"), p.max), (3, 0, 3));
        p.observed("/my-order/1", &order("pending", &["a", "b"]));
        assert_eq!(p.of("acct"), 3, "a pending order decides nothing");
        p.observed("/my-order/1", &order("ready", &["a", "b"]));
        assert_eq!(p.of("acct"), 1);
        p.observed(
            "/authZ/c",
            &json!({"status": "valid", "identifier": {"type": "dns", "value": "c.test"}}),
        );
        assert_eq!((p.of("acct"), p.max), (0, 3));
    }
}
