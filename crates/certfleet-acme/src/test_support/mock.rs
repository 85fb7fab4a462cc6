//! A tiny in-process HTTP/1.1 server for exercising the request pipeline: one request per
//! connection, canned replies from a handler, every request recorded.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::FlattenedJws;

/// A request as received.
#[derive(Clone, Debug)]
pub(crate) struct Recorded {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Recorded {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The request body as a flattened JWS.
    pub(crate) fn jws(&self) -> FlattenedJws {
        serde_json::from_slice(&self.body).expect("JWS body")
    }

    /// The `nonce` in the JWS protected header.
    pub(crate) fn jws_nonce(&self) -> String {
        self.jws().protected_header().expect("header")["nonce"]
            .as_str()
            .expect("nonce")
            .to_owned()
    }
}

/// A canned reply.
#[derive(Clone, Debug, Default)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn new(status: u16) -> Reply {
        Reply {
            status,
            ..Reply::default()
        }
    }

    pub(crate) fn json(status: u16, body: &str) -> Reply {
        Reply::new(status)
            .header("Content-Type", "application/json")
            .body(body)
    }

    pub(crate) fn problem(status: u16, kind: &str, detail: &str) -> Reply {
        let body = serde_json::json!({
            "type": format!("urn:ietf:params:acme:error:{kind}"),
            "detail": detail,
            "status": status,
        });
        Reply::new(status)
            .header("Content-Type", "application/problem+json")
            .body(&body.to_string())
    }

    pub(crate) fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub(crate) fn nonce(self, nonce: &str) -> Reply {
        self.header("Replay-Nonce", nonce)
    }

    pub(crate) fn body(mut self, body: &str) -> Reply {
        self.body = body.as_bytes().to_vec();
        self
    }
}

type Handler = dyn Fn(&str, &Recorded, usize) -> Reply + Send + Sync;

/// The server; stops when dropped.
pub(crate) struct MockServer {
    pub(crate) base: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: JoinHandle<()>,
}

impl MockServer {
    /// Starts a server; `handler(base, request, index)` answers each request (`index`
    /// counts requests from 0).
    pub(crate) async fn start<F>(handler: F) -> MockServer
    where
        F: Fn(&str, &Recorded, usize) -> Reply + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let (b, r) = (base.clone(), requests.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (b, r, h) = (b.clone(), r.clone(), handler.clone());
                tokio::spawn(async move {
                    serve(stream, &b, &r, h.as_ref()).await;
                });
            }
        });
        MockServer {
            base,
            requests,
            task,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("lock").clone()
    }

    /// A directory document pointing at this server.
    pub(crate) fn directory_json(base: &str) -> String {
        serde_json::json!({
            "newNonce": format!("{base}/new-nonce"),
            "newAccount": format!("{base}/new-account"),
            "newOrder": format!("{base}/new-order"),
            "revokeCert": format!("{base}/revoke-cert"),
            "keyChange": format!("{base}/key-change"),
            "renewalInfo": format!("{base}/renewal-info"),
            "meta": {"termsOfService": "https://ca.test/tos"}
        })
        .to_string()
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut stream: TcpStream,
    base: &str,
    requests: &Mutex<Vec<Recorded>>,
    handler: &Handler,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_owned();
    let path = request_line.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[header_end + 4..].to_vec();
    while body.len() < length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    let recorded = Recorded {
        method,
        path,
        headers,
        body,
    };
    let index = {
        let mut r = requests.lock().expect("lock");
        r.push(recorded.clone());
        r.len() - 1
    };
    let reply = handler(base, &recorded, index);
    let mut out = format!(
        "HTTP/1.1 {} Mock\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    for (n, v) in &reply.headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if recorded.method != "HEAD" {
        bytes.extend_from_slice(&reply.body);
    }
    let _ = stream.write_all(&bytes).await;
    let _ = stream.shutdown().await;
}
