//! A CA test double: an HTTPS reverse proxy in front of a [`Pebble`] that behaves like
//! Let's Encrypt where Pebble 2.4 cannot (spec-notes §1, §4):
//!
//! - rate limits with small numbers ([`ProxyLimits`]) answered exactly as Let's Encrypt
//!   does: 429, `urn:ietf:params:acme:error:rateLimited`, `Retry-After`, a `help` link,
//!   Let's Encrypt's detail text, and a fresh `Replay-Nonce` from Pebble;
//! - 503s with `Retry-After` injected at a configured rate (deterministic per seed);
//! - `renewalInfo` (windows chosen per CertID by the test) and `meta.profiles` added to the
//!   directory, unknown profiles refused with `invalidProfile`;
//! - counters: requests per endpoint, new orders, finalizations per name set, 429s per
//!   limit, injected 503s, `replaces` seen, the most authorizations pending at once for one
//!   account ([`ProxyStats`], [`pending`]);
//! - order polls answered late ([`CaProxyOptions::order_poll_delay`]), as a CA whose
//!   validation takes a while, and the first new order held up on its way
//!   ([`CaProxyOptions::first_new_order_delay`]), as a slow first connection;
//! - everything RFC 8555 leaves unordered permuted at random ([`CaProxyOptions::reorder`]):
//!   the lists of an order, an authorization and an orders page, JSON members, `Link`s.
//!
//! The proxy listens on 127.0.0.1 (port picked by the OS) with Pebble's TLS server
//! certificate, so clients trust [`Pebble::tls_root_pem_path`] as usual. Requests are
//! forwarded with the proxy's `Host`, so Pebble writes every URL (directory, `Location`,
//! order and authorization links) for the proxy and checks JWS `url`s against it.
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use certfleet_testenv::{CaProxy, CaProxyOptions, LimitSpec, Pebble, PebbleOptions};
//! let pebble = Pebble::start(PebbleOptions::default()).await?;
//! let mut options = CaProxyOptions::default();
//! options.limits.new_orders_per_account = Some(LimitSpec::new(20, Duration::from_secs(60)));
//! let proxy = CaProxy::start(&pebble, options).await?;
//! println!("directory {}", proxy.directory_url());
//! println!("{:?}", proxy.stats());
//! # Ok(()) }
//! ```

mod pending;
mod reorder;
mod rules;

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

pub use rules::{JwsPeek, LimitSpec, ProxyLimits, Refusal, go_duration, peek_jws};

use crate::{Pebble, install_crypto_provider};
use rules::{Buckets, Dice, name_set_key, registered_domain};

const RENEWAL_INFO_PATH: &str = "/renewal-info";

/// How the proxy behaves; everything off by default (a transparent proxy).
#[derive(Clone, Debug)]
pub struct CaProxyOptions {
    pub limits: ProxyLimits,
    /// Fraction (0.0–1.0) of requests answered 503 instead of forwarded; directory
    /// requests are never hit.
    pub unavailable_rate: f64,
    /// `Retry-After` of injected 503s.
    pub unavailable_retry_after: Duration,
    /// Seed of the 503 dice.
    pub seed: u64,
    /// Add `renewalInfo` to the directory and serve it.
    pub renewal_info: bool,
    /// Window served for CertIDs without one of their own (`None`: 404).
    pub default_renewal_window: Option<(OffsetDateTime, OffsetDateTime)>,
    /// `Retry-After` of renewalInfo answers.
    pub renewal_info_retry_after: Duration,
    /// renewalInfo is down: every request gets a 503 (`serverInternal`).
    pub renewal_info_down: bool,
    /// `meta.profiles` to advertise (name → description); when not empty, orders naming
    /// another profile get `invalidProfile`.
    pub profiles: BTreeMap<String, String>,
    /// Order polls (POST-as-GET of an order) are answered this much later.
    pub order_poll_delay: Duration,
    /// The first new order reaches the CA this much late: its rate-limit rules see it
    /// then, as a CA does a request held up on its way (a slow first connection).
    pub first_new_order_delay: Duration,
    /// Every authorization is answered as if it were for this DNS name: a CA that hands out
    /// authorizations for names the order does not name.
    pub authorization_name: Option<String>,
    /// Seed of a CA that reorders, in every response, what RFC 8555 leaves unordered
    /// (see the `reorder` module); `None`: Pebble's order as it is.
    pub reorder: Option<u64>,
}

