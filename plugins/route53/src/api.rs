//! The Route 53 calls: hosted zones, TXT RRsets, one `ChangeResourceRecordSets` per zone
//! per batch (read-modify-write: Route 53 keeps a TXT RRset as one object), `GetChange`
//! until `INSYNC`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use certfleet_plugin_abi::{CheckResult, ErrorKind, Logger, PluginError, TxtRecord};
use certfleet_plugin_http::zone::{ZoneCache, group_by_zone, normalize, txt_quote};
use certfleet_plugin_http::{ApiClient, Auth, Request, Response, Secret, snippet};

use crate::sigv4::{Credentials, Signable, amz_date, authorization, uri_encode};
use crate::xml::{self, Change, HostedZone, TxtSet};
use certfleet_plugin_http::ProviderApi;

/// Adding or removing values.
pub use certfleet_plugin_http::ChangeOp as Op;

const API: &str = "/2013-04-01";
/// Pages read of one listing at most.
const MAX_PAGES: u32 = 200;
/// Up to this many names are read one by one; more, and the zone's RRsets are listed.
const PER_NAME_READS: usize = 5;
/// Route 53 takes at most 1,000 ResourceRecord elements per request.
const MAX_RECORDS_PER_BATCH: usize = 1000;
/// Read-modify-write rounds per zone when the RRsets changed between read and write.
const RMW_ROUNDS: u32 = 3;
/// Error codes that mean the keys were not accepted.
const AUTH_CODES: &[&str] = &[
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "AccessDeniedException",
    "UnrecognizedClientException",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "InvalidSignatureException",
    "ExpiredToken",
    "AuthFailure",
];

/// SigV4 headers for every attempt.
#[derive(Debug)]
pub struct SigV4Auth {
    pub creds: Credentials,
    pub region: String,
    /// `host[:port]` of the endpoint, as sent in `Host`.
    pub host: String,
}

impl Auth for SigV4Auth {
    fn headers(
        &self,
        method: &str,
        url: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<Vec<(String, String)>, PluginError> {
        let after_scheme = url.split_once("://").map_or(url, |(_, r)| r);
        let path_query = after_scheme.find('/').map_or("/", |i| &after_scheme[i..]);
        let (path, query) = path_query.split_once('?').unwrap_or((path_query, ""));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let date = amz_date(now);
        let mut extra = vec![
            ("host".to_owned(), self.host.clone()),
            ("x-amz-date".to_owned(), date.clone()),
        ];
        if let Some(t) = &self.creds.session_token {
            extra.push(("x-amz-security-token".to_owned(), t.expose().to_owned()));
        }
        let all: Vec<(String, String)> = headers.iter().chain(extra.iter()).cloned().collect();
        let auth = authorization(
            &self.creds,
            &self.region,
            "route53",
            &Signable {
                method,
                path,
                query,
                headers: &all,
                payload: body,
            },
            &date,
        );
        extra.push(("authorization".to_owned(), auth));
        Ok(extra)
    }

    fn secrets(&self) -> Vec<&Secret> {
        let mut s = vec![&self.creds.secret_access_key];
        if let Some(t) = &self.creds.session_token {
            s.push(t);
        }
        s
    }
}

#[derive(Debug)]
pub struct Settings {
    pub hosted_zone_id: Option<String>,
    pub ttl: u32,
    pub poll_interval: Duration,
    pub insync_timeout: Duration,
    pub credential_source: String,
}

#[derive(Debug)]
pub struct Api {
    pub client: ApiClient,
    auth: SigV4Auth,
    settings: Settings,
    zones: ZoneCache<HostedZone>,
    /// Held across read-modify-write (calls may run concurrently on one instance).
    write: Mutex<()>,
    pub changes: AtomicU64,
    pub polls: AtomicU64,
    log: Logger,
}

/// 429/5xx, and Route 53's throttling answers (HTTP 400 with these codes).
pub fn retryable(resp: &Response) -> bool {
    ApiClient::default_retryable(resp)
        || (resp.status == 400
            && xml::error(&resp.body)
                .is_some_and(|(code, _)| code == "Throttling" || code == "PriorRequestNotComplete"))
}

impl Api {
    pub fn new(client: ApiClient, auth: SigV4Auth, settings: Settings, log: Logger) -> Api {
        Api {
            client,
            auth,
            settings,
            zones: ZoneCache::default(),
            write: Mutex::new(()),
            changes: AtomicU64::new(0),
            polls: AtomicU64::new(0),
            log,
        }
    }

