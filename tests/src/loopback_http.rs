//! A plain HTTP/1.1 test server on a free loopback port, on its own thread and runtime (so
//! it serves whatever runtime the test uses), stopped and joined on drop. The Cloudflare
//! fake and the moto auth proxy are built on it.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::pin::Pin;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;

/// A boxed response future, as handlers return it.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>;

/// The running server.
#[derive(Debug)]
pub struct LoopbackHttp {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl LoopbackHttp {
    /// Serves every request with `handler` until dropped; `name` names the thread and the
    /// errors.
    pub fn start<H>(name: &str, handler: H) -> Result<LoopbackHttp>
    where
        H: Fn(Request<Incoming>) -> ResponseFuture + Send + Sync + 'static,
    {
        let std_listener = std::net::TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
            .with_context(|| format!("binding the {name}"))?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .with_context(|| format!("building the {name}'s runtime"))?;
        let (shutdown, mut stop) = oneshot::channel::<()>();
        let handler = Arc::new(handler);
        let thread = std::thread::Builder::new()
            .name(format!("{name}-{}", addr.port()))
            .spawn(move || {
                rt.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                        return;
                    };
                    loop {
                        tokio::select! {
                            _ = &mut stop => break,
                            accepted = listener.accept() => {
                                // A failed accept (the client went away) is that client's loss.
                                let Ok((tcp, _)) = accepted else { continue };
                                let handler = handler.clone();
                                tokio::spawn(async move {
                                    let service = hyper::service::service_fn(move |req| {
                                        let response = handler(req);
                                        async move { Ok::<_, std::convert::Infallible>(response.await) }
                                    });
                                    // A connection the client drops mid-request ends here.
                                    let _ = hyper::server::conn::http1::Builder::new()
                                        .serve_connection(TokioIo::new(tcp), service)
                                        .await;
                                });
                            }
                        }
                    }
                });
            })
            .with_context(|| format!("starting the {name} thread"))?;
        Ok(LoopbackHttp {
            addr,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for LoopbackHttp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            // The thread may have ended already; then there is nothing to stop.
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            eprintln!("loopback HTTP server thread panicked");
        }
    }
}
