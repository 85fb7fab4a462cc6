//! `rfc2136`: a certfleet DNS-01 plugin that adds and removes `_acme-challenge` TXT records
//! with RFC 2136 dynamic updates signed with TSIG (RFC 8945) — BIND, Knot, PowerDNS and
//! Windows DNS all accept them.
//!
//! For a batch it follows each name's CNAME (delegation into a validation zone), finds the
//! zone by SOA queries (or uses the configured one), groups the records per zone and sends
//! **one UPDATE per zone** that adds (or deletes) each value as a single RR, never the RRset,
//! so a wildcard and its apex can hold two values at once. UDP when the message fits, TCP
//! otherwise or when the UDP answer is truncated or lost.
//!
//! Settings (`[plugins.rfc2136]`, see docs/plugins.md):
//! `server` (`HOST:PORT` or `IP`; default the zone's SOA MNAME on port 53), `zone` (default
//! found by SOA), `resolver` (where discovery queries go; default `server`, else the first
//! `nameserver` of /etc/resolv.conf), `key_file` (a BIND key file, as `tsig-keygen` writes)
//! or `key_name` + `algorithm` + `secret_env` (an environment variable holding the base64
//! secret), `ttl` (default 60), `timeout_secs` (default 10).

mod dns;
mod tsig;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use certfleet_plugin_abi::{
    CheckResult, ErrorKind, Logger, Plugin, PluginError, TxtRecord, export_plugin,
};
use hickory_client::proto::rr::{Name, RData, RecordType};
use serde::Deserialize;

use crate::dns::{Change, Counters};
use crate::tsig::TsigKey;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    server: Option<String>,
    #[serde(default)]
    zone: Option<String>,
    #[serde(default)]
    resolver: Option<String>,
    #[serde(default)]
    key_file: Option<String>,
    #[serde(default)]
    key_name: Option<String>,
    #[serde(default)]
    algorithm: Option<String>,
    #[serde(default)]
    secret_env: Option<String>,
    #[serde(default = "default_ttl")]
    ttl: u32,
    #[serde(default = "default_timeout")]
    timeout_secs: u64,
}

fn default_ttl() -> u32 {
    60
}

fn default_timeout() -> u64 {
    10
}

/// The `rfc2136` plugin instance: settings, the TSIG key and a private tokio runtime (the
/// host's runtime is not visible inside a plugin).
pub struct Rfc2136 {
    server: Option<SocketAddr>,
    zone: Option<Name>,
    resolver: SocketAddr,
    key: TsigKey,
    ttl: u32,
    timeout: Duration,
    log: Logger,
    counters: Counters,
    /// Where each presented name went (CNAME target, zone, server), so cleanup needs no
    /// lookups. Entries leave on cleanup; bounded by [`MAX_REMEMBERED`].
    resolved: Mutex<HashMap<Name, Resolved>>,
    runtime: tokio::runtime::Runtime,
}

type Resolved = (Name, Name, SocketAddr);

/// Most presented names remembered for cleanup (beyond it, cleanup looks names up again).
const MAX_REMEMBERED: usize = 100_000;

impl std::fmt::Debug for Rfc2136 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rfc2136")
            .field("server", &self.server)
            .field("zone", &self.zone)
            .field("key", &self.key.name)
            .finish_non_exhaustive()
    }
}

impl Plugin for Rfc2136 {
    const NAME: &'static str = "rfc2136";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn create(config: serde_json::Value, log: Logger) -> Result<Self, PluginError> {
        let c: Config = serde_json::from_value(config)
            .map_err(|e| PluginError::config(format!("[plugins.rfc2136]: {e}")))?;
        let key = load_key(&c)?;
        let server = c
            .server
            .as_deref()
            .map(|s| socket_addr(s, "server"))
            .transpose()?;
        let resolver = match (&c.resolver, server) {
            (Some(r), _) => socket_addr(r, "resolver")?,
            (None, Some(s)) => s,
            (None, None) => system_resolver()?,
        };
        let zone = c.zone.as_deref().map(dns::parse_name).transpose()?;
        if c.timeout_secs == 0 {
            return Err(PluginError::config("timeout_secs: must be at least 1"));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("rfc2136-plugin")
            .enable_all()
            .build()
            .map_err(|e| {
                PluginError::new(ErrorKind::Internal, format!("cannot start a runtime: {e}"))
            })?;
        log.debug(&format!(
            "rfc2136: key {} ({}), server {}, resolver {resolver}",
            key.name,
            key.algorithm_name,
            server.map_or("SOA MNAME".to_owned(), |s| s.to_string())
        ));
        Ok(Rfc2136 {
            server,
            zone,
            resolver,
            key,
            ttl: c.ttl,
            timeout: Duration::from_secs(c.timeout_secs),
            log,
            counters: Counters::default(),
            resolved: Mutex::new(HashMap::new()),
            runtime,
        })
    }