impl Default for CaProxyOptions {
    fn default() -> Self {
        CaProxyOptions {
            limits: ProxyLimits::default(),
            unavailable_rate: 0.0,
            unavailable_retry_after: Duration::from_secs(1),
            seed: 1,
            renewal_info: true,
            default_renewal_window: None,
            renewal_info_retry_after: Duration::from_secs(6 * 3600),
            renewal_info_down: false,
            profiles: BTreeMap::new(),
            order_poll_delay: Duration::ZERO,
            first_new_order_delay: Duration::ZERO,
            authorization_name: None,
            reorder: None,
        }
    }
}

/// What the proxy has seen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Requests per endpoint (first path segment: `dir`, `nonce-plz`, `order-plz`,
    /// `my-order`, `authZ`, `chalZ`, `finalize-order`, `certZ`, `renewal-info`, …),
    /// counted before any rule applies.
    pub requests: BTreeMap<String, u64>,
    /// New orders Pebble created.
    pub new_orders: u64,
    /// Successful finalizations per name set (sorted names joined with `,`).
    pub finalizations: BTreeMap<String, u64>,
    /// 429s per limit (`new-orders-per-account`, `certificates-per-registered-domain`,
    /// `certificates-per-name-set`).
    pub rate_limited: BTreeMap<String, u64>,
    /// 503s injected.
    pub injected_unavailable: u64,
    /// `replaces` values of new orders, in arrival order.
    pub replaces: Vec<String>,
    /// The most authorizations one account had pending at once (counted by the `pending` module).
    pub max_pending_authorizations: u64,
    /// Responses in which the reordering CA changed an order, per what it changed
    /// (`identifiers`, `authorizations`, `challenges`, `orders`, `members`, `link`).
    pub reordered: BTreeMap<String, u64>,
}

impl ProxyStats {
    /// Asserts no name set was finalized twice and `n` were finalized, of which up to
    /// `uncounted` may be missing from the count (a killed client's finalize requests in
    /// flight reach Pebble, but the proxy counts when it answers).
    #[track_caller]
    pub fn assert_finalized_once(&self, n: usize, uncounted: usize) {
        let twice: Vec<_> = self
            .finalizations
            .iter()
            .filter(|(_, c)| **c != 1)
            .collect();
        assert!(twice.is_empty(), "finalized more than once: {twice:?}");
        let counted = self.finalizations.len();
        assert!(
            counted <= n && counted + uncounted >= n,
            "{counted} name sets finalized, expected {n} (up to {uncounted} uncounted): {self:?}"
        );
    }
}

impl ProxyStats {
    /// All 429s.
    pub fn rate_limited_total(&self) -> u64 {
        self.rate_limited.values().sum()
    }

    /// Requests to one endpoint.
    pub fn requests_to(&self, endpoint: &str) -> u64 {
        self.requests.get(endpoint).copied().unwrap_or(0)
    }
}

#[derive(Debug)]
struct State {
    options: CaProxyOptions,
    buckets: Buckets,
    dice: Dice,
    /// The reordering CA's own dice (the 503 dice keep their sequence).
    reorder: Option<Dice>,
    windows: BTreeMap<String, (OffsetDateTime, OffsetDateTime)>,
    /// A new order has arrived (the first one's delay is spent).
    new_order_seen: bool,
    stats: ProxyStats,
    pending: pending::PendingAuthorizations,
}

