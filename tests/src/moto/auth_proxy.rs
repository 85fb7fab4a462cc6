//! A reverse proxy in front of moto that turns moto's signature checking on for exactly the
//! requests moto can check. moto 5 verifies SigV4 by re-signing the request with botocore,
//! but for a request without a body it signs its parsed query string (or headers) as the
//! body, so it rejects every correctly signed GET, boto3's included. POSTs (Route 53's
//! `ChangeResourceRecordSets`) it verifies correctly, and an unknown access key id it
//! rejects before looking at the signature. So: auth enforced for POSTs and for requests
//! signed with an access key id moto does not know; off for the rest. Requests are
//! serialised so the switch cannot race.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};

use crate::loopback_http::LoopbackHttp;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Response};
use tokio::sync::Mutex;

#[derive(Debug)]
pub struct Shared {
    upstream: String,
    key_id: String,
    client: reqwest::Client,
    /// Whether moto currently enforces auth; held across each switch + request.
    pub gate: Mutex<bool>,
    /// Whether the tests asked for enforcement at all.
    pub enforce: AtomicBool,
    /// `METHOD path` of every request forwarded, in order.
    pub log: std::sync::Mutex<Vec<String>>,
}

impl Shared {
    /// Switches moto's enforcement (POST /moto-api/reset-auth) if `on` differs from now.
    pub async fn switch(&self, current: &mut bool, on: bool) -> Result<()> {
        if *current == on {
            return Ok(());
        }
        let url = format!("{}/moto-api/reset-auth", self.upstream);
        let resp = self
            .client
            .post(&url)
            .body(if on { "0" } else { "inf" })
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        anyhow::ensure!(
            resp.status().is_success(),
            "POST {url}: HTTP {}",
            resp.status()
        );
        *current = on;
        Ok(())
    }
}

#[derive(Debug)]
pub struct AuthProxy {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    _server: LoopbackHttp,
}

impl AuthProxy {
    pub fn start(upstream: String, key_id: String, client: reqwest::Client) -> Result<AuthProxy> {
        let shared = Arc::new(Shared {
            upstream,
            key_id,
            client,
            gate: Mutex::new(false),
            enforce: AtomicBool::new(false),
            log: std::sync::Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let server = LoopbackHttp::start("moto-proxy", move |req| {
            let s = s.clone();
            Box::pin(async move { forward(&s, req).await })
        })?;
        Ok(AuthProxy {
            addr: server.addr(),
            shared,
            _server: server,
        })
    }
}

fn bad_gateway(why: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("moto proxy: {why}"))));
    *r.status_mut() = hyper::StatusCode::BAD_GATEWAY;
    r
}

async fn forward(s: &Shared, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return bad_gateway("cannot read the request body".into());
    };
    let key_id = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split('/').next())
        .unwrap_or("")
        .to_owned();
    if let Ok(mut log) = s.log.lock() {
        log.push(format!("{} {}", parts.method, parts.uri.path()));
    }
    let want = s.enforce.load(Ordering::SeqCst)
        && (parts.method == hyper::Method::POST || key_id != s.key_id);
    let mut gate = s.gate.lock().await;
    if let Err(e) = s.switch(&mut gate, want).await {
        return bad_gateway(format!("{e:#}"));
    }
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let Ok(method) = reqwest::Method::from_bytes(parts.method.as_str().as_bytes()) else {
        return bad_gateway("bad method".into());
    };
    let mut out = s.client.request(method, format!("{}{pq}", s.upstream));
    for (k, v) in &parts.headers {
        // The Host header stays as the client signed it; reqwest sets the length.
        if k != "content-length" && k != "connection" {
            out = out.header(k.as_str(), v.as_bytes());
        }
    }
    let resp = match out.body(body.to_vec()).send().await {
        Ok(r) => r,
        Err(e) => return bad_gateway(e.to_string()),
    };
    let status = resp.status().as_u16();
    let ctype = resp.headers().get("content-type").cloned();
    let bytes = resp.bytes().await.unwrap_or_default();
    let mut r = Response::new(Full::new(bytes));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::BAD_GATEWAY);
    if let Some(c) = ctype
        && let Ok(v) = hyper::header::HeaderValue::from_bytes(c.as_bytes())
    {
        r.headers_mut().insert("content-type", v);
    }
    r
}
