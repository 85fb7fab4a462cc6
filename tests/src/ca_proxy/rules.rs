//! The CA test double's rules: Let's Encrypt-style token buckets (GCRA, like Boulder), the
//! exact 429 texts, JWS peeking (account `kid`, identifiers, `replaces`, `profile`), and the
//! deterministic 503 dice.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use time::OffsetDateTime;
use time::macros::format_description;

/// `capacity` per `period`, refilled continuously (one every `period / capacity`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitSpec {
    pub capacity: u32,
    pub period: Duration,
}

impl LimitSpec {
    pub fn new(capacity: u32, period: Duration) -> LimitSpec {
        LimitSpec { capacity, period }
    }

    fn interval(&self) -> time::Duration {
        to_time(self.period / self.capacity.max(1))
    }
}

/// Limits the proxy enforces, with Let's Encrypt's semantics: new orders per account are
/// charged at order creation (refunded if Pebble refuses it); certificates per registered
/// domain and per exact name set are checked at new-order time and spent when finalize
/// succeeds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyLimits {
    pub new_orders_per_account: Option<LimitSpec>,
    pub certificates_per_registered_domain: Option<LimitSpec>,
    pub certificates_per_name_set: Option<LimitSpec>,
    /// Orders carrying `replaces` for a CertID whose window (set on the proxy) contains
    /// the present are exempt from all limits, as at Let's Encrypt.
    pub ari_renewals_exempt: bool,
    /// Authorizations pending at once per account (Let's Encrypt: 300): a new order that
    /// would exceed it is refused with Let's Encrypt's 429.
    pub pending_authorizations_per_account: Option<u64>,
}

pub(crate) fn to_time(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

/// GCRA buckets by key.
#[derive(Debug, Default)]
pub(crate) struct Buckets {
    tats: HashMap<String, OffsetDateTime>,
}

impl Buckets {
    /// How long until one token is available in `key` (zero: now).
    pub fn wait(&self, key: &str, limit: LimitSpec, now: OffsetDateTime) -> time::Duration {
        let tat = self.tats.get(key).copied().unwrap_or(now).max(now);
        let allowed_at = tat + limit.interval() - to_time(limit.period);
        (allowed_at - now).max(time::Duration::ZERO)
    }

    /// Takes one token, whether or not one is available (spending at issuance).
    pub fn take(&mut self, key: &str, limit: LimitSpec, now: OffsetDateTime) {
        let tat = self.tats.get(key).copied().unwrap_or(now).max(now);
        self.tats.insert(key.to_owned(), tat + limit.interval());
    }

    /// Gives one token back.
    pub fn refund(&mut self, key: &str, limit: LimitSpec, now: OffsetDateTime) {
        if let Some(tat) = self.tats.get_mut(key) {
            *tat = (*tat - limit.interval()).max(now);
        }
    }
}

/// Go's `time.Duration` formatting as Boulder prints it (`3h0m0s`, `1m0s`, `45s`).
pub fn go_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

fn retry_stamp(at: OffsetDateTime) -> String {
    at.format(format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
    ))
    .unwrap_or_default()
}

/// Which Let's Encrypt limit refused a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    NewOrders { limit: LimitSpec },
    RegisteredDomain { domain: String, limit: LimitSpec },
    NameSet { limit: LimitSpec },
}

impl Refusal {
    /// Let's Encrypt's detail text for this refusal, retrying at `retry_at`.
    pub fn detail(&self, retry_at: OffsetDateTime) -> String {
        let when = retry_stamp(retry_at);
        match self {
            Refusal::NewOrders { limit } => format!(
                "too many new orders ({}) from this account in the last {}, retry after {when}: \
                 see https://letsencrypt.org/docs/rate-limits/#new-orders-per-account",
                limit.capacity,
                go_duration(limit.period)
            ),
            Refusal::RegisteredDomain { domain, limit } => format!(
                "too many certificates ({}) already issued for \"{domain}\" in the last {}, \
                 retry after {when}: see \
                 https://letsencrypt.org/docs/rate-limits/#new-certificates-per-registered-domain",
                limit.capacity,
                go_duration(limit.period)
            ),
            Refusal::NameSet { limit } => format!(
                "too many certificates ({}) already issued for this exact set of identifiers in \
                 the last {}, retry after {when}: see \
                 https://letsencrypt.org/docs/rate-limits/#new-certificates-per-exact-set-of-hostnames",
                limit.capacity,
                go_duration(limit.period)
            ),
        }
    }