#[derive(Debug)]
struct Shared {
    upstream: reqwest::Client,
    upstream_origin: String,
    host: String,
    new_nonce_path: String,
    new_order_path: String,
    state: Mutex<State>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere leaves valid counters; keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The running proxy; stops (with all its connections) when dropped.
#[derive(Debug)]
pub struct CaProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for CaProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CaProxy {
    /// Starts the proxy in front of `pebble` on a free loopback port.
    pub async fn start(pebble: &Pebble, options: CaProxyOptions) -> Result<CaProxy> {
        install_crypto_provider();
        let work = pebble.work_dir();
        let certs = CertificateDer::pem_file_iter(work.join("tls-server-cert.pem"))
            .context("reading Pebble's TLS server certificate")?
            .collect::<Result<Vec<_>, _>>()
            .context("parsing Pebble's TLS server certificate")?;
        let key = PrivateKeyDer::from_pem_file(work.join("tls-server-key.pem"))
            .context("reading Pebble's TLS server key")?;
        let mut tls = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .context("building the proxy's TLS configuration")?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the CA proxy")?;
        let addr = listener.local_addr()?;
        let host = format!("localhost:{}", addr.port());
        let root = std::fs::read(pebble.tls_root_pem_path())?;
        let upstream = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&root)?])
            .no_proxy()
            .http1_only()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .context("building the upstream client")?;
        let dir_url = pebble.directory_url();
        let upstream_origin = dir_url
            .strip_suffix("/dir")
            .ok_or_else(|| anyhow!("unexpected Pebble directory URL {dir_url}"))?
            .to_owned();
        let dir: Value = upstream
            .get(&dir_url)
            .header(header::HOST, &host)
            .send()
            .await
            .context("fetching Pebble's directory")?
            .json()
            .await
            .context("parsing Pebble's directory")?;
        let path_of = |field: &str| -> Result<String> {
            let url = dir[field]
                .as_str()
                .ok_or_else(|| anyhow!("Pebble's directory lacks {field}"))?;
            Ok(url::Url::parse(url)?.path().to_owned())
        };
        let shared = Arc::new(Shared {
            upstream,
            upstream_origin,
            new_nonce_path: path_of("newNonce")?,
            new_order_path: path_of("newOrder")?,
            host,
            state: Mutex::new(State {
                dice: Dice::new(options.seed),
                reorder: options.reorder.map(Dice::new),
                options,
                buckets: Buckets::default(),
                windows: BTreeMap::new(),
                new_order_seen: false,
                stats: ProxyStats::default(),
                pending: pending::PendingAuthorizations::default(),
            }),
        });
        let task = tokio::spawn(accept_loop(listener, acceptor, shared.clone()));
        Ok(CaProxy { addr, shared, task })
    }

    /// `https://localhost:<port>/dir`.
    pub fn directory_url(&self) -> String {
        format!("https://localhost:{}/dir", self.addr.port())
    }

    /// The listening address (127.0.0.1).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Counters so far.
    pub fn stats(&self) -> ProxyStats {
        let st = self.shared.state();
        let mut stats = st.stats.clone();
        stats.max_pending_authorizations = st.pending.max;
        stats
    }

    /// Serves `[start, end)` as the suggested window of `cert_id` (RFC 9773 CertID).
    pub fn set_renewal_window(&self, cert_id: &str, start: OffsetDateTime, end: OffsetDateTime) {
        self.shared
            .state()
            .windows
            .insert(cert_id.to_owned(), (start, end));
    }

    /// Takes renewalInfo down (every request a 503) or brings it back.
    pub fn set_renewal_info_down(&self, down: bool) {
        self.shared.state().options.renewal_info_down = down;
    }

    /// Changes the 503 rate from now on.
    pub fn set_unavailable_rate(&self, rate: f64) {
        self.shared.state().options.unavailable_rate = rate;
    }

    /// Changes the limits from now on (buckets keep their state).
    pub fn set_limits(&self, limits: ProxyLimits) {
        self.shared.state().options.limits = limits;
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
) {
    // Dropped (and every connection aborted) when the proxy's task is aborted.
    let mut connections = JoinSet::new();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        while connections.try_join_next().is_some() {}
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        connections.spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req| handle(shared.clone(), req));
            // Connection errors (client gone) end only this connection.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

type Resp = Response<Full<Bytes>>;