    fn send(&self, req: &Request) -> Result<Response, PluginError> {
        self.client.send(req, &self.auth, &retryable)
    }

    fn expect_ok(&self, req: &Request) -> Result<Response, PluginError> {
        let resp = self.send(req)?;
        if resp.is_success() {
            Ok(resp)
        } else {
            Err(self.error(req, &resp))
        }
    }

    fn error(&self, req: &Request, resp: &Response) -> PluginError {
        let what = self.client.describe(req);
        let (code, message) = xml::error(&resp.body).unwrap_or_default();
        let said = if code.is_empty() {
            snippet(&resp.body, 200)
        } else {
            format!("{code}: {message}")
        };
        let (kind, hint) =
            if AUTH_CODES.contains(&code.as_str()) || matches!(resp.status, 401 | 403) {
                (
                    ErrorKind::Auth,
                    format!(
                        ": the AWS credentials from {} were rejected",
                        self.settings.credential_source
                    ),
                )
            } else if code == "NoSuchHostedZone" {
                (ErrorKind::NotFound, String::new())
            } else {
                (resp.error_kind(), String::new())
            };
        PluginError::new(
            kind,
            format!("{what}: HTTP {}{hint}{}: {said}", resp.status, resp.after()),
        )
    }

    fn malformed(&self, req: &Request, resp: &Response, why: String) -> PluginError {
        PluginError::new(
            ErrorKind::Provider,
            format!(
                "{}: malformed answer (HTTP {}): {why}; body: {}",
                self.client.describe(req),
                resp.status,
                snippet(&resp.body, 200)
            ),
        )
    }

    /// Every public hosted zone (private zones cannot serve a public CA's queries).
    fn list_zones(&self) -> Result<Vec<HostedZone>, PluginError> {
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut path = format!("{API}/hostedzone?maxitems=100");
            if let Some(m) = &marker {
                path.push_str(&format!("&marker={}", uri_encode(m, true)));
            }
            let req = Request::get(path);
            let resp = self.expect_ok(&req)?;
            let (zones, next) =
                xml::hosted_zones(&resp.body).map_err(|why| self.malformed(&req, &resp, why))?;
            out.extend(zones.into_iter().filter(|z| !z.private));
            match next {
                Some(n) => marker = Some(n),
                None => return Ok(out),
            }
        }
        Err(PluginError::new(
            ErrorKind::Provider,
            format!("ListHostedZones: more than {MAX_PAGES} pages; refusing to read further"),
        ))
    }

    fn zone_of(&self, fqdn: &str) -> Result<HostedZone, PluginError> {
        if let Some(id) = &self.settings.hosted_zone_id {
            return Ok(HostedZone {
                id: id.clone(),
                name: id.clone(),
                private: false,
            });
        }
        self.zones.find(
            fqdn,
            |z: &HostedZone| &z.name,
            || self.list_zones(),
            |zones| {
                format!(
                    "none of the {} public hosted zones of these credentials contains it",
                    zones.len()
                )
            },
        )
    }

    /// The current TXT sets of `names` (absolute, lowercase) in `zone`.
    fn read_sets(&self, zone: &HostedZone, names: &[&String]) -> Result<Vec<TxtSet>, PluginError> {
        let base = format!("{API}/hostedzone/{}/rrset", zone.id);
        let mut out = Vec::new();
        if names.len() <= PER_NAME_READS {
            for n in names {
                let req = Request::get(format!(
                    "{base}?name={}&type=TXT&maxitems=1",
                    uri_encode(n, true)
                ));
                let resp = self.expect_ok(&req)?;
                let (sets, _) =
                    xml::txt_sets(&resp.body).map_err(|why| self.malformed(&req, &resp, why))?;
                // The listing starts at the name and may return the next RRset instead.
                out.extend(sets.into_iter().filter(|s| xml::same_name(&s.name, n)));
            }
            return Ok(out);
        }
        let mut next: Option<(String, String)> = None;
        for _ in 0..MAX_PAGES {
            let mut path = format!("{base}?maxitems=300");
            if let Some((n, t)) = &next {
                path.push_str(&format!(
                    "&name={}&type={}",
                    uri_encode(n, true),
                    uri_encode(t, true)
                ));
            }
            let req = Request::get(path);
            let resp = self.expect_ok(&req)?;
            let (sets, more) =
                xml::txt_sets(&resp.body).map_err(|why| self.malformed(&req, &resp, why))?;
            out.extend(
                sets.into_iter()
                    .filter(|s| names.iter().any(|n| xml::same_name(&s.name, n))),
            );
            match more {
                Some(m) => next = Some(m),
                None => return Ok(out),
            }
        }
        Err(PluginError::new(
            ErrorKind::Provider,
            format!(
                "ListResourceRecordSets of {}: more than {MAX_PAGES} pages",
                zone.name
            ),
        ))
    }

