use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::{CHALLENGE_PATH_PREFIX, Http01Error, Http01Response, Http01Solver, validate_token};

type Tokens = Arc<RwLock<HashMap<String, String>>>;

/// A minimal HTTP/1.1 server answering only challenge requests; everything else is 404.
///
/// It is bound when created, so a port conflict is reported before any order is placed,
/// and it stops when dropped.
#[derive(Debug)]
pub struct StandaloneServer {
    local_addr: SocketAddr,
    tokens: Tokens,
    task: JoinHandle<()>,
}

impl StandaloneServer {
    pub async fn bind(addr: SocketAddr) -> Result<StandaloneServer, Http01Error> {
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
        let task = tokio::spawn(serve(listener, tokens.clone()));
        tracing::debug!(%local_addr, "http-01 standalone server listening");
        Ok(StandaloneServer {
            local_addr,
            tokens,
            task,
        })
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

async fn serve(listener: TcpListener, tokens: Tokens) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Accept errors (EMFILE and the like) are transient; keep serving.
                tracing::warn!("http-01 server: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let tokens = tokens.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(req, tokens.clone(), peer));
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, "http-01 connection ended: {e}");
            }
        });
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
