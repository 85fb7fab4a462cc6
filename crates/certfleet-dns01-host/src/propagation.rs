//! [`AuthoritativeCheck`]: waits until every authoritative server of each record's zone
//! serves the value (and, optionally, configured recursive resolvers do), instead of sleeping.
//!
//! For each record: follow the `_acme-challenge` CNAME chain and find the zone by SOA queries
//! (the shared [`certfleet_dns_zones`] routine the `rfc2136` plugin uses too), read the zone's
//! NS set and the servers' addresses (all through the discovery resolvers), then ask every
//! server directly, recursion off, until each answers with the value. Polls with a fixed
//! interval up to a deadline. The error names each lagging server and what it answered last;
//! when *no* authoritative server of the zone serves a record, that is not lag but a record
//! written somewhere else (typically into the parent zone below the zone cut), and the error
//! says so instead of blaming a server.
//!
//! Serial-aware ([`crate::serial`]): a server whose SOA serial is behind the primary's is
//! asked for its serial, not for every TXT record, until it caught up; TXT stays the proof.
//! The log line of each check counts that check's own queries.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use certfleet_dns_zones::{Lookup, Reply, ZoneError, ZoneFinder};
use certfleet_dns01::{Dns01Error, PropagationCheck, TxtRecord};
use futures::StreamExt;
use hickory_proto::rr::{Name, RData, RecordType};

use crate::query::{Answer, Querier, rcode_name};
use crate::serial::ZoneSerials;

/// How the check finds servers and how long it waits.
#[derive(Clone, Debug)]
pub struct PropagationConfig {
    /// Give up after this long.
    pub timeout: Duration,
    /// Pause between two rounds of queries.
    pub interval: Duration,
    /// Timeout of one query.
    pub query_timeout: Duration,
    /// Resolvers used to follow CNAMEs and find zones, NS sets and server addresses
    /// (recursion desired). Empty: the `nameserver`s of /etc/resolv.conf.
    pub discovery: Vec<SocketAddr>,
    /// Recursive resolvers that must also return the value (recursion desired).
    pub recursive: Vec<SocketAddr>,
    /// Port the authoritative servers are asked on (53; tests use others).
    pub nameserver_port: u16,
    /// Addresses to use for named NS hosts instead of their A/AAAA records (tests and labs
    /// where several servers share 127.0.0.1 on different ports). Keys are lowercase FQDNs
    /// with a trailing dot.
    pub nameserver_addresses: BTreeMap<String, Vec<SocketAddr>>,
    /// Queries in flight at once.
    pub concurrency: usize,
}

impl Default for PropagationConfig {
    fn default() -> Self {
        PropagationConfig {
            timeout: Duration::from_secs(120),
            interval: Duration::from_secs(2),
            query_timeout: Duration::from_secs(3),
            discovery: Vec::new(),
            recursive: Vec::new(),
            nameserver_port: 53,
            nameserver_addresses: BTreeMap::new(),
            concurrency: 64,
        }
    }
}

/// Why discovery failed (before any waiting).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    #[error(
        "no resolver to find zones with: /etc/resolv.conf names none; set dns01.propagation.discovery_resolvers"
    )]
    NoResolver,
    #[error("{name}: {detail}")]
    Lookup { name: String, detail: String },
    #[error(transparent)]
    Zone(#[from] ZoneError),
}

/// One server to ask.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Server {
    /// NS host name, or `resolver` for a recursive resolver.
    pub(crate) label: String,
    pub(crate) addr: SocketAddr,
    pub(crate) recursion: bool,
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.label, self.addr)
    }
}

/// One (server, name) pair to wait for, with the values it must serve.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) server: Server,
    pub(crate) name: Name,
    /// The zone holding `name` (`None` for a recursive resolver's target).
    pub(crate) zone: Option<Name>,
    values: BTreeSet<String>,
    records: Vec<TxtRecord>,
    pub(crate) last: String,
    /// `zone` is presumed from a known cut above the name (no query asked for it): the
    /// server's answer must confirm it (authoritative, no CNAME, the zone's own SOA).
    presumed: bool,
    /// The answer contradicted the presumed zone: the name is found by queries instead.
    misplaced: bool,
}