    /// Short name for the counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::NewOrders { .. } => "new-orders-per-account",
            Refusal::RegisteredDomain { .. } => "certificates-per-registered-domain",
            Refusal::NameSet { .. } => "certificates-per-name-set",
        }
    }
}

/// The registered domain of a name (PSL with private entries; a suffix counts as itself).
pub fn registered_domain(name: &str) -> String {
    let base = name.strip_prefix("*.").unwrap_or(name);
    psl::domain_str(base).unwrap_or(base).to_owned()
}

/// The sorted, deduplicated, lowercased names of an order, joined with `,`.
pub fn name_set_key(names: &BTreeSet<String>) -> String {
    names.iter().cloned().collect::<Vec<_>>().join(",")
}

/// What the proxy reads from a JWS request body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JwsPeek {
    pub kid: Option<String>,
    pub names: BTreeSet<String>,
    pub replaces: Option<String>,
    pub profile: Option<String>,
}

/// Decodes the protected header and payload of a flattened JWS (no signature check: Pebble
/// does that).
pub fn peek_jws(body: &[u8]) -> JwsPeek {
    let mut out = JwsPeek::default();
    let Ok(jws) = serde_json::from_slice::<Value>(body) else {
        return out;
    };
    let decode = |field: &str| -> Option<Value> {
        let text = jws.get(field)?.as_str()?;
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        serde_json::from_slice(&bytes).ok()
    };
    if let Some(protected) = decode("protected") {
        out.kid = protected
            .get("kid")
            .and_then(Value::as_str)
            .map(str::to_owned);
    }
    if let Some(payload) = decode("payload") {
        if let Some(ids) = payload.get("identifiers").and_then(Value::as_array) {
            out.names = ids
                .iter()
                .filter_map(|i| i.get("value").and_then(Value::as_str))
                .map(|v| v.trim_end_matches('.').to_ascii_lowercase())
                .collect();
        }
        out.replaces = payload
            .get("replaces")
            .and_then(Value::as_str)
            .map(str::to_owned);
        out.profile = payload
            .get("profile")
            .and_then(Value::as_str)
            .map(str::to_owned);
    }
    out
}

/// Deterministic dice for 503 injection (xorshift64*; same seed, same sequence).
#[derive(Debug)]
pub(crate) struct Dice(u64);

impl Dice {
    pub fn new(seed: u64) -> Dice {
        Dice(seed.max(1))
    }

    /// True with probability `rate`.
    pub fn roll(&mut self, rate: f64) -> bool {
        if rate <= 0.0 {
            return false;
        }
        let r = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        r < rate
    }

    /// A number in `0..n` (`n` ≥ 1; the modulo bias is irrelevant at these sizes).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// xorshift64*.
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn texts_match_letsencrypt() {
        let at = datetime!(2025-06-01 12:00 UTC);
        let r = Refusal::NewOrders {
            limit: LimitSpec::new(300, Duration::from_secs(3 * 3600)),
        };
        assert_eq!(
            r.detail(at),
            "too many new orders (300) from this account in the last 3h0m0s, retry after \
             2025-06-01 12:00:00 UTC: see https://letsencrypt.org/docs/rate-limits/#new-orders-per-account"
        );
        let r = Refusal::RegisteredDomain {
            domain: "example.com".into(),
            limit: LimitSpec::new(50, Duration::from_secs(168 * 3600)),
        };
        assert!(r.detail(at).starts_with(
            "too many certificates (50) already issued for \"example.com\" in the last 168h0m0s"
        ));
        assert_eq!(go_duration(Duration::from_secs(60)), "1m0s");
        assert_eq!(go_duration(Duration::from_secs(45)), "45s");
    }

    #[test]
    fn buckets_follow_gcra() {
        let t0 = datetime!(2026-01-01 0:00 UTC);
        let l = LimitSpec::new(2, Duration::from_secs(60));
        let mut b = Buckets::default();
        b.take("k", l, t0);
        b.take("k", l, t0);
        assert_eq!(b.wait("k", l, t0), time::Duration::seconds(30));
        b.refund("k", l, t0);
        assert_eq!(b.wait("k", l, t0), time::Duration::ZERO);
    }

    #[test]
    fn dice_hit_their_rate() {
        let mut d = Dice::new(7);
        let hits = (0..10_000).filter(|_| d.roll(0.1)).count();
        assert!((800..1200).contains(&hits), "{hits}");
    }
}
