//! `rfc2136`: a certfleet DNS-01 plugin that adds and removes `_acme-challenge` TXT records
//! with RFC 2136 dynamic updates signed with TSIG (RFC 8945) — BIND, Knot and PowerDNS accept
//! them — or with GSS-TSIG (RFC 3645, Kerberos; `gss_tsig = true`, see `gss.rs`), which Active
//! Directory DNS with secure updates and Kerberized BIND require.
//!
//! For a batch it follows each name's CNAME (delegation into a validation zone), finds the
//! zone that holds the final name by SOA queries (the shared `certfleet-dns-zones` routine the
//! host's propagation checker uses too), groups the records per zone and sends **one UPDATE
//! per zone** that adds (or deletes) each value as a single RR, never the RRset, so a wildcard
//! and its apex can hold two values at once. After an add it reads every value back from the
//! server that accepted it: a server that accepts a record it then does not serve took it
//! into the wrong zone (below a zone cut), which is reported as such. UDP when the message
//! fits, TCP otherwise or when the UDP answer is truncated or lost.
//!
//! Settings (`[plugins.rfc2136]`, see docs/plugins.md):
//! `server` (`HOST:PORT` or `IP`; default the zone's SOA MNAME on port 53), `zone` (optional
//! guard, one zone or a list: names outside are refused; never a destination), `resolver`
//! (where discovery queries go; default `server`, else the first `nameserver` of
//! /etc/resolv.conf), `key_file` (BIND `key` statements or Knot `keymgr -t` YAML) or
//! `key_name` + `algorithm` + `secret_env` / `secret_file` (base64 secret in an environment
//! variable or a 0600 file), or `gss_tsig = true` with optional `keytab`, `principal` and
//! `server_principal`; `ttl` (default 60), `timeout_secs` (default 10).

mod check;
mod dns;
mod gss;
mod tkey;
mod tsig;
mod update;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use certfleet_dns_zones::{Guard, Located, ZoneFinder};
use certfleet_plugin_abi::{
    ChangeInput, CheckResult, ErrorKind, Logger, Plugin, PluginError, TxtRecord, export_plugin,
};
use hickory_proto::rr::{Name, RData, RecordType};
use serde::Deserialize;

use crate::dns::{Auth, Counters, Discovery};
use crate::gss::{GssSettings, GssTsig};

/// `zone = "corp.test"` or `zone = ["corp.test", "acme.corp.test"]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Zones {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    server: Option<String>,
    #[serde(default)]
    zone: Option<Zones>,
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
    #[serde(default)]
    secret_file: Option<String>,
    /// Sign with GSS-TSIG (Kerberos, RFC 3645) instead of an HMAC key.
    #[serde(default)]
    gss_tsig: bool,
    #[serde(default)]
    keytab: Option<String>,
    #[serde(default)]
    principal: Option<String>,
    #[serde(default)]
    server_principal: Option<String>,
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
    guard: Guard,
    resolver: SocketAddr,
    auth: Auth,
    ttl: u32,
    timeout: Duration,
    log: Logger,
    counters: Counters,
    /// Zones of names, learnt from SOA answers (the routine the host's checker uses too).
    zones: ZoneFinder,
    /// Where each presented name went (CNAME target, zone, server), so cleanup needs no
    /// lookups. Entries leave on cleanup; bounded by [`MAX_REMEMBERED`].
    resolved: Mutex<HashMap<Name, Resolved>>,
    /// Primary addresses per zone apex (SOA MNAME → A/AAAA), when `server` is not set.
    primaries: Mutex<HashMap<Name, SocketAddr>>,
    runtime: tokio::runtime::Runtime,
}

type Resolved = (Name, Name, SocketAddr);

impl std::fmt::Debug for Rfc2136 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rfc2136")
            .field("server", &self.server)
            .field("guard", &self.guard)
            .field("auth", &self.auth.describe())
            .finish_non_exhaustive()
    }
}