/// The host's propagation check (see the module docs).
#[derive(Debug)]
pub struct AuthoritativeCheck {
    config: PropagationConfig,
    querier: Querier,
    discovery: Vec<SocketAddr>,
    zones: ZoneFinder,
    /// Each zone's authoritative servers, learnt once per [`certfleet_dns_zones::CACHE_TTL`].
    nameservers: Mutex<HashMap<Name, (Vec<Server>, Instant)>>,
    rounds: AtomicU64,
}

/// The shared zone routine's queries, through the discovery resolvers.
struct Discovery<'a>(&'a AuthoritativeCheck);

impl Lookup for Discovery<'_> {
    async fn lookup(&self, name: &Name, rtype: RecordType) -> Result<Reply, String> {
        self.0
            .discover(name, rtype)
            .await
            .map(Answer::into_reply)
            .map_err(|e| e.to_string())
    }
}

impl AuthoritativeCheck {
    pub fn new(config: PropagationConfig) -> Result<AuthoritativeCheck, DiscoveryError> {
        let discovery = if config.discovery.is_empty() {
            system_resolvers()
        } else {
            config.discovery.clone()
        };
        if discovery.is_empty() {
            return Err(DiscoveryError::NoResolver);
        }
        Ok(AuthoritativeCheck {
            querier: Querier::new(config.query_timeout),
            config,
            discovery,
            zones: ZoneFinder::new(),
            nameservers: Mutex::new(HashMap::new()),
            rounds: AtomicU64::new(0),
        })
    }

    /// DNS queries sent so far (discovery and checks).
    pub fn queries(&self) -> u64 {
        self.querier.count()
    }

