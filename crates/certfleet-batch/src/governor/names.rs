//! Names as the rate limits see them: exact name sets and registered domains.

use std::collections::BTreeSet;
use std::fmt;

use sha2::{Digest, Sha256};

use crate::gcra::BucketKey;

/// Longest name-set key stored verbatim; longer sets are keyed by their SHA-256.
const MAX_VERBATIM_KEY: usize = 256;

/// The exact set of names of a certificate: lowercased, without a trailing dot, sorted and
/// deduplicated (`b.example, A.example.` and `a.example, b.example` are one set).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NameSet(Vec<String>);

impl NameSet {
    pub fn new<I, S>(names: I) -> NameSet
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let set: BTreeSet<String> = names
            .into_iter()
            .map(|n| {
                let n = n.as_ref().trim();
                n.strip_suffix('.').unwrap_or(n).to_ascii_lowercase()
            })
            .filter(|n| !n.is_empty())
            .collect();
        NameSet(set.into_iter().collect())
    }

    pub fn names(&self) -> &[String] {
        &self.0
    }

    /// Stable key: the names joined with `,`, or `sha256:<hex>` of that for long sets.
    pub fn key(&self) -> String {
        let joined = self.0.join(",");
        if joined.len() <= MAX_VERBATIM_KEY {
            return joined;
        }
        let digest = Sha256::digest(joined.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}")
    }

    /// The distinct registered domains of the set (one token each per certificate).
    pub fn registered_domains(&self) -> BTreeSet<String> {
        self.0.iter().map(|n| registered_domain(n)).collect()
    }
}

impl fmt::Display for NameSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

/// The registered domain (eTLD+1) of a DNS name by the Public Suffix List **including its
/// private entries** (so `alice.github.io` is its own registered domain). A wildcard counts
/// as its base name; a name that is itself a public suffix counts as itself; a name under
/// an unknown TLD counts under that TLD's implicit `*` rule (`a.b.test` → `b.test`).
pub fn registered_domain(name: &str) -> String {
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    let base = name.strip_prefix("*.").unwrap_or(&name);
    match psl::domain_str(base) {
        Some(domain) => domain.to_owned(),
        None => base.to_owned(),
    }
}

/// Bucket of new orders of one account.
pub fn new_orders_key(account: &str) -> BucketKey {
    BucketKey(format!("new-orders:{account}"))
}

/// Bucket of certificates of one registered domain (all accounts).
pub fn registered_domain_key(domain: &str) -> BucketKey {
    BucketKey(format!("domain:{domain}"))
}

/// Bucket of certificates of one exact name set (all accounts).
pub fn name_set_key(set: &NameSet) -> BucketKey {
    BucketKey(format!("name-set:{}", set.key()))
}

/// Bucket of failed authorizations of one name for one account.
pub fn failed_authz_key(account: &str, name: &str) -> BucketKey {
    BucketKey(format!("failed-authz:{account}:{name}"))
}

/// Pause-only scope of new registrations (new-account).
pub fn new_registrations_key() -> BucketKey {
    BucketKey("new-registrations".to_owned())
}

/// Pause-only scope of one endpoint: scheme, host and the resource type of `url` (the
/// first path segment, or the first two for `/acme/…` paths), so a 503 on one order's
/// finalize pauses every finalize but not new orders.
pub fn endpoint_key(url: &str) -> BucketKey {
    let (origin, path) = match url.split_once("://") {
        Some((scheme, rest)) => {
            let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
            (format!("{scheme}://{host}"), path)
        }
        None => (String::new(), url.trim_start_matches('/')),
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    let mut segs = path.split('/').filter(|s| !s.is_empty());
    let kind = match segs.next() {
        Some("acme") => format!("acme/{}", segs.next().unwrap_or("")),
        Some(first) => first.to_owned(),
        None => String::new(),
    };
    BucketKey(format!("endpoint:{origin}/{kind}"))
}