impl Plugin for Rfc2136 {
    const NAME: &'static str = "rfc2136";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn create(config: serde_json::Value, log: Logger) -> Result<Self, PluginError> {
        let c: Config = serde_json::from_value(config)
            .map_err(|e| PluginError::config(format!("[plugins.rfc2136]: {e}")))?;
        let auth = auth_of(&c)?;
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
        let zones = match c.zone {
            None => Vec::new(),
            Some(Zones::One(z)) => vec![z],
            Some(Zones::Many(v)) => v,
        };
        let guard = Guard::parse(&zones).map_err(|e| PluginError::config(format!("zone: {e}")))?;
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
        if let (Auth::Gss(g), Some(host), Some(s)) =
            (&auth, c.server.as_deref().and_then(host_of), server)
        {
            g.learn_host(s, &host);
        }
        log.debug(&format!(
            "rfc2136: {}, server {}, resolver {resolver}",
            auth.describe(),
            server.map_or("SOA MNAME".to_owned(), |s| s.to_string())
        ));
        Ok(Rfc2136 {
            server,
            guard,
            resolver,
            auth,
            ttl: c.ttl,
            timeout: Duration::from_secs(c.timeout_secs),
            log,
            counters: Counters::default(),
            zones: ZoneFinder::new(),
            resolved: Mutex::new(HashMap::new()),
            primaries: Mutex::new(HashMap::new()),
            runtime,
        })
    }

    const COMBINED_CHANGES: bool = true;

    fn present(&self, records: &[TxtRecord]) -> Result<(), PluginError> {
        self.runtime
            .block_on(self.change(&[], records, true))
            .map_err(|e| e.with_records(records))
    }

    fn cleanup(&self, records: &[TxtRecord]) -> Result<(), PluginError> {
        self.runtime
            .block_on(self.change(records, &[], true))
            .map_err(|e| e.with_records(records))
    }

    /// One UPDATE per zone carrying the deletes and the adds.
    fn apply(&self, change: &ChangeInput) -> Result<(), PluginError> {
        let read_back = !change.host_checks_propagation;
        self.runtime
            .block_on(self.change(&change.remove, &change.add, read_back))
            .map_err(|e| {
                let all: Vec<TxtRecord> =
                    change.remove.iter().chain(&change.add).cloned().collect();
                e.with_records(&all)
            })
    }

    fn check(&self) -> Result<Vec<CheckResult>, PluginError> {
        Ok(self.runtime.block_on(self.run_checks(&[])))
    }

    fn check_names(&self, names: &[String]) -> Result<Vec<CheckResult>, PluginError> {
        Ok(self.runtime.block_on(self.run_checks(names)))
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
            (
                "tkey_negotiations".to_owned(),
                match &self.auth {
                    Auth::Gss(g) => g.negotiations.load(Ordering::Relaxed),
                    Auth::Hmac(_) => 0,
                },
            ),
        ])
    }
}