    /// Rounds of checks run so far.
    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }

    /// Asks the discovery resolvers in order until one answers.
    async fn discover(&self, name: &Name, rtype: RecordType) -> Result<Answer, DiscoveryError> {
        let mut last = String::new();
        for r in &self.discovery {
            match self.querier.query(*r, name, rtype, true).await {
                Ok(a) => return Ok(a),
                Err(e) => last = format!("{r}: {e}"),
            }
        }
        Err(DiscoveryError::Lookup {
            name: name.to_string(),
            detail: format!("{rtype} lookup failed ({last})"),
        })
    }

    /// The zone's authoritative servers (cached per zone).
    async fn nameservers(&self, zone: &Name) -> Result<Vec<Server>, DiscoveryError> {
        let cached = self
            .nameservers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(zone)
            .filter(|(_, at)| at.elapsed() < certfleet_dns_zones::CACHE_TTL)
            .map(|(s, _)| s.clone());
        if let Some(servers) = cached {
            return Ok(servers);
        }
        let servers = self.find_nameservers(zone).await?;
        let mut cache = self.nameservers.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(zone.clone(), (servers.clone(), Instant::now()));
        Ok(servers)
    }

    async fn find_nameservers(&self, zone: &Name) -> Result<Vec<Server>, DiscoveryError> {
        let a = self.discover(zone, RecordType::NS).await?;
        let hosts: BTreeSet<Name> = a
            .records
            .iter()
            .filter_map(|r| match &r.data {
                RData::NS(ns) if &r.name == zone => Some(ns.0.clone()),
                _ => None,
            })
            .collect();
        if hosts.is_empty() {
            return Err(DiscoveryError::Lookup {
                name: zone.to_string(),
                detail: format!("the zone has no NS records ({})", rcode_name(a.rcode)),
            });
        }
        let mut servers = Vec::new();
        for host in hosts {
            let label = host.to_ascii().to_ascii_lowercase();
            if let Some(addrs) = self.config.nameserver_addresses.get(&label) {
                servers.extend(addrs.iter().map(|addr| Server {
                    label: label.clone(),
                    addr: *addr,
                    recursion: false,
                }));
                continue;
            }
            let mut ips = Vec::new();
            for rtype in [RecordType::A, RecordType::AAAA] {
                let a = self.discover(&host, rtype).await?;
                ips.extend(a.records.iter().filter_map(|r| match &r.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                    _ => None,
                }));
            }
            if ips.is_empty() {
                return Err(DiscoveryError::Lookup {
                    name: label,
                    detail: format!("nameserver of {zone} has no address"),
                });
            }
            servers.extend(ips.into_iter().map(|ip| Server {
                label: label.clone(),
                addr: SocketAddr::new(ip, self.config.nameserver_port),
                recursion: false,
            }));
        }
        Ok(servers)
    }

    /// Works out every (server, name, values) to wait for. A name below a known zone cut
    /// is presumed to be in that zone without a query (unless `locate`), and the servers'
    /// answers confirm it; other names are found by queries (CNAMEs, SOA walking up).
    async fn targets(
        &self,
        records: &[TxtRecord],
        locate: bool,
    ) -> Result<Vec<Target>, DiscoveryError> {
        let mut zones: BTreeMap<Name, Vec<Server>> = BTreeMap::new();
        let mut targets: BTreeMap<(Server, Name), Target> = BTreeMap::new();
        let mut add = |server: Server, name: Name, zone: Option<Name>, presumed, r: &TxtRecord| {
            let t = targets
                .entry((server.clone(), name.clone()))
                .or_insert_with(|| Target {
                    server,
                    name,
                    zone,
                    values: BTreeSet::new(),
                    records: Vec::new(),
                    last: "not asked yet".to_owned(),
                    presumed,
                    misplaced: false,
                });
            t.values.insert(r.value.clone());
            t.records.push(r.clone());
        };
        let discovery = Discovery(self);
        for r in records {
            let fqdn = parse_name(&r.fqdn)?;
            let presumed = if locate {
                None
            } else {
                self.zones.presumed_zone(&fqdn)
            };
            let (target, zone, is_presumed) = match presumed {
                Some(z) => (fqdn.clone(), z.apex, true),
                None => {
                    let located = self.zones.locate(&discovery, &fqdn).await?;
                    if located.target != fqdn {
                        tracing::debug!(name = %fqdn, target = %located.target, "challenge name is a CNAME");
                    }
                    (located.target, located.zone.apex, false)
                }
            };
            if !zones.contains_key(&zone) {
                let servers = self.nameservers(&zone).await?;
                tracing::debug!(zone = %zone, servers = %servers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "), "authoritative servers");
                zones.insert(zone.clone(), servers);
            }
            for s in zones.get(&zone).into_iter().flatten() {
                add(
                    s.clone(),
                    target.clone(),
                    Some(zone.clone()),
                    is_presumed,
                    r,
                );
            }
            for addr in &self.config.recursive {
                let server = Server {
                    label: "resolver".to_owned(),
                    addr: *addr,
                    recursion: true,
                };
                add(server, fqdn.clone(), None, false, r);
            }
        }
        Ok(targets.into_values().collect())
    }

    /// Asks every authoritative server (and configured resolver) once, without waiting:
    /// per record, the servers that do not serve it yet, each with what it answered.
    pub async fn check_once(
        &self,
        records: &[TxtRecord],
    ) -> Result<Vec<(TxtRecord, Vec<String>)>, DiscoveryError> {
        let mut out: Vec<(TxtRecord, Vec<String>)> =
            records.iter().map(|r| (r.clone(), Vec::new())).collect();
        for mut t in self.targets(records, true).await? {
            if self.probe(&mut t).await {
                continue;
            }
            for r in &t.records {
                if let Some((_, missing)) = out.iter_mut().find(|(o, _)| o == r) {
                    missing.push(format!("{}: {}", t.server, t.last));
                }
            }
        }
        Ok(out)
    }

    /// Probes every target once, concurrently.
    async fn probe_all(&self, targets: Vec<Target>) -> Vec<(Target, bool)> {
        futures::stream::iter(targets)
            .map(|mut t| async move {
                let ok = self.probe(&mut t).await;
                (t, ok)
            })
            .buffer_unordered(self.config.concurrency.max(1))
            .collect()
            .await
    }

    /// Asks `t`'s server once; true when every expected value is served.
    async fn probe(&self, t: &mut Target) -> bool {
        match self
            .querier
            .query(t.server.addr, &t.name, RecordType::TXT, t.server.recursion)
            .await
        {
            Ok(a) => {
                if t.presumed
                    && let Some(zone) = &t.zone
                    && let Some(why) = contradicts(&a, &t.name, zone)
                {
                    t.misplaced = true;
                    t.last = format!("{} ({why})", rcode_name(a.rcode));
                    return false;
                }
                let have = a.txt_values();
                if t.values.iter().all(|v| have.contains(v)) {
                    return true;
                }
                t.last = if have.is_empty() {
                    format!("{} with no TXT", rcode_name(a.rcode))
                } else {
                    format!(
                        "{} with other values only ({})",
                        rcode_name(a.rcode),
                        have.iter().cloned().collect::<Vec<_>>().join(", ")
                    )
                };
            }
            Err(e) => t.last = e.to_string(),
        }
        false
    }
}

