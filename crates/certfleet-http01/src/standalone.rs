use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::{AbortHandle, JoinHandle};

use crate::{CHALLENGE_PATH_PREFIX, Http01Error, Http01Response, Http01Solver, validate_token};

type Tokens = Arc<RwLock<HashMap<String, String>>>;

/// How much the standalone server gives each client: it listens on a public port, so idle
/// or half-sent requests must not be able to exhaust its file descriptors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// Time from accepting a connection to having read the whole request head.
    pub header_read_timeout: Duration,
    /// Longest a connection may live at all (one request per connection: no keep-alive).
    pub connection_lifetime: Duration,
    /// Most connections open at once; when full, the oldest is closed to admit a new one,
    /// so a flood of idle connections cannot lock the CA out.
    pub max_connections: usize,
    /// Largest request head (request line + headers) read; bodies are never read.
    pub max_request_head_bytes: usize,
}

impl Default for ServerLimits {
    fn default() -> ServerLimits {
        ServerLimits {
            header_read_timeout: Duration::from_secs(10),
            connection_lifetime: Duration::from_secs(30),
            max_connections: 256,
            max_request_head_bytes: 8192,
        }
    }
}

/// Open connections by accept order, so the oldest can be closed first.
#[derive(Debug, Default)]
struct Connections {
    next_id: u64,
    live: BTreeMap<u64, AbortHandle>,
}

type Live = Arc<Mutex<Connections>>;

/// Removes a connection from [`Connections`] however its task ends (done or aborted).
struct Registered {
    id: u64,
    live: Live,
}

impl Drop for Registered {
    fn drop(&mut self) {
        lock(&self.live).live.remove(&self.id);
    }
}

fn lock(live: &Live) -> std::sync::MutexGuard<'_, Connections> {
    live.lock().unwrap_or_else(|p| p.into_inner())
}

/// A minimal HTTP/1.1 server answering only challenge requests; everything else is 404.
///
/// It is bound when created, so a port conflict is reported before any order is placed,
/// and it stops when dropped. Each connection is bounded by [`ServerLimits`].
#[derive(Debug)]
pub struct StandaloneServer {
    local_addr: SocketAddr,
    tokens: Tokens,
    live: Live,
    task: JoinHandle<()>,
}

impl StandaloneServer {
    /// Binds `addr` with the default [`ServerLimits`].
    pub async fn bind(addr: SocketAddr) -> Result<StandaloneServer, Http01Error> {
        StandaloneServer::bind_with(addr, ServerLimits::default()).await
    }

    pub async fn bind_with(
        addr: SocketAddr,
        limits: ServerLimits,
    ) -> Result<StandaloneServer, Http01Error> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Http01Error::Bind {
                addr: addr.to_string(),
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| Http01Error::Bind {
            addr: addr.to_string(),
            source,
        })?;
        let tokens: Tokens = Arc::default();
        let live: Live = Arc::default();
        let task = tokio::spawn(serve(listener, tokens.clone(), live.clone(), limits));
        tracing::debug!(%local_addr, ?limits, "http-01 standalone server listening");
        Ok(StandaloneServer {
            local_addr,
            tokens,
            live,
            task,
        })
    }

    /// Tokens being served.
    pub fn token_count(&self) -> usize {
        self.tokens.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Connections open right now (at most [`ServerLimits::max_connections`]).
    pub fn open_connections(&self) -> usize {
        lock(&self.live).live.len()
    }

    /// The bound address (useful when binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for StandaloneServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[async_trait]
impl Http01Solver for StandaloneServer {
    fn describe(&self) -> String {
        format!("standalone server on {}", self.local_addr)
    }

    async fn present(&self, responses: &[Http01Response]) -> Result<(), Http01Error> {
        for r in responses {
            validate_token(&r.token)?;
        }
        let mut map = self.tokens.write().unwrap_or_else(|p| p.into_inner());
        for r in responses {
            map.insert(r.token.clone(), r.key_authorization.clone());
        }
        Ok(())
    }

    async fn cleanup(&self, responses: &[Http01Response]) -> Result<(), Http01Error> {
        let mut map = self.tokens.write().unwrap_or_else(|p| p.into_inner());
        for r in responses {
            map.remove(&r.token);
        }
        Ok(())
    }
}

async fn serve(listener: TcpListener, tokens: Tokens, live: Live, limits: ServerLimits) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(false)
        .max_buf_size(limits.max_request_head_bytes.max(8192));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of descriptors: free one by closing the oldest connection. Other
                // accept errors are transient as well; keep serving.
                if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) {
                    close_oldest(&live);
                }
                tracing::warn!("http-01 server: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let mut connections = lock(&live);
        if connections.live.len() >= limits.max_connections {
            if let Some((_, oldest)) = connections.live.pop_first() {
                oldest.abort();
            }
            tracing::debug!(%peer, "http-01 server: connection limit reached; closed the oldest");
        }
        let id = connections.next_id;
        connections.next_id += 1;
        let registered = Registered {
            id,
            live: live.clone(),
        };
        let tokens = tokens.clone();
        let builder = builder.clone();
        // Spawned while the registry is locked, so the task's own removal (Drop of
        // `registered`) always comes after this insertion.
        let handle = tokio::spawn(async move {
            let _registered = registered;
            let service = service_fn(move |req| answer(req, tokens.clone(), peer));
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(limits.connection_lifetime, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%peer, "http-01 connection ended: {e}"),
                Err(_) => tracing::debug!(%peer, "http-01 connection closed: lifetime exceeded"),
            }
        });
        connections.live.insert(id, handle.abort_handle());
        drop(connections);
    }
}

fn close_oldest(live: &Live) {
    if let Some((_, oldest)) = lock(live).live.pop_first() {
        oldest.abort();
    }
}

async fn answer(
    req: Request<Incoming>,
    tokens: Tokens,
    peer: SocketAddr,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let found = match (
        req.method(),
        req.uri().path().strip_prefix(CHALLENGE_PATH_PREFIX),
    ) {
        (&Method::GET | &Method::HEAD, Some(token)) => tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned(),
        _ => None,
    };
    tracing::debug!(%peer, path = req.uri().path(), found = found.is_some(), "http-01 request");
    let response = match found {
        Some(body) => Response::builder()
            .header("content-type", "application/octet-stream")
            .body(Full::new(Bytes::from(body))),
        None => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(b"not found\n"))),
    };
    // Builder errors need an invalid header or status; ours are constants.
    Ok(response.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}
