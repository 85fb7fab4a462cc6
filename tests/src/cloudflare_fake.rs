//! A local fake of the parts of Cloudflare's v4 API the `cloudflare` plugin uses, enforcing
//! what the real API enforces for these calls: `Authorization: Bearer <token>` (a missing or
//! malformed header is 400 code 6003, an unknown token 403 code 10000), zone and record ids,
//! the envelope `{success, errors: [{code, message}], messages, result, result_info}`,
//! pagination (`page`, `per_page`, `total_pages`), identical records refused (81058), and
//! atomic `dns_records/batch`. Knobs inject 429s, 500s and malformed bodies.
//!
//! It runs on its own thread with its own runtime (usable from sync and async tests) on a
//! free loopback port, and stops on drop.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Result;

use crate::loopback_http::LoopbackHttp;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Response};
use serde_json::{Value, json};

/// What the next requests get instead of a real answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 429 with `Retry-After: 1` and code 971.
    RateLimited,
    /// 500 with code 10001.
    ServerError,
    /// 200 with a body that is not the envelope (an HTML error page).
    Malformed,
}

#[derive(Debug, Clone)]
struct Record {
    id: String,
    zone_id: String,
    name: String,
    content: String,
    ttl: u64,
}

#[derive(Debug, Default)]
struct State {
    tokens: Vec<String>,
    zones: Vec<(String, String)>,
    records: Vec<Record>,
    next_id: u64,
    /// (remaining count, fault); `u32::MAX` means forever.
    fault: Option<(u32, Fault)>,
    /// `METHOD path` of every request, in order.
    log: Vec<String>,
}

impl State {
    fn new_id(&mut self) -> String {
        self.next_id += 1;
        format!("{:032x}", 0x00c0_ffee_0000_0000_u64 + self.next_id)
    }
}

/// A running fake; stops on drop.
#[derive(Debug)]
pub struct CloudflareFake {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    _server: LoopbackHttp,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    match state.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl CloudflareFake {
    /// Serves `zones` (names without trailing dot) to holders of `token`.
    pub fn start(token: &str, zones: &[&str]) -> Result<CloudflareFake> {
        let mut state = State {
            tokens: vec![token.to_owned()],
            ..State::default()
        };
        for z in zones {
            let id = state.new_id();
            state.zones.push((id, (*z).to_owned()));
        }
        let state = Arc::new(Mutex::new(state));
        let shared = state.clone();
        let server = LoopbackHttp::start("cloudflare-fake", move |req| {
            let shared = shared.clone();
            Box::pin(async move { handle(&shared, req).await })
        })?;
        Ok(CloudflareFake {
            addr: server.addr(),
            state,
            _server: server,
        })
    }

    /// The plugin's `base_url`: `http://127.0.0.1:PORT/client/v4`.
    pub fn base_url(&self) -> String {
        format!("http://{}/client/v4", self.addr)
    }

    /// The zone id of `zone`.
    pub fn zone_id(&self, zone: &str) -> Option<String> {
        lock(&self.state)
            .zones
            .iter()
            .find(|(_, n)| n == zone)
            .map(|(id, _)| id.clone())
    }

    /// The next `count` requests (`u32::MAX`: all) get `fault`.
    pub fn inject(&self, fault: Fault, count: u32) {
        lock(&self.state).fault = Some((count, fault));
    }

    /// Stops injecting faults.
    pub fn heal(&self) {
        lock(&self.state).fault = None;
    }

    /// Adds a TXT record someone else owns; returns its id.
    pub fn add_txt(&self, name: &str, content: &str) -> String {
        let mut s = lock(&self.state);
        let name = name.trim_end_matches('.').to_owned();
        let zone_id = longest_zone(&s.zones, &name).unwrap_or_default();
        let id = s.new_id();
        s.records.push(Record {
            id: id.clone(),
            zone_id,
            name,
            content: content.to_owned(),
            ttl: 60,
        });
        id
    }

    /// TXT contents of `name` (with or without trailing dot), sorted, quotes removed.
    pub fn txt(&self, name: &str) -> Vec<String> {
        let name = name.trim_end_matches('.');
        let mut v: Vec<String> = lock(&self.state)
            .records
            .iter()
            .filter(|r| r.name == name)
            .map(|r| r.content.trim_matches('"').to_owned())
            .collect();
        v.sort();
        v
    }

    /// Number of records in `zone`.
    pub fn record_count(&self, zone: &str) -> usize {
        let id = self.zone_id(zone).unwrap_or_default();
        lock(&self.state)
            .records
            .iter()
            .filter(|r| r.zone_id == id)
            .count()
    }

    /// `METHOD path` of every request so far.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.state).log.clone()
    }
}