fn endpoint_of(path: &str) -> String {
    path.trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("")
        .to_owned()
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(plain(StatusCode::BAD_REQUEST, "unreadable body")),
    };
    let path = parts.uri.path().to_owned();
    let now = OffsetDateTime::now_utc();
    {
        let mut st = shared.state();
        *st.stats.requests.entry(endpoint_of(&path)).or_default() += 1;
        let rate = st.options.unavailable_rate;
        if path != "/dir" && st.dice.roll(rate) {
            st.stats.injected_unavailable += 1;
            let secs = st.options.unavailable_retry_after.as_secs().max(1);
            let mut r = plain(StatusCode::SERVICE_UNAVAILABLE, "503 Service Unavailable");
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            return Ok(r);
        }
    }
    // In a task of its own: a client killed mid-request (the crash tests) drops this
    // handler, but Pebble still completes what was forwarded, and the counts must say so.
    let task = tokio::spawn(async move {
        let resp = if path.starts_with(RENEWAL_INFO_PATH) && parts.method == Method::GET {
            renewal_info(&shared, &path)
        } else if parts.method == Method::POST && path == shared.new_order_path {
            let now = new_order_arrival(&shared, now).await;
            new_order(&shared, &parts, body, now).await?
        } else {
            let delay = shared.state().options.order_poll_delay;
            if parts.method == Method::POST && endpoint_of(&path) == "my-order" {
                tokio::time::sleep(delay).await;
            }
            let (resp, json) = forward(&shared, &parts, body).await?;
            after_forward(&shared, &path, resp, json, now)
        };
        Ok(reorder::response(&shared, resp).await)
    });
    let result = match task.await {
        Ok(result) => result,
        Err(e) => Err(anyhow::anyhow!("proxy task failed: {e}")),
    };
    Ok(result.unwrap_or_else(|e| plain(StatusCode::BAD_GATEWAY, &format!("CA proxy: {e:#}"))))
}

fn plain(status: StatusCode, text: &str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(text.to_owned())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

fn json_response(status: StatusCode, content_type: &'static str, v: &Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// Sends the request to Pebble with the proxy's `Host`; returns the response and its
/// body parsed as JSON when it is JSON.
async fn forward(
    shared: &Shared,
    parts: &hyper::http::request::Parts,
    body: Bytes,
) -> Result<(Resp, Option<Value>)> {
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{pq}", shared.upstream_origin);
    let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes())?;
    let mut rb = shared
        .upstream
        .request(method, &url)
        .header(header::HOST, &shared.host);
    for h in [header::CONTENT_TYPE, header::ACCEPT, header::USER_AGENT] {
        if let Some(v) = parts.headers.get(&h) {
            rb = rb.header(h.as_str(), v.as_bytes());
        }
    }
    let resp = rb
        .body(body.to_vec())
        .send()
        .await
        .with_context(|| format!("forwarding to {url}"))?;
    let status = StatusCode::from_u16(resp.status().as_u16())?;
    let mut headers = Vec::new();
    for name in [
        "replay-nonce",
        "location",
        "link",
        "content-type",
        "retry-after",
        "cache-control",
    ] {
        for v in resp.headers().get_all(name) {
            headers.push((name, v.as_bytes().to_vec()));
        }
    }
    let bytes = resp.bytes().await.context("reading Pebble's answer")?;
    let json = serde_json::from_slice::<Value>(&bytes).ok();
    let mut out = Response::new(Full::new(bytes));
    *out.status_mut() = status;
    for (name, v) in headers {
        if let Ok(v) = HeaderValue::from_bytes(&v) {
            out.headers_mut().append(name, v);
        }
    }
    Ok((out, json))
}

/// Directory augmentation and finalization counting.
fn after_forward(
    shared: &Shared,
    path: &str,
    resp: Resp,
    json: Option<Value>,
    now: OffsetDateTime,
) -> Resp {
    if let Some(body) = &json
        && resp.status().is_success()
    {
        shared.state().pending.observed(path, body);
    }
    if path == "/dir" && resp.status().is_success() {
        let Some(mut dir) = json else { return resp };
        let st = shared.state();
        if st.options.renewal_info {
            dir["renewalInfo"] = json!(format!("https://{}{RENEWAL_INFO_PATH}", shared.host));
        }
        if !st.options.profiles.is_empty() {
            if !dir["meta"].is_object() {
                dir["meta"] = json!({});
            }
            dir["meta"]["profiles"] = json!(st.options.profiles);
        }
        return json_response(StatusCode::OK, "application/json", &dir);
    }
    let foreign_name = shared.state().options.authorization_name.clone();
    if endpoint_of(path) == "authZ"
        && resp.status().is_success()
        && let Some(name) = foreign_name
        && let Some(authz) = &json
    {
        let mut authz = authz.clone();
        authz["identifier"]["value"] = json!(name);
        let mut out = json_response(resp.status(), "application/json", &authz);
        for (k, v) in resp.headers() {
            if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
                out.headers_mut().append(k, v.clone());
            }
        }
        return out;
    }
    let is_finalize = endpoint_of(path) == "finalize-order";
    if is_finalize && resp.status() == StatusCode::OK {
        let names: BTreeSet<String> = json
            .as_ref()
            .and_then(|o| o["identifiers"].as_array())
            .map(|ids| {
                ids.iter()
                    .filter_map(|i| i["value"].as_str())
                    .map(str::to_ascii_lowercase)
                    .collect()
            })
            .unwrap_or_default();
        let mut st = shared.state();
        let limits = st.options.limits.clone();
        let domains: BTreeSet<String> = names.iter().map(|n| registered_domain(n)).collect();
        if let Some(l) = limits.certificates_per_registered_domain {
            for d in &domains {
                st.buckets.take(&format!("domain:{d}"), l, now);
            }
        }
        let set = name_set_key(&names);
        if let Some(l) = limits.certificates_per_name_set {
            st.buckets.take(&format!("set:{set}"), l, now);
        }
        *st.stats.finalizations.entry(set).or_default() += 1;
    }
    resp
}

