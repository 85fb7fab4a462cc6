//! Which DNS zone holds a name: the one routine the `rfc2136` plugin (to pick the zone of an
//! UPDATE) and the host's propagation checker (to pick the servers to ask) share, so the two
//! cannot disagree.
//!
//! For each name: follow its CNAME chain (an `_acme-challenge` name delegated into a
//! validation zone), then ask for the SOA of the final name and walk up one label at a time
//! until an answer names the zone cut:
//! - an SOA in the answer section: its owner is the zone (the name is an apex);
//! - an SOA in the authority section (NXDOMAIN or NOERROR/NODATA): its owner is the zone;
//! - NS records in the authority section of a non-authoritative answer (a referral from the
//!   parent's servers): their owner is the cut.
//!
//! What is learnt is cached per *name* and per *cut* (with a TTL), never guessed from label
//! counts: two names under the same parent can live in different zones (`corp.test` and the
//! delegated `acme.corp.test`), whatever order they come in.
//!
//! The crate does no I/O: callers implement [`Lookup`] over their own DNS client, which keeps
//! it usable from a plugin (own runtime) and from the host alike.
//!
//! ```
//! use certfleet_dns_zones::{ZoneFinder, Guard};
//! let finder = ZoneFinder::new();
//! let guard = Guard::parse(&["corp.test"]).expect("names");
//! assert!(!guard.is_empty());
//! # let _ = finder;
//! ```

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// Most CNAMEs followed from one name.
pub const MAX_CNAME_HOPS: usize = 8;
/// How long a learnt CNAME, zone cut or name→zone mapping is trusted.
pub const CACHE_TTL: Duration = Duration::from_secs(300);
/// Cache entries kept before the cache is emptied (bounds memory on huge batches).
const MAX_ENTRIES: usize = 200_000;

/// What a server answered to one query (answer and authority sections, flags).
#[derive(Clone, Debug)]
pub struct Reply {
    pub rcode: ResponseCode,
    /// The AA bit: a referral from a parent's server is not authoritative.
    pub authoritative: bool,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
}

/// One DNS query, as the caller sends it (recursion desired; UDP, TCP when truncated).
pub trait Lookup: Sync {
    fn lookup(
        &self,
        name: &Name,
        rtype: RecordType,
    ) -> impl Future<Output = Result<Reply, String>> + Send;
}

/// A zone cut: the zone's apex and, when an SOA was seen, its primary (SOA MNAME).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Zone {
    pub apex: Name,
    pub primary: Option<Name>,
}

/// Where the TXT record of one challenge name really goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    /// The challenge name as asked (`_acme-challenge.www.corp.test.`).
    pub name: Name,
    /// The end of its CNAME chain (the name itself without CNAMEs): the owner to write.
    pub target: Name,
    /// The zone holding `target`.
    pub zone: Zone,
}

impl Located {
    /// `name`, or `name → target` when a CNAME was followed.
    pub fn describe(&self) -> String {
        if self.name == self.target {
            self.name.to_string()
        } else {
            format!("{} (CNAME to {})", self.name, self.target)
        }
    }
}

/// Why a name's zone could not be found or is not allowed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ZoneError {
    #[error("{name}: {rtype} lookup failed: {detail}")]
    Lookup {
        name: String,
        rtype: String,
        detail: String,
    },
    #[error("{name}: more than {MAX_CNAME_HOPS} CNAMEs in a row")]
    CnameLoop { name: String },
    #[error(
        "no zone found for {name}: no SOA or delegation for it or any parent ({seen}); is the \
         resolver able to see the zone?"
    )]
    NoZone { name: String, seen: String },
    #[error("{name} is outside the configured zone(s) {zones}; refusing to touch it")]
    OutsideGuard { name: String, zones: String },
    #[error(
        "{name} is a CNAME to {target}, which is outside every configured zone ({zones}); add \
         the target's zone to `zone` or fix the CNAME"
    )]
    CnameOutsideGuard {
        name: String,
        target: String,
        zones: String,
    },
    #[error(
        "{name} is in zone {zone} (found by SOA queries), above the configured zone {guard}: is \
         {guard} delegated (NS records for it in {zone})?"
    )]
    ZoneAboveGuard {
        name: String,
        zone: String,
        guard: String,
    },
    #[error("{value:?} is not a DNS name: {detail}")]
    BadName { value: String, detail: String },
}

/// Parses an absolute name (a trailing dot is added).
pub fn parse_name(s: &str) -> Result<Name, ZoneError> {
    let mut n = Name::from_str(s).map_err(|e| ZoneError::BadName {
        value: s.to_owned(),
        detail: e.to_string(),
    })?;
    n.set_fqdn(true);
    Ok(n)
}

/// Configured zones as a guard: names must lie inside one of them (never a destination:
/// the zone of each name is still found by SOA queries).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Guard(Vec<Name>);