fn longest_zone(zones: &[(String, String)], name: &str) -> Option<String> {
    zones
        .iter()
        .filter(|(_, z)| name == z || name.ends_with(&format!(".{z}")))
        .max_by_key(|(_, z)| z.len())
        .map(|(id, _)| id.clone())
}

type Resp = Response<Full<Bytes>>;

fn envelope(status: u16, result: Value, errors: &[(u64, &str)], info: Option<Value>) -> Resp {
    let mut body = json!({
        "success": errors.is_empty(),
        "errors": errors.iter().map(|(c, m)| json!({"code": c, "message": m})).collect::<Vec<_>>(),
        "messages": [],
        "result": result,
    });
    if let Some(i) = info {
        body["result_info"] = i;
    }
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_default()
}

fn error(status: u16, code: u64, message: &str) -> Resp {
    envelope(status, Value::Null, &[(code, message)], None)
}

/// An error answer before it is built: HTTP status, Cloudflare code, message.
type Refusal = (u16, u64, &'static str);

fn refuse((status, code, message): Refusal) -> Resp {
    error(status, code, message)
}

fn query(uri: &hyper::Uri) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// One page of `items` per `page`/`per_page` (bounds as Cloudflare's: per_page 5..=max).
fn paginate(
    items: Vec<Value>,
    q: &BTreeMap<String, String>,
    max: usize,
) -> Result<(Value, Value), Refusal> {
    let page: usize = q
        .get("page")
        .map_or(Ok(1), |p| p.parse())
        .map_err(|_| (400, 1001, "invalid page"))?;
    let per: usize = q
        .get("per_page")
        .map_or(Ok(20), |p| p.parse())
        .map_err(|_| (400, 1001, "invalid per_page"))?;
    if page == 0 || !(5..=max).contains(&per) {
        return Err((400, 1001, "page or per_page out of range"));
    }
    let total = items.len();
    let pages = total.div_ceil(per).max(1);
    let slice: Vec<Value> = items.into_iter().skip((page - 1) * per).take(per).collect();
    let info = json!({"page": page, "per_page": per, "count": slice.len(),
                      "total_count": total, "total_pages": pages});
    Ok((Value::Array(slice), info))
}

fn record_json(r: &Record, zone: &str) -> Value {
    json!({"id": r.id, "zone_id": r.zone_id, "zone_name": zone, "name": r.name, "type": "TXT",
           "content": r.content, "ttl": r.ttl, "proxied": false})
}

async fn handle(state: &Mutex<State>, req: Request<hyper::body::Incoming>) -> Resp {
    let method = req.method().as_str().to_owned();
    let uri = req.uri().clone();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return error(400, 9207, "Request body is invalid."),
    };
    let mut s = lock(state);
    s.log.push(format!("{method} {}", uri.path()));
    if let Some((left, fault)) = s.fault {
        if left != u32::MAX {
            s.fault = (left > 1).then_some((left - 1, fault));
        }
        return match fault {
            Fault::RateLimited => {
                let mut r = error(
                    429,
                    971,
                    "Please wait and consider throttling your request speed",
                );
                r.headers_mut()
                    .insert("retry-after", hyper::header::HeaderValue::from_static("1"));
                r
            }
            Fault::ServerError => error(500, 10001, "Internal server error"),
            Fault::Malformed => Response::builder()
                .status(200)
                .header("content-type", "text/html")
                .body(Full::new(Bytes::from_static(
                    b"<html><body>502 Bad Gateway</body></html>",
                )))
                .unwrap_or_default(),
        };
    }
    let token = match auth.as_deref().and_then(|a| a.strip_prefix("Bearer ")) {
        Some(t) if !t.is_empty() && !t.contains(' ') => t.to_owned(),
        _ => {
            return envelope(
                400,
                Value::Null,
                &[
                    (6003, "Invalid request headers"),
                    (6111, "Invalid format for Authorization header"),
                ],
                None,
            );
        }
    };
    if !s.tokens.contains(&token) {
        return error(403, 10000, "Authentication error");
    }
    let Some(path) = uri.path().strip_prefix("/client/v4") else {
        return error(404, 7000, "No route for that URI");
    };
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let q = query(&uri);
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["user", "tokens", "verify"]) => envelope(
            200,
            json!({"id": "0123456789abcdef0123456789abcdef", "status": "active"}),
            &[],
            None,
        ),
        ("GET", ["zones"]) => {
            let zones: Vec<Value> = s
                .zones
                .iter()
                .filter(|(_, n)| q.get("name").is_none_or(|want| want == n))
                .map(|(id, n)| json!({"id": id, "name": n, "status": "active"}))
                .collect();
            match paginate(zones, &q, 50) {
                Ok((result, info)) => envelope(200, result, &[], Some(info)),
                Err(r) => refuse(r),
            }
        }
        (_, ["zones", zid, "dns_records", rest @ ..]) => {
            let Some(zone) = s
                .zones
                .iter()
                .find(|(id, _)| id == zid)
                .map(|(_, n)| n.clone())
            else {
                return envelope(
                    400,
                    Value::Null,
                    &[
                        (
                            7003,
                            "Could not route to /zones/…/dns_records, perhaps your object identifier is invalid?",
                        ),
                        (7000, "No route for that URI"),
                    ],
                    None,
                );
            };
            let zid = (*zid).to_owned();
            dns_records(&mut s, &method, &zid, &zone, rest, &q, &body)
        }
        _ => error(404, 7000, "No route for that URI"),
    }
}