fn renewal_info(shared: &Shared, path: &str) -> Resp {
    let cert_id = path[RENEWAL_INFO_PATH.len()..].trim_start_matches('/');
    let st = shared.state();
    if st.options.renewal_info_down {
        let problem = json!({
            "type": "urn:ietf:params:acme:error:serverInternal",
            "detail": "renewalInfo is unavailable",
            "status": 503,
        });
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "application/problem+json",
            &problem,
        );
    }
    let window = st
        .windows
        .get(cert_id)
        .copied()
        .or(st.options.default_renewal_window);
    let Some((start, end)) = window else {
        let problem = json!({
            "type": "urn:ietf:params:acme:error:malformed",
            "detail": format!("no renewal information for certificate {cert_id}"),
            "status": 404,
        });
        return json_response(StatusCode::NOT_FOUND, "application/problem+json", &problem);
    };
    let fmt = |t: OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
    let body = json!({"suggestedWindow": {"start": fmt(start), "end": fmt(end)}});
    let mut r = json_response(StatusCode::OK, "application/json", &body);
    r.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(st.options.renewal_info_retry_after.as_secs()),
    );
    r
}

/// A fresh nonce from Pebble for an answer the proxy makes itself.
async fn fresh_nonce(shared: &Shared) -> Option<HeaderValue> {
    let url = format!("{}{}", shared.upstream_origin, shared.new_nonce_path);
    let resp = shared
        .upstream
        .head(url)
        .header(header::HOST, &shared.host)
        .send()
        .await
        .ok()?;
    let v = resp.headers().get("replay-nonce")?;
    HeaderValue::from_bytes(v.as_bytes()).ok()
}

async fn problem_with_nonce(shared: &Shared, status: StatusCode, problem: Value) -> Resp {
    let mut r = json_response(status, "application/problem+json", &problem);
    if let Some(nonce) = fresh_nonce(shared).await {
        r.headers_mut().insert("replay-nonce", nonce);
    }
    r
}

/// When the rate-limit rules see a new order received at `received`: the first one
/// [`CaProxyOptions::first_new_order_delay`] later, every other one at once.
async fn new_order_arrival(shared: &Shared, received: OffsetDateTime) -> OffsetDateTime {
    let delay = {
        let mut st = shared.state();
        let first = !std::mem::replace(&mut st.new_order_seen, true);
        first.then_some(st.options.first_new_order_delay)
    };
    match delay.filter(|d| !d.is_zero()) {
        Some(d) => {
            tokio::time::sleep(d).await;
            OffsetDateTime::now_utc()
        }
        None => received,
    }
}

