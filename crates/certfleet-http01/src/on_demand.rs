//! A standalone server bound only while challenges are being served: a long batch (jobs
//! waiting out multi-day deferrals) does not keep port 80 open and reachable meanwhile.

use std::net::SocketAddr;

use async_trait::async_trait;
use tokio::sync::Mutex;

use crate::{Http01Error, Http01Response, Http01Solver, ServerLimits, StandaloneServer};

/// Binds a [`StandaloneServer`] when the first token is presented and closes it when the
/// last one is cleaned up.
#[derive(Debug)]
pub struct OnDemandServer {
    addr: SocketAddr,
    limits: ServerLimits,
    server: Mutex<Option<StandaloneServer>>,
}

impl OnDemandServer {
    /// Checks now that `addr` can be bound (so a port conflict is reported before any
    /// order), then releases it until needed.
    pub async fn new(
        addr: SocketAddr,
        limits: ServerLimits,
    ) -> Result<OnDemandServer, Http01Error> {
        drop(StandaloneServer::bind_with(addr, limits).await?);
        Ok(OnDemandServer {
            addr,
            limits,
            server: Mutex::new(None),
        })
    }

    /// Whether the port is bound right now.
    pub async fn is_bound(&self) -> bool {
        self.server.lock().await.is_some()
    }
}

#[async_trait]
impl Http01Solver for OnDemandServer {
    fn describe(&self) -> String {
        format!("standalone server on {} (bound while serving)", self.addr)
    }

    async fn present(&self, responses: &[Http01Response]) -> Result<(), Http01Error> {
        let mut server = self.server.lock().await;
        if server.is_none() {
            *server = Some(StandaloneServer::bind_with(self.addr, self.limits).await?);
        }
        match server.as_ref() {
            Some(s) => s.present(responses).await,
            None => Ok(()),
        }
    }

    async fn cleanup(&self, responses: &[Http01Response]) -> Result<(), Http01Error> {
        let mut server = self.server.lock().await;
        if let Some(s) = server.as_ref() {
            s.cleanup(responses).await?;
            if s.token_count() == 0 {
                // Dropping the server stops it and closes the port.
                *server = None;
                tracing::debug!(addr = %self.addr, "http-01 server closed: nothing to serve");
            }
        }
        Ok(())
    }
}