    fn present(&self, records: &[TxtRecord]) -> Result<(), PluginError> {
        self.runtime
            .block_on(self.change(records, Change::Add))
            .map_err(|e| e.with_records(records))
    }

    fn cleanup(&self, records: &[TxtRecord]) -> Result<(), PluginError> {
        self.runtime
            .block_on(self.change(records, Change::Delete))
            .map_err(|e| e.with_records(records))
    }

    fn check(&self) -> Result<Vec<CheckResult>, PluginError> {
        Ok(self.runtime.block_on(self.run_checks()))
    }

    fn metrics(&self) -> BTreeMap<String, u64> {
        let c = &self.counters;
        BTreeMap::from([
            (
                "update_messages".to_owned(),
                c.update_messages.load(Ordering::Relaxed),
            ),
            (
                "dns_queries".to_owned(),
                c.dns_queries.load(Ordering::Relaxed),
            ),
            (
                "tcp_fallbacks".to_owned(),
                c.tcp_fallbacks.load(Ordering::Relaxed),
            ),
        ])
    }
}

/// Records of one batch that go to one zone on one server.
struct ZoneBatch {
    zone: Name,
    server: SocketAddr,
    records: Vec<(Name, String)>,
}

impl Rfc2136 {
    async fn change(&self, records: &[TxtRecord], change: Change) -> Result<(), PluginError> {
        let mut batches: Vec<ZoneBatch> = Vec::new();
        // Zones and primaries found once per batch, not once per record.
        let mut zone_cache: BTreeMap<Name, (Name, SocketAddr)> = BTreeMap::new();
        for (name, value) in dns::names_of(records)? {
            let remembered = self
                .resolved
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&name)
                .cloned();
            let (target, zone, server) = match remembered {
                Some(r) => r,
                None => {
                    let target =
                        dns::follow_cname(self.resolver, &name, self.timeout, &self.counters)
                            .await?;
                    if target != name {
                        self.log
                            .debug(&format!("{name} is a CNAME to {target}: updating {target}"));
                    }
                    let (zone, server) = match self.cached_zone(&zone_cache, &target) {
                        Some(found) => found,
                        None => {
                            let found = self.zone_for(&target).await?;
                            zone_cache.insert(found.0.clone(), found.clone());
                            found
                        }
                    };
                    (target, zone, server)
                }
            };
            if change == Change::Add {
                let mut map = self.resolved.lock().unwrap_or_else(|p| p.into_inner());
                if map.len() >= MAX_REMEMBERED {
                    map.clear();
                }
                map.insert(name.clone(), (target.clone(), zone.clone(), server));
            }
            match batches
                .iter_mut()
                .find(|b| b.zone == zone && b.server == server)
            {
                Some(b) => b.records.push((target, value)),
                None => batches.push(ZoneBatch {
                    zone,
                    server,
                    records: vec![(target, value)],
                }),
            }
        }
        for b in &batches {
            let messages = dns::update_messages(&b.zone, &b.records, change, self.ttl);
            self.log.info(&format!(
                "rfc2136: {} {} TXT record(s) in zone {} at {} ({} UPDATE message(s))",
                match change {
                    Change::Add => "adding",
                    Change::Delete => "deleting",
                },
                b.records.len(),
                b.zone,
                b.server,
                messages.len()
            ));
            for msg in messages {
                dns::send_update(b.server, &self.key, msg, self.timeout, &self.counters).await?;
            }
        }
        if change == Change::Delete {
            let mut map = self.resolved.lock().unwrap_or_else(|p| p.into_inner());
            for r in records {
                if let Ok(name) = dns::parse_name(&r.fqdn) {
                    map.remove(&name);
                }
            }
        }
        Ok(())
    }

    fn cached_zone(
        &self,
        cache: &BTreeMap<Name, (Name, SocketAddr)>,
        name: &Name,
    ) -> Option<(Name, SocketAddr)> {
        // The deepest cached zone that contains the name. A deeper zone not yet seen would be
        // missed only if it was delegated below a zone of this batch: such a name gets its own
        // lookup because its parent zone answers with a referral, not an SOA, for it.
        cache
            .values()
            .filter(|(z, _)| z.zone_of(name))
            .max_by_key(|(z, _)| z.num_labels())
            .filter(|(z, _)| self.zone.is_some() || z.num_labels() + 2 >= name.num_labels())
            .cloned()
    }

    /// The zone of `name` and the server to update it on.
    async fn zone_for(&self, name: &Name) -> Result<(Name, SocketAddr), PluginError> {
        let (zone, mname) = match &self.zone {
            Some(z) if z.zone_of(name) => (z.clone(), None),
            Some(z) => {
                return Err(PluginError::new(
                    ErrorKind::NotFound,
                    format!("{name} is not inside the configured zone {z}"),
                ));
            }
            None => {
                let (z, m) =
                    dns::find_zone(self.resolver, name, self.timeout, &self.counters).await?;
                (z, Some(m))
            }
        };
        let server = match (self.server, mname) {
            (Some(s), _) => s,
            (None, Some(m)) => self.primary_address(&zone, &m).await?,
            (None, None) => {
                let (_, m) =
                    dns::find_zone(self.resolver, &zone, self.timeout, &self.counters).await?;
                self.primary_address(&zone, &m).await?
            }
        };
        Ok((zone, server))
    }

    async fn primary_address(&self, zone: &Name, mname: &Name) -> Result<SocketAddr, PluginError> {
        for rtype in [RecordType::A, RecordType::AAAA] {
            let msg = dns::query(self.resolver, mname, rtype, self.timeout, &self.counters).await?;
            let ip = msg.answers().iter().find_map(|r| match r.data() {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            });
            if let Some(ip) = ip {
                return Ok(SocketAddr::new(ip, 53));
            }
        }
        Err(PluginError::new(
            ErrorKind::NotFound,
            format!(
                "zone {zone}: its primary {mname} (SOA MNAME) has no address at {}; set `server`",
                self.resolver
            ),
        ))
    }

    async fn run_checks(&self) -> Vec<CheckResult> {
        let mut out = vec![CheckResult::ok(
            format!("TSIG key {}", self.key.name),
            format!("loaded ({})", self.key.algorithm_name),
        )];
        let Some(zone) = &self.zone else {
            out.push(CheckResult::ok(
                "zone",
                "found per record at issuance; set `zone` to let a check test the key against it",
            ));
            return out;
        };
        let server = match self.zone_for(zone).await {
            Ok((_, s)) => s,
            Err(e) => {
                out.push(CheckResult::failed(format!("zone {zone}"), e.message));
                return out;
            }
        };
        let what = format!("zone {zone} at {server}");
        match dns::query(server, zone, RecordType::SOA, self.timeout, &self.counters).await {
            Ok(m)
                if m.answers()
                    .iter()
                    .any(|r| matches!(r.data(), RData::SOA(_))) =>
            {
                out.push(CheckResult::ok(format!("{what}: SOA"), "served"));
            }
            Ok(m) => out.push(CheckResult::failed(
                format!("{what}: SOA"),
                format!(
                    "no SOA in the answer ({})",
                    dns::rcode_name(m.response_code())
                ),
            )),
            Err(e) => out.push(CheckResult::failed(format!("{what}: SOA"), e.message)),
        }
        let key_check = format!("{what}: signed no-op UPDATE");
        match dns::send_update(
            server,
            &self.key,
            dns::noop_update(zone),
            self.timeout,
            &self.counters,
        )
        .await
        {
            Ok(()) => out.push(CheckResult::ok(
                key_check,
                "the server accepted the TSIG key",
            )),
            Err(e) => out.push(CheckResult::failed(key_check, e.message)),
        }
        out
    }
}