async fn new_order(
    shared: &Shared,
    parts: &hyper::http::request::Parts,
    body: Bytes,
    now: OffsetDateTime,
) -> Result<Resp> {
    let peek = peek_jws(&body);
    let account = peek.kid.clone().unwrap_or_default();
    let unknown_profile = {
        let st = shared.state();
        peek.profile
            .clone()
            .filter(|p| !st.options.profiles.is_empty() && !st.options.profiles.contains_key(p))
    };
    if let Some(p) = unknown_profile {
        let problem = json!({
            "type": "urn:ietf:params:acme:error:invalidProfile",
            "detail": format!("profile {p:?} is not offered"),
            "status": 400,
        });
        return Ok(problem_with_nonce(shared, StatusCode::BAD_REQUEST, problem).await);
    }
    let (refusal, refusal_pending, limits) = {
        let mut st = shared.state();
        let limits = st.options.limits.clone();
        let exempt = limits.ari_renewals_exempt
            && peek.replaces.as_ref().is_some_and(|r| {
                st.windows
                    .get(r)
                    .or(st.options.default_renewal_window.as_ref())
                    .is_some_and(|(s, e)| *s <= now && now < *e)
            });
        let mut refusal: Option<(Refusal, time::Duration)> = None;
        // Pending authorizations are counted for every order, renewals too.
        let mut refusal_pending = None;
        if let Some(l) = limits.pending_authorizations_per_account {
            let pending = st.pending.of(&account);
            if pending + peek.names.len() as u64 > l {
                refusal_pending = Some((pending, l));
                *st.stats
                    .rate_limited
                    .entry("pending-authorizations-per-account".to_owned())
                    .or_default() += 1;
            }
        }
        if !exempt {
            let mut consider = |r: Refusal, wait: time::Duration| {
                if wait > time::Duration::ZERO && refusal.as_ref().is_none_or(|(_, w)| wait > *w) {
                    refusal = Some((r, wait));
                }
            };
            if let Some(l) = limits.new_orders_per_account {
                consider(
                    Refusal::NewOrders { limit: l },
                    st.buckets.wait(&format!("orders:{account}"), l, now),
                );
            }
            if let Some(l) = limits.certificates_per_registered_domain {
                let domains: BTreeSet<String> =
                    peek.names.iter().map(|n| registered_domain(n)).collect();
                for d in domains {
                    let wait = st.buckets.wait(&format!("domain:{d}"), l, now);
                    consider(
                        Refusal::RegisteredDomain {
                            domain: d,
                            limit: l,
                        },
                        wait,
                    );
                }
            }
            if let Some(l) = limits.certificates_per_name_set {
                let wait = st
                    .buckets
                    .wait(&format!("set:{}", name_set_key(&peek.names)), l, now);
                consider(Refusal::NameSet { limit: l }, wait);
            }
            if refusal.is_none()
                && refusal_pending.is_none()
                && let Some(l) = limits.new_orders_per_account
            {
                st.buckets.take(&format!("orders:{account}"), l, now);
            }
        }
        if let Some((r, _)) = &refusal {
            *st.stats
                .rate_limited
                .entry(r.kind().to_owned())
                .or_default() += 1;
        }
        (
            refusal,
            refusal_pending,
            if exempt {
                None
            } else {
                limits.new_orders_per_account
            },
        )
    };
    if let Some((pending, limit)) = refusal_pending {
        let problem = json!({
            "type": "urn:ietf:params:acme:error:rateLimited",
            "detail": format!(
                "too many currently pending authorizations ({pending} of {limit}): see \
                 https://letsencrypt.org/docs/rate-limits/#authorization-failures-per-hostname-per-account"
            ),
            "status": 429,
        });
        let mut resp = problem_with_nonce(shared, StatusCode::TOO_MANY_REQUESTS, problem).await;
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(1u64));
        return Ok(resp);
    }
    if let Some((r, wait)) = refusal {
        let secs = wait.whole_seconds() + i64::from(wait.subsec_nanoseconds() > 0);
        let retry_at = now + time::Duration::seconds(secs);
        let problem = json!({
            "type": "urn:ietf:params:acme:error:rateLimited",
            "detail": r.detail(retry_at),
            "status": 429,
        });
        let mut resp = problem_with_nonce(shared, StatusCode::TOO_MANY_REQUESTS, problem).await;
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        resp.headers_mut().insert(
            header::LINK,
            HeaderValue::from_static("<https://letsencrypt.org/docs/rate-limits/>;rel=\"help\""),
        );
        return Ok(resp);
    }
    let forwarded = forward(shared, parts, body).await;
    let created = matches!(&forwarded, Ok((resp, _)) if resp.status() == StatusCode::CREATED);
    let mut st = shared.state();
    if created {
        st.stats.new_orders += 1;
        if let Ok((_, Some(order))) = &forwarded {
            st.pending.order_created(&account, order);
        }
        if let Some(r) = peek.replaces {
            st.stats.replaces.push(r);
        }
    } else if let Some(l) = limits {
        // Let's Encrypt refunds the new-order token when creation fails.
        st.buckets.refund(&format!("orders:{account}"), l, now);
    }
    forwarded.map(|(resp, _)| resp)
}