impl Rfc2136 {
    fn discovery(&self) -> Discovery<'_> {
        Discovery {
            resolver: self.resolver,
            timeout: self.timeout,
            counters: &self.counters,
        }
    }

    /// Follows the name's CNAMEs, finds the zone of the target by SOA queries and checks
    /// the result against the configured zones.
    async fn locate(&self, name: &Name) -> Result<Located, PluginError> {
        let located = self
            .zones
            .locate(&self.discovery(), name)
            .await
            .map_err(zone_error)?;
        self.guard.check(&located).map_err(zone_error)?;
        if located.target != located.name {
            self.log.debug(&format!(
                "{} is a CNAME to {}: updating zone {}",
                located.name, located.target, located.zone.apex
            ));
        }
        Ok(located)
    }

    /// The server to update for a located name: `server`, else the zone's SOA MNAME.
    async fn server_for(&self, l: &Located) -> Result<SocketAddr, PluginError> {
        if let Some(s) = self.server {
            if let (Auth::Gss(g), Some(m)) = (&self.auth, &l.zone.primary) {
                g.learn_host(s, &m.to_ascii());
            }
            return Ok(s);
        }
        let apex = &l.zone.apex;
        if let Some(s) = self
            .primaries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(apex)
        {
            return Ok(*s);
        }
        let mname = match &l.zone.primary {
            Some(m) => m.clone(),
            None => self
                .zones
                .zone_of(&self.discovery(), apex)
                .await
                .map_err(zone_error)?
                .primary
                .ok_or_else(|| {
                    PluginError::new(
                        ErrorKind::NotFound,
                        format!(
                            "zone {apex}: no SOA (primary name) visible at {}; set `server`",
                            self.resolver
                        ),
                    )
                })?,
        };
        let addr = self.primary_address(apex, &mname).await?;
        if let Auth::Gss(g) = &self.auth {
            g.learn_host(addr, &mname.to_ascii());
        }
        self.primaries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(apex.clone(), addr);
        Ok(addr)
    }

    async fn primary_address(&self, zone: &Name, mname: &Name) -> Result<SocketAddr, PluginError> {
        for rtype in [RecordType::A, RecordType::AAAA] {
            let msg = dns::query(
                self.resolver,
                mname,
                rtype,
                true,
                self.timeout,
                &self.counters,
            )
            .await?;
            let ip = msg.answers.iter().find_map(|r| match &r.data {
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
}

/// The signer the settings ask for: GSS-TSIG (`gss_tsig = true`, no HMAC settings) or an
/// HMAC TSIG key.
fn auth_of(c: &Config) -> Result<Auth, PluginError> {
    let hmac_set = [
        &c.key_file,
        &c.key_name,
        &c.algorithm,
        &c.secret_env,
        &c.secret_file,
    ]
    .iter()
    .any(|s| s.is_some());
    let gss_set = [&c.keytab, &c.principal, &c.server_principal]
        .iter()
        .any(|s| s.is_some());
    if c.gss_tsig {
        if hmac_set {
            return Err(PluginError::config(
                "gss_tsig = true: remove key_file, key_name, algorithm, secret_env and \
                 secret_file (GSS-TSIG uses Kerberos, no HMAC key)",
            ));
        }
        return Ok(Auth::Gss(GssTsig::new(GssSettings {
            keytab: c.keytab.clone(),
            principal: c.principal.clone(),
            server_principal: c.server_principal.clone(),
        })?));
    }
    if gss_set {
        return Err(PluginError::config(
            "keytab, principal and server_principal need gss_tsig = true",
        ));
    }
    Ok(Auth::Hmac(tsig::load_key(&tsig::KeySettings {
        key_file: c.key_file.as_deref(),
        key_name: c.key_name.as_deref(),
        algorithm: c.algorithm.as_deref(),
        secret_env: c.secret_env.as_deref(),
        secret_file: c.secret_file.as_deref(),
    })?))
}

/// The host part of a `server` setting that is a name, not an address.
fn host_of(server: &str) -> Option<String> {
    if server.parse::<SocketAddr>().is_ok() || server.parse::<IpAddr>().is_ok() {
        return None;
    }
    Some(
        server
            .rsplit_once(':')
            .map_or(server, |(h, _)| h)
            .to_owned(),
    )
}

pub(crate) fn zone_error(e: certfleet_dns_zones::ZoneError) -> PluginError {
    use certfleet_dns_zones::ZoneError as Z;
    let kind = match &e {
        Z::Lookup { .. } => ErrorKind::Network,
        Z::OutsideGuard { .. } | Z::CnameOutsideGuard { .. } | Z::ZoneAboveGuard { .. } => {
            ErrorKind::Config
        }
        _ => ErrorKind::NotFound,
    };
    PluginError::new(kind, e.to_string())
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