    /// One zone: read, plan, submit (re-reading when the RRsets changed meanwhile); returns
    /// the change ids to wait for.
    fn change_zone(
        &self,
        zone: &HostedZone,
        records: &[TxtRecord],
        op: Op,
    ) -> Result<Vec<String>, PluginError> {
        let mut wanted: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for r in records {
            wanted
                .entry(format!("{}.", normalize(&r.fqdn)))
                .or_default()
                .push(&r.value);
        }
        let names: Vec<&String> = wanted.keys().collect();
        let mut ids = Vec::new();
        for round in 1..=RMW_ROUNDS {
            let sets = self.read_sets(zone, &names)?;
            let changes: Vec<Change> = wanted
                .iter()
                .flat_map(|(name, values)| {
                    let existing = sets.iter().find(|s| xml::same_name(&s.name, name));
                    plan(name, existing, values, op, self.settings.ttl)
                })
                .collect();
            if changes.is_empty() {
                return Ok(ids);
            }
            let mut stale = false;
            for chunk in chunks(&changes) {
                let req = Request::new("POST", format!("{API}/hostedzone/{}/rrset/", zone.id))
                    .body("text/xml", xml::change_batch(chunk).into_bytes());
                self.changes.fetch_add(1, Ordering::Relaxed);
                let resp = self.send(&req)?;
                if resp.is_success() {
                    let (id, _) = xml::change_info(&resp.body)
                        .map_err(|why| self.malformed(&req, &resp, why))?;
                    ids.push(id);
                    continue;
                }
                let code = xml::error(&resp.body).map(|(c, _)| c).unwrap_or_default();
                if code == "InvalidChangeBatch" && round < RMW_ROUNDS {
                    self.log.warn(&format!(
                        "zone {}: {}; reading the RRsets again",
                        zone.name,
                        self.error(&req, &resp).message
                    ));
                    stale = true;
                    break;
                }
                return Err(self.error(&req, &resp));
            }
            if !stale {
                self.log.debug(&format!(
                    "zone {}: {} changes submitted in {} batch(es)",
                    zone.name,
                    changes.len(),
                    ids.len()
                ));
                return Ok(ids);
            }
        }
        Ok(ids)
    }

    fn wait_insync(&self, zone: &HostedZone, id: &str) -> Result<(), PluginError> {
        let started = Instant::now();
        loop {
            let req = Request::get(format!("{API}/change/{}", uri_encode(id, true)));
            self.polls.fetch_add(1, Ordering::Relaxed);
            let resp = self.expect_ok(&req)?;
            let (_, status) =
                xml::change_info(&resp.body).map_err(|why| self.malformed(&req, &resp, why))?;
            if status == "INSYNC" {
                return Ok(());
            }
            if started.elapsed() + self.settings.poll_interval > self.settings.insync_timeout {
                return Err(PluginError::new(
                    ErrorKind::Provider,
                    format!(
                        "change {id} of zone {} is still {status} after {:.0}s (insync_timeout_secs = {})",
                        zone.name,
                        started.elapsed().as_secs_f64(),
                        self.settings.insync_timeout.as_secs()
                    ),
                ));
            }
            std::thread::sleep(self.settings.poll_interval);
        }
    }
}