impl AuthoritativeCheck {
    /// Replaces the targets of every record whose presumed zone an answer contradicted by
    /// targets found by queries (the other servers' targets of those records too).
    async fn relocate(
        &self,
        pending: Vec<Target>,
        authoritative_per_name: &mut BTreeMap<Name, usize>,
    ) -> Result<Vec<Target>, DiscoveryError> {
        let mut moved: Vec<TxtRecord> = Vec::new();
        for t in pending.iter().filter(|t| t.misplaced) {
            tracing::debug!(name = %t.name, server = %t.server, answered = %t.last, "presumed zone contradicted: finding the zone by queries");
            for r in &t.records {
                if !moved.contains(r) {
                    moved.push(r.clone());
                }
            }
        }
        let (stale, mut kept): (Vec<Target>, Vec<Target>) = pending
            .into_iter()
            .partition(|t| t.zone.is_some() && t.records.iter().any(|r| moved.contains(r)));
        for t in &stale {
            authoritative_per_name.remove(&t.name);
            self.zones.forget_name(&t.name);
        }
        let fresh = self.targets(&moved, true).await?;
        for t in fresh.iter().filter(|t| t.zone.is_some()) {
            *authoritative_per_name.entry(t.name.clone()).or_default() += 1;
        }
        kept.extend(fresh.into_iter().filter(|t| t.zone.is_some()));
        Ok(kept)
    }
}

/// Why an authoritative server's answer for `name` contradicts the presumption that `name`
/// lies in `zone` (`None`: consistent).
fn contradicts(a: &Answer, name: &Name, zone: &Name) -> Option<&'static str> {
    let answers = &a.records[..a.answer_count.min(a.records.len())];
    if answers
        .iter()
        .any(|r| &r.name == name && matches!(r.data, RData::CNAME(_)))
    {
        return Some("a CNAME");
    }
    if !a.authoritative {
        return Some("not authoritative: a referral below a zone cut");
    }
    let soa_owner = a.records[answers.len()..]
        .iter()
        .find_map(|r| match &r.data {
            RData::SOA(_) => Some(&r.name),
            _ => None,
        });
    match soa_owner {
        Some(owner) if owner != zone => Some("the SOA of another zone"),
        _ => None,
    }
}

