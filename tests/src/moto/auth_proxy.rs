//! A reverse proxy in front of moto that turns moto's signature checking on for exactly the
//! requests moto can check. moto 5 verifies SigV4 by re-signing the request with botocore,
//! but for a request without a body it signs its parsed query string (or headers) as the
//! body, so it rejects every correctly signed GET, boto3's included. POSTs (Route 53's
//! `ChangeResourceRecordSets`) it verifies correctly, and an unknown access key id it
//! rejects before looking at the signature. So: auth enforced for POSTs and for requests
//! signed with an access key id moto does not know; off for the rest. Requests are
//! serialised so the switch cannot race.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::{Mutex, oneshot};

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
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
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
        let std_listener = std::net::TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
            .context("binding the moto auth proxy")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building the proxy's runtime")?;
        let (shutdown, mut stop) = oneshot::channel::<()>();
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("moto-proxy-{}", addr.port()))
            .spawn(move || {
                rt.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                        return;
                    };
                    loop {
                        tokio::select! {
                            _ = &mut stop => break,
                            accepted = listener.accept() => {
                                let Ok((tcp, _)) = accepted else { continue };
                                let s = s.clone();
                                tokio::spawn(async move {
                                    let service = hyper::service::service_fn(move |req| {
                                        let s = s.clone();
                                        async move { Ok::<_, std::convert::Infallible>(forward(&s, req).await) }
                                    });
                                    let _ = hyper::server::conn::http1::Builder::new()
                                        .serve_connection(TokioIo::new(tcp), service)
                                        .await;
                                });
                            }
                        }
                    }
                });
            })
            .context("starting the moto proxy thread")?;
        Ok(AuthProxy {
            addr,
            shared,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }
}

impl Drop for AuthProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
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
