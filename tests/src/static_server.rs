//! A tiny HTTP/1.1 file server on 127.0.0.1: the web server in front of a webroot.
//!
//! It answers `GET` and `HEAD` with the file under the root (or 404), one request per
//! connection. It runs on its own thread with its own tokio runtime, so it works from sync
//! and async tests alike, and stops (thread joined) on drop.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// A client gets this long to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// One request the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedRequest {
    pub method: String,
    pub path: String,
    pub status: u16,
}

/// A running static file server; stops on drop.
#[derive(Debug)]
pub struct StaticServer {
    addr: SocketAddr,
    root: PathBuf,
    requests: Arc<Mutex<Vec<ServedRequest>>>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl StaticServer {
    /// Serves the files under `root_dir` on `127.0.0.1:port` (`0` picks a free port).
    pub fn start(root_dir: impl Into<PathBuf>, port: u16) -> Result<StaticServer> {
        let root = root_dir.into();
        let std_listener =
            std::net::TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
                .with_context(|| format!("binding 127.0.0.1:{port} for the static file server"))?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (shutdown, mut stop) = oneshot::channel::<()>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building the static server's runtime")?;
        let (thread_root, thread_requests) = (root.clone(), requests.clone());
        let thread = std::thread::Builder::new()
            .name(format!("static-server-{}", addr.port()))
            .spawn(move || {
                rt.block_on(async move {
                    let listener = match TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(e) => {
                            eprintln!("static server: {e}");
                            return;
                        }
                    };
                    loop {
                        tokio::select! {
                            _ = &mut stop => break,
                            accepted = listener.accept() => {
                                if let Ok((stream, _)) = accepted {
                                    let root = thread_root.clone();
                                    let log = thread_requests.clone();
                                    tokio::spawn(async move {
                                        let _ = tokio::time::timeout(
                                            READ_TIMEOUT * 2,
                                            serve(stream, &root, &log),
                                        )
                                        .await;
                                    });
                                }
                            }
                        }
                    }
                });
            })
            .context("starting the static server thread")?;
        Ok(StaticServer {
            addr,
            root,
            requests,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The directory served.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<ServedRequest> {
        match self.requests.lock() {
            Ok(v) => v.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(mut stream: TcpStream, root: &Path, log: &Mutex<Vec<ServedRequest>>) {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 2048];
    let complete = tokio::time::timeout(READ_TIMEOUT, async {
        while head.len() < MAX_HEAD {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
            if head.windows(4).any(|w| w == b"\r\n\r\n") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    if !complete {
        return;
    }
    let text = String::from_utf8_lossy(&head);
    let mut parts = text.lines().next().unwrap_or("").split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let target = parts.next().unwrap_or("").to_owned();
    let path = target.split(['?', '#']).next().unwrap_or("").to_owned();

    let (status, reason, body) = if method != "GET" && method != "HEAD" {
        (405, "Method Not Allowed", b"method not allowed\n".to_vec())
    } else {
        match resolve(root, &path) {
            Some(file) => match tokio::fs::read(&file).await {
                Ok(bytes) => (200, "OK", bytes),
                Err(_) => (404, "Not Found", b"not found\n".to_vec()),
            },
            None => (404, "Not Found", b"not found\n".to_vec()),
        }
    };
    let mut response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        response.extend_from_slice(&body);
    }
    // Recorded before answering, so a client that has its answer finds it in the log.
    let entry = ServedRequest {
        method,
        path,
        status,
    };
    match log.lock() {
        Ok(mut v) => v.push(entry),
        Err(poisoned) => poisoned.into_inner().push(entry),
    }
    let _ = stream.write_all(&response).await;
    let _ = stream.shutdown().await;
}

/// Maps a URL path onto a file under `root`; `None` for anything that would leave it.
fn resolve(root: &Path, url_path: &str) -> Option<PathBuf> {
    let rel = Path::new(url_path.strip_prefix('/')?);
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    let full = root.join(rel);
    full.is_file().then_some(full)
}