fn load_key(c: &Config) -> Result<TsigKey, PluginError> {
    match (&c.key_file, &c.secret_env) {
        (Some(_), Some(_)) => Err(PluginError::config(
            "key_file and secret_env: give one or the other",
        )),
        (Some(path), None) => {
            if c.algorithm.is_some() {
                return Err(PluginError::config(
                    "algorithm: comes from the key file; remove it",
                ));
            }
            let text = std::fs::read_to_string(path)
                .map_err(|e| PluginError::config(format!("key_file = {path:?}: {e}")))?;
            tsig::parse_key_file(&text, &format!("key_file {path}"), c.key_name.as_deref())
        }
        (None, Some(var)) => {
            let name = c.key_name.clone().ok_or_else(|| {
                PluginError::config("key_name: required with secret_env (the TSIG key's name)")
            })?;
            let alg = c.algorithm.clone().unwrap_or_else(|| "hmac-sha256".into());
            let value = std::env::var(var).map_err(|_| {
                PluginError::config(format!("secret_env = {var:?}: the variable is not set"))
            })?;
            Ok(TsigKey {
                algorithm: tsig::algorithm(&alg)?,
                algorithm_name: alg.trim_end_matches('.').to_ascii_lowercase(),
                secret: tsig::decode_secret(&value, &format!("environment variable {var}"))?,
                name: name.trim_end_matches('.').to_owned(),
            })
        }
        (None, None) => Err(PluginError::config(
            "no TSIG key: set key_file (a BIND key file) or key_name + secret_env",
        )),
    }
}

/// `HOST:PORT`, `IP:PORT`, `[V6]:PORT` or a bare IP/host (port 53).
fn socket_addr(s: &str, setting: &str) -> Result<SocketAddr, PluginError> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    let with_port = if s.contains(':') {
        s.to_owned()
    } else {
        format!("{s}:53")
    };
    with_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            PluginError::config(format!(
                "{setting} = {s:?}: expected HOST:PORT or an IP address"
            ))
        })
}

fn system_resolver() -> Result<SocketAddr, PluginError> {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .next()
        .ok_or_else(|| {
            PluginError::config(
                "no resolver: set `resolver` or `server` (/etc/resolv.conf names none)",
            )
        })
}

export_plugin!(Rfc2136);