impl ProviderApi for Api {
    fn change(&self, records: &[TxtRecord], op: Op) -> Result<(), PluginError> {
        let groups = group_by_zone(
            records,
            |z: &HostedZone| z.id.clone(),
            |r| self.zone_of(&r.fqdn),
        )?;
        let _guard = match self.write.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut submitted = Vec::new();
        for (zone, members) in &groups {
            let owned: Vec<TxtRecord> = members.iter().map(|r| (*r).clone()).collect();
            let ids = self
                .change_zone(zone, &owned, op)
                .map_err(|e| e.with_records(&owned))?;
            submitted.extend(ids.into_iter().map(|id| (zone.clone(), id, owned.clone())));
        }
        // All zones' changes were submitted first, so they propagate in parallel.
        for (zone, id, owned) in submitted {
            self.wait_insync(&zone, &id)
                .map_err(|e| e.with_records(&owned))?;
        }
        Ok(())
    }

    fn check(&self) -> Vec<CheckResult> {
        let what = format!("Route 53 API {}", self.client.base());
        let source = &self.settings.credential_source;
        if let Some(id) = &self.settings.hosted_zone_id {
            let req = Request::get(format!("{API}/hostedzone/{id}"));
            return vec![match self.expect_ok(&req) {
                Ok(_) => CheckResult::ok(
                    what,
                    format!("credentials from {source} accepted; hosted zone {id} exists"),
                ),
                Err(e) => CheckResult::failed(what, e.message),
            }];
        }
        vec![match self.list_zones() {
            Ok(z) => CheckResult::ok(
                what,
                format!(
                    "credentials from {source} accepted; {} public hosted zones visible",
                    z.len()
                ),
            ),
            Err(e) => CheckResult::failed(what, e.message),
        }]
    }

    fn counters(&self) -> (&ApiClient, Vec<(&'static str, &AtomicU64)>) {
        (
            &self.client,
            vec![
                ("change_requests", &self.changes),
                ("change_polls", &self.polls),
            ],
        )
    }
}

/// The changes for one owner name: `DELETE` of the RRset exactly as read (Route 53 refuses
/// it if the RRset changed since: our optimistic lock) and `CREATE` of the new one, or
/// nothing when no value changes.
pub fn plan(
    name: &str,
    existing: Option<&TxtSet>,
    values: &[&str],
    op: Op,
    ttl: u32,
) -> Vec<Change> {
    let plain = existing.map(TxtSet::plain).unwrap_or_default();
    let mut after: Vec<String> = existing.map(|s| s.values.clone()).unwrap_or_default();
    match op {
        Op::Add => {
            let mut have = plain.clone();
            for v in values {
                if !have.iter().any(|h| h == v) {
                    after.push(txt_quote(v));
                    have.push((*v).to_owned());
                }
            }
        }
        Op::Remove => {
            after = existing
                .map(|s| {
                    s.values
                        .iter()
                        .zip(&plain)
                        .filter(|(_, p)| !values.contains(&p.as_str()))
                        .map(|(v, _)| v.clone())
                        .collect()
                })
                .unwrap_or_default();
        }
    }
    let before = existing.map(|s| s.values.clone()).unwrap_or_default();
    if after == before {
        return Vec::new();
    }
    let ttl = existing.map_or(ttl, |s| s.ttl);
    let mut out = Vec::new();
    if let Some(s) = existing {
        out.push(Change {
            action: "DELETE",
            set: s.clone(),
        });
    }
    if !after.is_empty() {
        out.push(Change {
            action: "CREATE",
            set: TxtSet {
                name: name.to_owned(),
                ttl,
                values: after,
            },
        });
    }
    out
}

/// `changes` split so that no request carries more than [`MAX_RECORDS_PER_BATCH`] values;
/// a DELETE and the CREATE of the same name stay together.
fn chunks(changes: &[Change]) -> Vec<&[Change]> {
    let mut out = Vec::new();
    let (mut start, mut count) = (0, 0);
    let mut i = 0;
    while i < changes.len() {
        // A name's DELETE is always followed by its CREATE (if any): keep the pair whole.
        let pair = if changes[i].action == "DELETE"
            && changes
                .get(i + 1)
                .is_some_and(|n| n.action == "CREATE" && n.set.name == changes[i].set.name)
        {
            2
        } else {
            1
        };
        let n: usize = changes[i..i + pair]
            .iter()
            .map(|c| c.set.values.len())
            .sum();
        if count + n > MAX_RECORDS_PER_BATCH && i > start {
            out.push(&changes[start..i]);
            start = i;
            count = 0;
        }
        count += n;
        i += pair;
    }
    if start < changes.len() {
        out.push(&changes[start..]);
    }
    out
}