fn dns_records(
    s: &mut State,
    method: &str,
    zid: &str,
    zone: &str,
    rest: &[&str],
    q: &BTreeMap<String, String>,
    body: &[u8],
) -> Resp {
    match (method, rest) {
        ("GET", []) => {
            let items: Vec<Value> = s
                .records
                .iter()
                .filter(|r| r.zone_id == zid)
                .filter(|_| q.get("type").is_none_or(|t| t == "TXT"))
                .filter(|r| {
                    q.get("name")
                        .is_none_or(|n| n.trim_end_matches('.') == r.name)
                })
                .map(|r| record_json(r, zone))
                .collect();
            match paginate(items, q, 5000) {
                Ok((result, info)) => envelope(200, result, &[], Some(info)),
                Err(r) => refuse(r),
            }
        }
        ("POST", []) => {
            let Ok(v) = serde_json::from_slice::<Value>(body) else {
                return error(400, 9207, "Request body is invalid.");
            };
            match create(s, zid, zone, &v) {
                Ok(r) => envelope(200, record_json(&r, zone), &[], None),
                Err(e) => refuse(e),
            }
        }
        ("DELETE", [rid]) => match s
            .records
            .iter()
            .position(|r| r.id == *rid && r.zone_id == zid)
        {
            Some(i) => {
                s.records.remove(i);
                envelope(200, json!({"id": rid}), &[], None)
            }
            None => error(404, 81044, "Record does not exist."),
        },
        ("POST", ["batch"]) => {
            let Ok(v) = serde_json::from_slice::<Value>(body) else {
                return error(400, 9207, "Request body is invalid.");
            };
            // All or nothing, as Cloudflare's batch: work on a copy, commit at the end.
            let before = (s.records.clone(), s.next_id);
            let mut deleted = Vec::new();
            for d in v["deletes"].as_array().into_iter().flatten() {
                let rid = d["id"].as_str().unwrap_or("");
                match s
                    .records
                    .iter()
                    .position(|r| r.id == rid && r.zone_id == zid)
                {
                    Some(i) => deleted.push(record_json(&s.records.remove(i), zone)),
                    None => {
                        (s.records, s.next_id) = before;
                        return error(404, 81044, "Record does not exist.");
                    }
                }
            }
            let mut posted = Vec::new();
            for p in v["posts"].as_array().into_iter().flatten() {
                match create(s, zid, zone, p) {
                    Ok(r) => posted.push(record_json(&r, zone)),
                    Err(e) => {
                        (s.records, s.next_id) = before;
                        return refuse(e);
                    }
                }
            }
            envelope(
                200,
                json!({"deletes": deleted, "posts": posted, "patches": [], "puts": []}),
                &[],
                None,
            )
        }
        _ => error(404, 7000, "No route for that URI"),
    }
}

fn create(s: &mut State, zid: &str, zone: &str, v: &Value) -> Result<Record, Refusal> {
    let (Some("TXT"), Some(name), Some(content)) = (
        v["type"].as_str(),
        v["name"].as_str(),
        v["content"].as_str(),
    ) else {
        return Err((
            400,
            9005,
            "Content, name and type are required (this fake knows only TXT)",
        ));
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name != zone && !name.ends_with(&format!(".{zone}")) {
        return Err((400, 9007, "Record name is not within the zone"));
    }
    let ttl = v["ttl"].as_u64().unwrap_or(1);
    if ttl != 1 && !(60..=86400).contains(&ttl) {
        return Err((
            400,
            9021,
            "Invalid TTL. Must be between 60 and 86400 seconds, or 1 for Automatic.",
        ));
    }
    if s.records
        .iter()
        .any(|r| r.zone_id == zid && r.name == name && r.content == content)
    {
        return Err((400, 81058, "An identical record already exists."));
    }
    let r = Record {
        id: s.new_id(),
        zone_id: zid.to_owned(),
        name,
        content: content.to_owned(),
        ttl,
    };
    s.records.push(r.clone());
    Ok(r)
}
