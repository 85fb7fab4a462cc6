//! Orchestrator nodes: registered by `begin_run`, kept fresh by a heartbeat task while the
//! run lasts, marked ended when the run's guard is dropped. Only for display: leases and
//! fencing, not this table, decide who may write a job.

use std::sync::Arc;
use std::time::Duration;

use certfleet_store::{RunHolder, StoreError};
use time::OffsetDateTime;

use crate::{Db, from_ts, ts};

/// How often a running node refreshes its heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// A node as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub node: String,
    pub pid: u32,
    pub host: String,
    pub started_at: OffsetDateTime,
    pub heartbeat_at: OffsetDateTime,
    /// Set when the run ended cleanly; a node that died keeps `None` and an old heartbeat.
    pub ended_at: Option<OffsetDateTime>,
}

pub(crate) async fn register(db: &Db, holder: &RunHolder) -> Result<(), StoreError> {
    let now = ts(OffsetDateTime::now_utc());
    db.exec(
        "INSERT INTO nodes (node, pid, host, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (node) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, ended_at = NULL",
        &[
            &holder.node,
            &i64::from(holder.pid),
            &holder.host,
            &ts(holder.started_at),
            &now,
        ],
    )
    .await
    .map(drop)
}

async fn touch(db: &Db, node: &str, ended: bool) -> Result<(), StoreError> {
    let now = ts(OffsetDateTime::now_utc());
    let ended_at = ended.then_some(now);
    db.exec(
        "UPDATE nodes SET heartbeat_at = $2, ended_at = $3 WHERE node = $1",
        &[&node, &now, &ended_at],
    )
    .await
    .map(drop)
}

/// Marks the node ended now.
pub(crate) async fn end(db: &Db, node: &str) -> Result<(), StoreError> {
    touch(db, node, true).await
}

/// Keeps the heartbeat going until dropped; then marks the node ended (best effort: the
/// process may be exiting).
pub(crate) struct NodeGuard {
    task: tokio::task::JoinHandle<()>,
    db: Arc<Db>,
    node: String,
}

impl NodeGuard {
    pub fn start(db: Arc<Db>, node: String) -> NodeGuard {
        let (db2, node2) = (db.clone(), node.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = touch(&db2, &node2, false).await {
                    tracing::debug!("node heartbeat not written: {e}");
                }
            }
        });
        NodeGuard { task, db, node }
    }
}

impl Drop for NodeGuard {
    fn drop(&mut self) {
        self.task.abort();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (db, node) = (self.db.clone(), std::mem::take(&mut self.node));
            rt.spawn(async move {
                let _ = touch(&db, &node, true).await;
            });
        }
    }
}

pub(crate) async fn list(db: &Db) -> Result<Vec<NodeInfo>, StoreError> {
    let rows = db
        .rows(
            "SELECT node, pid, host, started_at, heartbeat_at, ended_at FROM nodes \
             ORDER BY heartbeat_at DESC, node",
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let e = |e| db.err(e);
            let pid: i64 = r.try_get(1).map_err(e)?;
            Ok(NodeInfo {
                node: r.try_get(0).map_err(e)?,
                pid: u32::try_from(pid).unwrap_or(0),
                host: r.try_get(2).map_err(e)?,
                started_at: from_ts(r.try_get(3).map_err(e)?),
                heartbeat_at: from_ts(r.try_get(4).map_err(e)?),
                ended_at: r.try_get::<_, Option<i64>>(5).map_err(e)?.map(from_ts),
            })
        })
        .collect()
}
