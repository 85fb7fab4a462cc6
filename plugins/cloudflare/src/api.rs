//! The Cloudflare calls: zones, a zone's TXT records, batches of creates and deletes, all
//! through the v4 envelope.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};

use certfleet_plugin_abi::{CheckResult, ErrorKind, Logger, PluginError, TxtRecord};
use certfleet_plugin_http::ProviderApi;
use certfleet_plugin_http::zone::{ZoneCache, change_by_zone, normalize, txt_quote, txt_unquote};
use certfleet_plugin_http::{ApiClient, HeaderAuth, Request, Response, parse_json};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Adding or removing values.
pub use certfleet_plugin_http::ChangeOp as Op;

/// Cloudflare applies a batch all or nothing; this keeps each one well inside its limits.
const BATCH_SIZE: usize = 100;
/// Pages read of one listing at most (50 zones or 100 records a page).
const MAX_PAGES: u32 = 200;
/// Error codes that mean the token was not accepted.
const AUTH_CODES: &[u64] = &[6003, 6111, 9103, 9106, 9109, 10000];
/// "An identical record already exists" and "Record does not exist": the zone changed
/// under us (or an earlier attempt did land); list again and redo the batch once.
const STALE_CODES: &[u64] = &[81044, 81058];

#[derive(Debug, Deserialize)]
pub struct Envelope<T> {
    pub success: bool,
    #[serde(default)]
    pub errors: Vec<ApiError>,
    pub result: Option<T>,
    #[serde(default)]
    pub result_info: Option<ResultInfo>,
}

#[derive(Debug, Deserialize)]
pub struct ApiError {
    pub code: u64,
    pub message: String,
}

