//! Coalesces the dns-01 records of many concurrent orders: every `present` (and every
//! `cleanup`) arriving within a short gathering window goes to the solver as **one** call
//! (which a plugin turns into one update per zone) followed by **one** propagation round,
//! instead of one per order.
//!
//! Rounds run in their own tasks, at most [`BatcherConfig::max_rounds_in_flight`] at a
//! time (the per-plugin bound), so gathering the next round goes on while one propagates:
//! whatever arrived while the rounds in flight held every permit goes into the next round
//! too (up to [`BatcherConfig::max_records`]), so the busier the zone, the larger (and
//! fewer) its updates and propagation rounds — pipelined, never waiting for a fixed wave.

use std::sync::Arc;
use std::time::Duration;

use certfleet_dns01::{Dns01Error, Dns01Solver, PropagationCheck, TxtRecord};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::error::RunError;

/// How the batcher gathers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatcherConfig {
    /// How long to wait for more records after the first of a round arrives.
    pub window: Duration,
    /// A round is sent at once when it holds this many records.
    pub max_records: usize,
    /// Rounds (solver calls plus propagation checks) running at once, per plugin.
    pub max_rounds_in_flight: usize,
}

impl Default for BatcherConfig {
    fn default() -> Self {
        BatcherConfig {
            window: Duration::from_millis(150),
            max_records: 500,
            max_rounds_in_flight: 4,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Present,
    Cleanup,
}

type Reply = oneshot::Sender<Result<(), Arc<Dns01Error>>>;

struct Request {
    op: Op,
    records: Vec<TxtRecord>,
    reply: Reply,
}

/// Handle to the batcher task; cheap to clone. The task ends when every handle is gone.
#[derive(Clone, Debug)]
pub struct ZoneBatcher {
    tx: mpsc::Sender<Request>,
    solver_name: String,
}

impl ZoneBatcher {
    /// Starts the batcher task on the current runtime.
    pub fn start(
        solver: Arc<dyn Dns01Solver>,
        propagation: Option<Arc<dyn PropagationCheck>>,
        config: BatcherConfig,
    ) -> ZoneBatcher {
        let (tx, rx) = mpsc::channel(1024);
        let solver_name = solver.name().to_owned();
        tokio::spawn(gather(rx, solver, propagation, config));
        ZoneBatcher { tx, solver_name }
    }

    /// The solver's name.
    pub fn solver_name(&self) -> &str {
        &self.solver_name
    }

    /// Presents `records` and returns once they are visible on every authoritative server.
    pub async fn present(&self, records: Vec<TxtRecord>) -> Result<(), RunError> {
        self.call(Op::Present, records).await
    }

    /// Removes `records`.
    pub async fn cleanup(&self, records: Vec<TxtRecord>) -> Result<(), RunError> {
        self.call(Op::Cleanup, records).await
    }

    async fn call(&self, op: Op, records: Vec<TxtRecord>) -> Result<(), RunError> {
        if records.is_empty() {
            return Ok(());
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request { op, records, reply })
            .await
            .map_err(|_| RunError::BatcherClosed)?;
        rx.await
            .map_err(|_| RunError::BatcherClosed)?
            .map_err(RunError::Dns01)
    }
}

/// The batcher is the dns-01 solver of every job of a run: a `present` returns once the
/// round's records are visible (the batcher checks propagation itself).
#[async_trait::async_trait]
impl Dns01Solver for ZoneBatcher {
    fn name(&self) -> &str {
        &self.solver_name
    }

    async fn present(&self, records: &[TxtRecord]) -> Result<(), Dns01Error> {
        ZoneBatcher::present(self, records.to_vec())
            .await
            .map_err(|e| self.solver_error(e, records))
    }

    async fn cleanup(&self, records: &[TxtRecord]) -> Result<(), Dns01Error> {
        ZoneBatcher::cleanup(self, records.to_vec())
            .await
            .map_err(|e| self.solver_error(e, records))
    }
}

impl ZoneBatcher {
    /// A round's error for one order: the solver's own error where it can be had.
    fn solver_error(&self, e: RunError, records: &[TxtRecord]) -> Dns01Error {
        match e {
            RunError::Dns01(shared) => {
                Arc::try_unwrap(shared).unwrap_or_else(|shared| Dns01Error::Provider {
                    provider: self.solver_name.clone(),
                    detail: shared.to_string(),
                    records: records.to_vec(),
                })
            }
            other => Dns01Error::Provider {
                provider: self.solver_name.clone(),
                detail: other.to_string(),
                records: records.to_vec(),
            },
        }
    }
}

/// The gathering loop: one pending round per operation.
async fn gather(
    mut rx: mpsc::Receiver<Request>,
    solver: Arc<dyn Dns01Solver>,
    propagation: Option<Arc<dyn PropagationCheck>>,
    config: BatcherConfig,
) {
    let rounds = Arc::new(Semaphore::new(config.max_rounds_in_flight.max(1)));
    while let Some(first) = rx.recv().await {
        let mut present: Vec<Request> = Vec::new();
        let mut cleanup: Vec<Request> = Vec::new();
        let mut count = first.records.len();
        match first.op {
            Op::Present => present.push(first),
            Op::Cleanup => cleanup.push(first),
        }
        let deadline = tokio::time::Instant::now() + config.window;
        while count < config.max_records {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(req)) => {
                    count += req.records.len();
                    match req.op {
                        Op::Present => present.push(req),
                        Op::Cleanup => cleanup.push(req),
                    }
                }
                // Window over, or every handle dropped: send what we have.
                Ok(None) | Err(_) => break,
            }
        }
        // Wait for a round permit, then take in everything that queued meanwhile.
        let Ok(mut permit) = rounds.clone().acquire_owned().await else {
            return;
        };
        while count < config.max_records {
            match rx.try_recv() {
                Ok(req) => {
                    count += req.records.len();
                    match req.op {
                        Op::Present => present.push(req),
                        Op::Cleanup => cleanup.push(req),
                    }
                }
                Err(_) => break,
            }
        }
        let mut groups = [(Op::Present, present), (Op::Cleanup, cleanup)]
            .into_iter()
            .filter(|(_, g)| !g.is_empty())
            .peekable();
        while let Some((op, group)) = groups.next() {
            let solver = solver.clone();
            let propagation = propagation.clone();
            let held = permit;
            tokio::spawn(async move {
                let _permit = held;
                run_round(op, group, solver.as_ref(), propagation.as_deref()).await;
            });
            if groups.peek().is_some() {
                let Ok(next) = rounds.clone().acquire_owned().await else {
                    return;
                };
                permit = next;
            } else {
                break;
            }
        }
    }
}

async fn run_round(
    op: Op,
    group: Vec<Request>,
    solver: &dyn Dns01Solver,
    propagation: Option<&dyn PropagationCheck>,
) {
    let records: Vec<TxtRecord> = group.iter().flat_map(|r| r.records.clone()).collect();
    tracing::debug!(
        op = ?op,
        orders = group.len(),
        records = records.len(),
        via = solver.name(),
        "dns-01 round"
    );
    let result = match op {
        Op::Present => match solver.present(&records).await {
            Ok(()) => match propagation {
                Some(check) => check.wait_until_visible(&records).await,
                None => Ok(()),
            },
            Err(e) => Err(e),
        },
        Op::Cleanup => solver.cleanup(&records).await,
    };
    let result = result.map_err(Arc::new);
    for req in group {
        // A caller that went away (its job was cancelled) needs no answer.
        let _ = req.reply.send(result.clone());
    }
}

#[cfg(test)]
mod tests;