#[async_trait]
impl PropagationCheck for AuthoritativeCheck {
    async fn wait_until_visible(&self, records: &[TxtRecord]) -> Result<(), Dns01Error> {
        let started = Instant::now();
        let not_propagated = |detail: String| Dns01Error::NotPropagated {
            waited_secs: started.elapsed().as_secs(),
            detail,
            records: records.to_vec(),
        };
        let asked_before = self.querier.count();
        let mut pending = self
            .targets(records, false)
            .await
            .map_err(|e| not_propagated(format!("cannot find the authoritative servers: {e}")))?;
        // Discovery's queries count too (an upper bound: checks running at once share the
        // querier; the batch runs one at a time).
        let mut queries: u64 = self.querier.count() - asked_before;
        let total = pending.len();
        let mut authoritative_per_name: BTreeMap<Name, usize> = BTreeMap::new();
        for t in pending.iter().filter(|t| t.zone.is_some()) {
            *authoritative_per_name.entry(t.name.clone()).or_default() += 1;
        }
        let mut serials: BTreeMap<Name, ZoneSerials> = BTreeMap::new();
        let mut servers_of: BTreeMap<Name, BTreeSet<(String, SocketAddr)>> = BTreeMap::new();
        for t in &pending {
            if let Some(zone) = &t.zone {
                servers_of
                    .entry(zone.clone())
                    .or_default()
                    .insert((t.server.label.clone(), t.server.addr));
            }
        }
        for (zone, servers) in &servers_of {
            let servers: Vec<(String, SocketAddr)> = servers.iter().cloned().collect();
            let (zs, q) = ZoneSerials::learn(&self.querier, zone, &servers).await;
            queries += q;
            serials.insert(zone.clone(), zs);
        }
        let max_rounds =
            1 + self.config.timeout.as_millis() / self.config.interval.as_millis().max(1);
        for round in 0..max_rounds {
            self.rounds.fetch_add(1, Ordering::Relaxed);
            // Per (zone, server): ask TXT now? (`false` in the second field: its serial
            // was behind when it was asked anyway.)
            let mut ask: BTreeMap<(Name, SocketAddr), (bool, bool)> = BTreeMap::new();
            for t in &pending {
                let Some(zone) = &t.zone else { continue };
                let key = (zone.clone(), t.server.addr);
                if ask.contains_key(&key) {
                    continue;
                }
                let zs = serials.entry(zone.clone()).or_default();
                let was_caught_up = zs.reference.is_none()
                    || zs.caught_up.get(&t.server.addr).copied().unwrap_or(false);
                let (txt, q) = zs
                    .ask_txt(&self.querier, zone, t.server.addr, round as u64)
                    .await;
                queries += q;
                let caught_up_now = zs.caught_up.get(&t.server.addr).copied().unwrap_or(false);
                ask.insert(key, (txt, was_caught_up || caught_up_now));
            }
            // A server asked TXT while its serial is behind (in case serials are not
            // comparable) is asked for one record only: if it serves that one, it is
            // marked TXT-only and asked for the rest next round.
            let mut sampled: BTreeSet<(Name, SocketAddr)> = BTreeSet::new();
            let (to_probe, waiting): (Vec<Target>, Vec<Target>) =
                pending.into_iter().partition(|t| match &t.zone {
                    Some(zone) => match ask.get(&(zone.clone(), t.server.addr)) {
                        None | Some((true, true)) => true,
                        Some((true, false)) => sampled.insert((zone.clone(), t.server.addr)),
                        Some((false, _)) => false,
                    },
                    None => true,
                });
            queries += to_probe.len() as u64;
            let results = self.probe_all(to_probe).await;
            for (t, ok) in &results {
                let Some(zone) = &t.zone else { continue };
                if *ok && ask.get(&(zone.clone(), t.server.addr)) == Some(&(true, false)) {
                    // Served with a serial behind the primary's: not comparable.
                    if let Some(zs) = serials.get_mut(zone) {
                        zs.served(t.server.addr);
                    }
                }
            }
            pending = results
                .into_iter()
                .filter(|(_, ok)| !ok)
                .map(|(t, _)| t)
                .chain(waiting)
                .collect();
            if pending.iter().any(|t| t.misplaced) {
                let asked_before = self.querier.count();
                pending = self
                    .relocate(pending, &mut authoritative_per_name)
                    .await
                    .map_err(|e| {
                        not_propagated(format!("cannot find the authoritative servers: {e}"))
                    })?;
                queries += self.querier.count() - asked_before;
            }
            if pending.is_empty() {
                tracing::info!(
                    checks = total,
                    rounds = round + 1,
                    queries,
                    queries_per_record = queries as f64 / records.len().max(1) as f64,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "dns-01 records visible on every authoritative server"
                );
                return Ok(());
            }
            if started.elapsed() + self.config.interval > self.config.timeout {
                break;
            }
            tracing::debug!(lagging = pending.len(), queries, "waiting for propagation");
            tokio::time::sleep(self.config.interval).await;
        }
        // The deadline: every server still pending is asked for its TXT records (servers
        // skipped for their serial too), so the verdict and the error rest on TXT answers.
        queries += pending.len() as u64;
        let pending: Vec<Target> = self
            .probe_all(pending)
            .await
            .into_iter()
            .filter(|(_, ok)| !ok)
            .map(|(t, _)| t)
            .collect();
        if pending.is_empty() {
            tracing::info!(
                checks = total,
                queries,
                "dns-01 records visible on every authoritative server (at the deadline)"
            );
            return Ok(());
        }
        Err(not_propagated(crate::diagnose::diagnose(
            pending,
            &authoritative_per_name,
        )))
    }
}

fn parse_name(s: &str) -> Result<Name, DiscoveryError> {
    let mut n = Name::from_str(s).map_err(|e| DiscoveryError::Lookup {
        name: s.to_owned(),
        detail: format!("not a DNS name: {e}"),
    })?;
    n.set_fqdn(true);
    Ok(n)
}

/// The `nameserver`s of /etc/resolv.conf, port 53.
pub fn system_resolvers() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}