impl Guard {
    pub fn parse<S: AsRef<str>>(zones: &[S]) -> Result<Guard, ZoneError> {
        zones
            .iter()
            .map(|z| parse_name(z.as_ref()))
            .collect::<Result<Vec<_>, _>>()
            .map(Guard)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn zones(&self) -> &[Name] {
        &self.0
    }

    /// Refuses a located name whose target is outside every guard zone (naming the CNAME
    /// when one led there), or whose zone lies above the guard zone that contains it.
    pub fn check(&self, l: &Located) -> Result<(), ZoneError> {
        if self.0.is_empty() {
            return Ok(());
        }
        let zones = || {
            self.0
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let Some(guard) = self
            .0
            .iter()
            .filter(|g| g.zone_of(&l.target))
            .max_by_key(|g| g.num_labels())
        else {
            return Err(if l.name == l.target {
                ZoneError::OutsideGuard {
                    name: l.name.to_string(),
                    zones: zones(),
                }
            } else {
                ZoneError::CnameOutsideGuard {
                    name: l.name.to_string(),
                    target: l.target.to_string(),
                    zones: zones(),
                }
            });
        };
        if !guard.zone_of(&l.zone.apex) {
            return Err(ZoneError::ZoneAboveGuard {
                name: l.target.to_string(),
                zone: l.zone.apex.to_string(),
                guard: guard.to_string(),
            });
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Cache {
    /// name → end of its CNAME chain (itself when it has none).
    cnames: HashMap<Name, (Name, Instant)>,
    /// name → apex of the zone holding it (learnt from an answer for that name).
    zone_of: HashMap<Name, (Name, Instant)>,
    /// apex → primary (SOA MNAME) when known.
    cuts: HashMap<Name, (Option<Name>, Instant)>,
}

impl Cache {
    fn fresh<T: Clone>(map: &HashMap<Name, (T, Instant)>, k: &Name) -> Option<T> {
        map.get(k)
            .filter(|(_, at)| at.elapsed() < CACHE_TTL)
            .map(|(v, _)| v.clone())
    }

    fn bound(&mut self) {
        if self.cnames.len() + self.zone_of.len() + self.cuts.len() > MAX_ENTRIES {
            *self = Cache::default();
        }
    }
}

/// Finds and caches zones (see the crate docs). Cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct ZoneFinder {
    cache: Mutex<Cache>,
}

impl ZoneFinder {
    pub fn new() -> ZoneFinder {
        ZoneFinder::default()
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Follows `name`'s CNAMEs and finds the zone of the final name.
    pub async fn locate<L: Lookup>(&self, lookup: &L, name: &Name) -> Result<Located, ZoneError> {
        let target = self.follow_cname(lookup, name).await?;
        let zone = self.zone_of(lookup, &target).await?;
        Ok(Located {
            name: name.clone(),
            target,
            zone,
        })
    }

    /// The end of `name`'s CNAME chain.
    pub async fn follow_cname<L: Lookup>(
        &self,
        lookup: &L,
        name: &Name,
    ) -> Result<Name, ZoneError> {
        let cached = Cache::fresh(&self.cache().cnames, name);
        if let Some(t) = cached {
            return Ok(t);
        }
        let mut current = name.clone();
        for _ in 0..MAX_CNAME_HOPS {
            let reply = ask(lookup, &current, RecordType::CNAME).await?;
            let next = reply.answers.iter().find_map(|r| match &r.data {
                RData::CNAME(c) if r.name == current => Some(c.0.clone()),
                _ => None,
            });
            match next {
                Some(t) => current = t,
                None => {
                    let mut cache = self.cache();
                    cache.bound();
                    cache
                        .cnames
                        .insert(name.clone(), (current.clone(), Instant::now()));
                    return Ok(current);
                }
            }
        }
        Err(ZoneError::CnameLoop {
            name: name.to_string(),
        })
    }

    /// The zone holding `name` (no CNAME following), by SOA queries walking up.
    pub async fn zone_of<L: Lookup>(&self, lookup: &L, name: &Name) -> Result<Zone, ZoneError> {
        {
            let cache = self.cache();
            if let Some(apex) = Cache::fresh(&cache.zone_of, name)
                && let Some(primary) = Cache::fresh(&cache.cuts, &apex)
            {
                return Ok(Zone { apex, primary });
            }
        }
        let mut candidate = name.clone();
        let mut seen = Vec::new();
        loop {
            let reply = ask(lookup, &candidate, RecordType::SOA).await?;
            if let Some(zone) = cut_in(&reply, name) {
                let now = Instant::now();
                let mut cache = self.cache();
                cache.bound();
                cache.zone_of.insert(name.clone(), (zone.apex.clone(), now));
                cache
                    .zone_of
                    .insert(zone.apex.clone(), (zone.apex.clone(), now));
                // A referral names the cut but not the primary: keep a known primary.
                let primary = match (&zone.primary, Cache::fresh(&cache.cuts, &zone.apex)) {
                    (Some(p), _) => Some(p.clone()),
                    (None, known) => known.flatten(),
                };
                cache.cuts.insert(zone.apex.clone(), (primary.clone(), now));
                return Ok(Zone {
                    apex: zone.apex,
                    primary,
                });
            }
            seen.push(format!("{candidate} {}", rcode_name(reply.rcode)));
            if candidate.is_root() || candidate.num_labels() <= 1 {
                return Err(ZoneError::NoZone {
                    name: name.to_string(),
                    seen: seen.join(", "),
                });
            }
            candidate = candidate.base_name();
        }
    }

    /// The zone a name is presumed to be in without asking: the deepest zone cut learnt
    /// (fresh) at or above `name`, so a name below a known cut is never put into the parent.
    /// `None` when no cut above it is known, or when `name` is known to be a CNAME. A
    /// presumption, not a proof: unknown cuts and CNAMEs below the apex are possible, so the
    /// caller must verify (an UPDATE's prerequisites, an authoritative server's answer) and
    /// [`locate`](ZoneFinder::locate) when that fails.
    pub fn presumed_zone(&self, name: &Name) -> Option<Zone> {
        let cache = self.cache();
        if let Some(target) = Cache::fresh(&cache.cnames, name)
            && &target != name
        {
            return None;
        }
        let mut n = name.clone();
        loop {
            if let Some(primary) = Cache::fresh(&cache.cuts, &n) {
                return Some(Zone { apex: n, primary });
            }
            if n.is_root() || n.num_labels() == 0 {
                return None;
            }
            n = n.base_name();
        }
    }

    /// Forgets what is cached about `name` itself (its CNAME and zone), so the next
    /// [`locate`](ZoneFinder::locate) asks again; learnt cuts stay.
    pub fn forget_name(&self, name: &Name) {
        let mut cache = self.cache();
        cache.cnames.remove(name);
        cache.zone_of.remove(name);
    }

    /// Zone cuts learnt so far (apex → primary), for diagnostics and metrics.
    pub fn known_cuts(&self) -> Vec<Zone> {
        let mut v: Vec<Zone> = self
            .cache()
            .cuts
            .iter()
            .map(|(apex, (primary, _))| Zone {
                apex: apex.clone(),
                primary: primary.clone(),
            })
            .collect();
        v.sort_by(|a, b| a.apex.cmp(&b.apex));
        v
    }
}

async fn ask<L: Lookup>(lookup: &L, name: &Name, rtype: RecordType) -> Result<Reply, ZoneError> {
    lookup
        .lookup(name, rtype)
        .await
        .map_err(|detail| ZoneError::Lookup {
            name: name.to_string(),
            rtype: rtype.to_string(),
            detail,
        })
}

/// The zone cut an SOA-query reply names for `name`, if any (see the crate docs).
pub fn cut_in(reply: &Reply, name: &Name) -> Option<Zone> {
    let soa = |records: &[Record]| {
        records.iter().find_map(|r| match &r.data {
            RData::SOA(soa) if r.name.zone_of(name) => Some(Zone {
                apex: r.name.clone(),
                primary: Some(soa.mname.clone()),
            }),
            _ => None,
        })
    };
    if let Some(z) = soa(&reply.answers).or_else(|| soa(&reply.authorities)) {
        return Some(z);
    }
    if reply.authoritative || !reply.answers.is_empty() {
        return None;
    }
    // A referral: the deepest NS owner above (or at) the name is the cut.
    reply
        .authorities
        .iter()
        .filter(|r| matches!(r.data, RData::NS(_)) && r.name.zone_of(name))
        .map(|r| r.name.clone())
        .max_by_key(Name::num_labels)
        .map(|apex| Zone {
            apex,
            primary: None,
        })
}

/// The DNS mnemonic of a response code (`NOERROR`, `NXDOMAIN`, …).
pub fn rcode_name(rc: ResponseCode) -> String {
    match rc {
        ResponseCode::NoError => "NOERROR".to_owned(),
        ResponseCode::FormErr => "FORMERR".to_owned(),
        ResponseCode::ServFail => "SERVFAIL".to_owned(),
        ResponseCode::NXDomain => "NXDOMAIN".to_owned(),
        ResponseCode::NotImp => "NOTIMP".to_owned(),
        ResponseCode::Refused => "REFUSED".to_owned(),
        ResponseCode::NotAuth => "NOTAUTH".to_owned(),
        ResponseCode::NotZone => "NOTZONE".to_owned(),
        other => format!("{other:?}").to_uppercase(),
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.apex)
    }
}

#[cfg(test)]
mod tests;
