//! The PowerDNS calls: zones, a zone's RRsets, and one `PATCH` per zone per batch.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use certfleet_plugin_abi::{CheckResult, ErrorKind, Logger, PluginError, TxtRecord};
use certfleet_plugin_http::ProviderApi;
use certfleet_plugin_http::zone::{
    ZoneCache, change_by_zone, is_in, normalize, txt_quote, txt_unquote,
};
use certfleet_plugin_http::{ApiClient, HeaderAuth, Request, Response, parse_json, snippet};
use serde::{Deserialize, Serialize};

/// Adding or removing values.
pub use certfleet_plugin_http::ChangeOp as Op;

/// A zone as `GET …/zones` lists it (`id` is the URL-safe form of the name).
#[derive(Clone, Debug, Deserialize)]
pub struct Zone {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Deserialize)]
pub struct ZoneDetail {
    #[serde(default)]
    pub rrsets: Vec<RRset>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct RRset {
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: String,
    #[serde(default)]
    pub ttl: Option<u32>,
    #[serde(default)]
    pub records: Vec<Rec>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rec {
    pub content: String,
    #[serde(default)]
    pub disabled: bool,
}

#[derive(Debug)]
pub struct Api {
    pub client: ApiClient,
    auth: HeaderAuth,
    server_id: String,
    zone: Option<String>,
    ttl: u32,
    zones: ZoneCache<Zone>,
    /// Held across each zone's read-modify-write.
    write: Mutex<()>,
    pub patches: AtomicU64,
    log: Logger,
}

impl Api {
    pub fn new(
        client: ApiClient,
        auth: HeaderAuth,
        server_id: String,
        zone: Option<String>,
        ttl: u32,
        log: Logger,
    ) -> Api {
        Api {
            client,
            auth,
            server_id,
            zone,
            ttl,
            zones: ZoneCache::default(),
            write: Mutex::new(()),
            patches: AtomicU64::new(0),
            log,
        }
    }

    fn server_path(&self) -> String {
        format!("/api/v1/servers/{}", self.server_id)
    }

    fn send(&self, req: &Request) -> Result<Response, PluginError> {
        self.client
            .send(req, &self.auth, &ApiClient::default_retryable)
    }

    /// `req`'s answer when it is a success, else an error naming the request.
    fn expect_ok(&self, req: &Request) -> Result<Response, PluginError> {
        let resp = self.send(req)?;
        if resp.is_success() {
            return Ok(resp);
        }
        Err(self.error(req, &resp))
    }

    fn error(&self, req: &Request, resp: &Response) -> PluginError {
        let what = self.client.describe(req);
        let said = serde_json::from_str::<serde_json::Value>(&resp.body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| snippet(&resp.body, 200));
        let hint = match resp.status {
            401 | 403 => ": the API key was rejected (check api_key)",
            _ => "",
        };
        PluginError::new(
            resp.error_kind(),
            format!("{what}: HTTP {}{hint}{}: {said}", resp.status, resp.after()),
        )
    }

    fn list_zones(&self) -> Result<Vec<Zone>, PluginError> {
        let req = Request::get(format!("{}/zones", self.server_path()));
        let resp = self.expect_ok(&req)?;
        parse_json(&self.client.describe(&req), &resp)
    }

    fn zone_of(&self, fqdn: &str) -> Result<Zone, PluginError> {
        if let Some(z) = &self.zone {
            let name = normalize(z);
            if !is_in(&normalize(fqdn), &name) {
                return Err(PluginError::new(
                    ErrorKind::NotFound,
                    format!("{fqdn} is not in zone = {z:?}"),
                ));
            }
            return Ok(Zone {
                id: format!("{name}."),
                name: format!("{name}."),
            });
        }
        self.zones.find(
            fqdn,
            |z: &Zone| &z.name,
            || self.list_zones(),
            |zones| {
                let seen: Vec<&str> = zones.iter().take(10).map(|z| z.name.as_str()).collect();
                format!(
                    "no zone on {} contains it (zones: {})",
                    self.client.base(),
                    if seen.is_empty() {
                        "none".to_owned()
                    } else {
                        seen.join(", ")
                    }
                )
            },
        )
    }

    fn change_zone(&self, zone: &Zone, records: &[TxtRecord], op: Op) -> Result<(), PluginError> {
        let path = format!("{}/zones/{}", self.server_path(), zone.id);
        let req = Request::get(path.clone());
        let resp = self.expect_ok(&req)?;
        let detail: ZoneDetail = parse_json(&self.client.describe(&req), &resp)?;
        let mut wanted: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for r in records {
            wanted
                .entry(format!("{}.", normalize(&r.fqdn)))
                .or_default()
                .push(&r.value);
        }
        let rrsets: Vec<serde_json::Value> = wanted
            .iter()
            .filter_map(|(name, values)| {
                let existing = detail
                    .rrsets
                    .iter()
                    .find(|s| s.rtype == "TXT" && normalize(&s.name) == normalize(name));
                plan(name, existing, values, op, self.ttl)
            })
            .collect();
        if rrsets.is_empty() {
            self.log
                .debug(&format!("zone {}: nothing to change", zone.name));
            return Ok(());
        }
        let n = rrsets.len();
        let req = Request::json("PATCH", path, &serde_json::json!({ "rrsets": rrsets }));
        self.patches.fetch_add(1, Ordering::Relaxed);
        self.expect_ok(&req)?;
        self.log.debug(&format!(
            "zone {}: {} {n} TXT RRsets in one PATCH",
            zone.name,
            if op == Op::Add { "extended" } else { "reduced" }
        ));
        Ok(())
    }
}

impl ProviderApi for Api {
    /// Adds or removes the values of `records`: per zone one GET and (when anything
    /// changes) one PATCH.
    fn change(&self, records: &[TxtRecord], op: Op) -> Result<(), PluginError> {
        let zone_of = |r: &TxtRecord| self.zone_of(&r.fqdn);
        // One batch of this instance at a time: a read-modify-write must not interleave.
        let write = Some(&self.write);
        let change = |zone: &Zone, group: &[TxtRecord]| self.change_zone(zone, group, op);
        change_by_zone(records, |z: &Zone| z.id.clone(), zone_of, write, change)
    }

    fn check(&self) -> Vec<CheckResult> {
        let mut out = Vec::new();
        let req = Request::get(self.server_path());
        let what = format!("PowerDNS API {}", self.client.base());
        match self.send(&req) {
            Ok(r) if r.is_success() => {
                let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
                out.push(CheckResult::ok(
                    what,
                    format!(
                        "server {} answers: {} {}; the API key is accepted",
                        self.server_id,
                        v["daemon_type"].as_str().unwrap_or("?"),
                        v["version"].as_str().unwrap_or("?")
                    ),
                ));
            }
            Ok(r) => {
                out.push(CheckResult::failed(what, self.error(&req, &r).message));
                return out;
            }
            Err(e) => {
                out.push(CheckResult::failed(what, e.message));
                return out;
            }
        }
        let zones = match &self.zone {
            Some(z) => self
                .expect_ok(&Request::get(format!(
                    "{}/zones/{}.",
                    self.server_path(),
                    normalize(z)
                )))
                .map(|_| format!("zone {z} exists")),
            None => self
                .list_zones()
                .map(|z| format!("{} zones visible", z.len())),
        };
        out.push(match zones {
            Ok(detail) => CheckResult::ok("zones", detail),
            Err(e) => CheckResult::failed("zones", e.message),
        });
        out
    }

    fn counters(&self) -> (&ApiClient, Vec<(&'static str, &AtomicU64)>) {
        (&self.client, vec![("change_requests", &self.patches)])
    }
}

/// The RRset change for `name` (absolute, lowercase): `None` when nothing changes, a
/// `DELETE` when no value is left, else a `REPLACE` with every value to keep.
pub fn plan(
    name: &str,
    existing: Option<&RRset>,
    values: &[&str],
    op: Op,
    ttl: u32,
) -> Option<serde_json::Value> {
    let before: Vec<Rec> = existing.map(|s| s.records.clone()).unwrap_or_default();
    let mut after = before.clone();
    match op {
        Op::Add => {
            for v in values {
                if !after.iter().any(|r| txt_unquote(&r.content) == *v) {
                    after.push(Rec {
                        content: txt_quote(v),
                        disabled: false,
                    });
                }
            }
        }
        Op::Remove => after.retain(|r| !values.contains(&txt_unquote(&r.content).as_str())),
    }
    if after == before {
        return None;
    }
    if after.is_empty() {
        return Some(serde_json::json!({"name": name, "type": "TXT", "changetype": "DELETE"}));
    }
    Some(serde_json::json!({
        "name": name,
        "type": "TXT",
        "ttl": existing.and_then(|s| s.ttl).unwrap_or(ttl),
        "changetype": "REPLACE",
        "records": after,
    }))
}