#[derive(Debug, Deserialize)]
pub struct ResultInfo {
    pub page: u32,
    pub total_pages: u32,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Zone {
    pub id: String,
    pub name: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct DnsRecord {
    pub id: String,
    pub name: String,
    pub content: String,
}

#[derive(Debug)]
pub struct Api {
    pub client: ApiClient,
    auth: HeaderAuth,
    ttl: u64,
    zones: ZoneCache<Zone>,
    pub batches: AtomicU64,
    log: Logger,
}

/// A failed call: the error, and the provider's codes (to decide on a second pass).
struct Failure {
    error: PluginError,
    codes: Vec<u64>,
}

impl From<PluginError> for Failure {
    fn from(error: PluginError) -> Failure {
        Failure {
            error,
            codes: Vec::new(),
        }
    }
}

impl Api {
    pub fn new(client: ApiClient, auth: HeaderAuth, ttl: u64, log: Logger) -> Api {
        Api {
            client,
            auth,
            ttl,
            zones: ZoneCache::default(),
            batches: AtomicU64::new(0),
            log,
        }
    }

    /// One call; the envelope's `result` (and `result_info`) on success.
    fn call<T: DeserializeOwned>(&self, req: &Request) -> Result<(T, Option<ResultInfo>), Failure> {
        let resp = self
            .client
            .send(req, &self.auth, &ApiClient::default_retryable)?;
        let what = self.client.describe(req);
        if !resp.is_success()
            && serde_json::from_str::<Envelope<serde_json::Value>>(&resp.body).is_err()
        {
            return Err(failure(&what, &resp, Vec::new()).into_failure(Vec::new()));
        }
        let env: Envelope<T> = parse_json(&what, &resp)?;
        if !resp.is_success() || !env.success {
            let codes: Vec<u64> = env.errors.iter().map(|e| e.code).collect();
            return Err(failure(&what, &resp, env.errors).into_failure(codes));
        }
        let result = env.result.ok_or_else(|| {
            PluginError::new(
                ErrorKind::Provider,
                format!("{what}: malformed answer: success without a result"),
            )
        })?;
        Ok((result, env.result_info))
    }

    /// Every item of a paginated listing at `path` (which has a query already).
    fn list_all<T: DeserializeOwned>(&self, path: &str) -> Result<Vec<T>, PluginError> {
        let mut out = Vec::new();
        for page in 1..=MAX_PAGES {
            let req = Request::get(format!("{path}&page={page}"));
            let (items, info): (Vec<T>, _) = self.call(&req).map_err(|f| f.error)?;
            out.extend(items);
            match info {
                Some(i) if i.page < i.total_pages => {}
                _ => return Ok(out),
            }
        }
        Err(PluginError::new(
            ErrorKind::Provider,
            format!(
                "{}{path}: more than {MAX_PAGES} pages; refusing to read further",
                self.client.base()
            ),
        ))
    }

    fn zone_of(&self, fqdn: &str) -> Result<Zone, PluginError> {
        self.zones.find(
            fqdn,
            |z: &Zone| &z.name,
            || self.list_all("/zones?per_page=50"),
            |zones| {
                format!(
                    "none of the {} zones the API token can see contains it",
                    zones.len()
                )
            },
        )
    }

    fn change_zone(&self, zone: &Zone, records: &[TxtRecord], op: Op) -> Result<(), PluginError> {
        // A second pass only when the first met a record that appeared or vanished meanwhile.
        let mut pass = 0;
        loop {
            pass += 1;
            let existing: Vec<DnsRecord> = self.list_all(&format!(
                "/zones/{}/dns_records?type=TXT&per_page=100",
                zone.id
            ))?;
            let body_items = plan(&existing, records, op, self.ttl);
            let mut stale = None;
            for chunk in body_items.chunks(BATCH_SIZE) {
                let key = if op == Op::Add { "posts" } else { "deletes" };
                let req = Request::json(
                    "POST",
                    format!("/zones/{}/dns_records/batch", zone.id),
                    &serde_json::json!({ key: chunk }),
                );
                self.batches.fetch_add(1, Ordering::Relaxed);
                match self.call::<serde_json::Value>(&req) {
                    Ok(_) => {}
                    Err(f) if pass == 1 && f.codes.iter().any(|c| STALE_CODES.contains(c)) => {
                        stale = Some(f.error);
                        break;
                    }
                    Err(f) => return Err(f.error),
                }
            }
            match stale {
                None => {
                    self.log.debug(&format!(
                        "zone {}: {} {} TXT records",
                        zone.name,
                        if op == Op::Add { "created" } else { "deleted" },
                        body_items.len()
                    ));
                    return Ok(());
                }
                Some(e) => self
                    .log
                    .warn(&format!("{}; listing the zone again", e.message)),
            }
        }
    }
}

impl ProviderApi for Api {
    fn change(&self, records: &[TxtRecord], op: Op) -> Result<(), PluginError> {
        let zone_of = |r: &TxtRecord| self.zone_of(&r.fqdn);
        let change = |zone: &Zone, group: &[TxtRecord]| self.change_zone(zone, group, op);
        change_by_zone(records, |z: &Zone| z.id.clone(), zone_of, None, change)
    }

    fn check(&self) -> Vec<CheckResult> {
        let what = format!("Cloudflare API {}", self.client.base());
        match self.call::<serde_json::Value>(&Request::get("/user/tokens/verify")) {
            Ok((v, _)) => {
                let status = v["status"].as_str().unwrap_or("unknown").to_owned();
                if status != "active" {
                    return vec![CheckResult::failed(
                        what,
                        format!("the API token is {status}, not active"),
                    )];
                }
                let mut out = vec![CheckResult::ok(what, "the API token is valid and active")];
                out.push(match self.list_all::<Zone>("/zones?per_page=50") {
                    Ok(z) => CheckResult::ok("zones", format!("{} zones visible", z.len())),
                    Err(e) => CheckResult::failed("zones", e.message),
                });
                out
            }
            Err(f) => vec![CheckResult::failed(what, f.error.message)],
        }
    }

    fn counters(&self) -> (&ApiClient, Vec<(&'static str, &AtomicU64)>) {
        (&self.client, vec![("change_requests", &self.batches)])
    }
}

/// What one zone's batch carries: for `Add` the records to create (values already there
/// are skipped), for `Remove` the ids of the records holding our values.
pub fn plan(
    existing: &[DnsRecord],
    records: &[TxtRecord],
    op: Op,
    ttl: u64,
) -> Vec<serde_json::Value> {
    let have: BTreeSet<(String, String)> = existing
        .iter()
        .map(|r| (normalize(&r.name), txt_unquote(&r.content)))
        .collect();
    match op {
        Op::Add => {
            let mut seen = BTreeSet::new();
            records
                .iter()
                .map(|r| (normalize(&r.fqdn), r.value.clone()))
                .filter(|k| !have.contains(k) && seen.insert(k.clone()))
                .map(|(name, value)| {
                    serde_json::json!({"type": "TXT", "name": name, "content": txt_quote(&value),
                                       "ttl": ttl, "comment": "certfleet dns-01"})
                })
                .collect()
        }
        Op::Remove => {
            let ours: BTreeSet<(String, String)> = records
                .iter()
                .map(|r| (normalize(&r.fqdn), r.value.clone()))
                .collect();
            existing
                .iter()
                .filter(|r| ours.contains(&(normalize(&r.name), txt_unquote(&r.content))))
                .map(|r| serde_json::json!({"id": r.id}))
                .collect()
        }
    }
}

/// The error for a failed call: kind from the status and Cloudflare's codes.
fn failure(what: &str, resp: &Response, errors: Vec<ApiError>) -> PluginError {
    let auth =
        matches!(resp.status, 401 | 403) || errors.iter().any(|e| AUTH_CODES.contains(&e.code));
    let said = if errors.is_empty() {
        certfleet_plugin_http::snippet(&resp.body, 200)
    } else {
        errors
            .iter()
            .map(|e| format!("{} {}", e.code, e.message))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let (kind, hint) = if auth {
        (
            ErrorKind::Auth,
            ": the API token was rejected (check api_token and its permissions)",
        )
    } else {
        (resp.error_kind(), "")
    };
    PluginError::new(
        kind,
        format!("{what}: HTTP {}{hint}{}: {said}", resp.status, resp.after()),
    )
}

trait IntoFailure {
    fn into_failure(self, codes: Vec<u64>) -> Failure;
}

impl IntoFailure for PluginError {
    fn into_failure(self, codes: Vec<u64>) -> Failure {
        Failure { error: self, codes }
    }
}
