//! Coalesces the dns-01 records of many concurrent orders: every `present` and every
//! `cleanup` arriving within a short gathering window goes to the solver as **one** combined
//! change ([`Dns01Solver::apply`]: deletes of finished orders ride with the next adds, which
//! the rfc2136 plugin sends as one UPDATE per zone) followed by **one** propagation round
//! for every added record, instead of a call and a check per order.
//!
//! Rounds run in their own tasks, at most [`BatcherConfig::max_rounds_in_flight`] at a time
//! (default one: a round's records and the check of all of them travel together, and the
//! next round gathers meanwhile). Whatever arrived while the rounds in flight held every
//! permit goes into the next round too (up to [`BatcherConfig::max_records`]), so the busier
//! the zone, the larger (and fewer) its updates and propagation rounds — pipelined, never
//! waiting for a fixed wave. A `cleanup` is answered when the change carrying it was
//! accepted; a `present` once its records are visible.

use std::sync::Arc;
use std::time::Duration;

use certfleet_dns01::{Change, Dns01Error, Dns01Solver, PropagationCheck, TxtRecord};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::error::RunError;

/// How the batcher gathers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatcherConfig {
    /// How long to wait for more records after the first of a round arrives (the
    /// coalescing window; a round never waits longer for company).
    pub window: Duration,
    /// A round is sent at once when it holds this many records (adds and deletes).
    pub max_records: usize,
    /// Rounds (solver calls plus propagation checks) running at once, per plugin.
    pub max_rounds_in_flight: usize,
}

/// Default coalescing window (`[batch] gather_millis`).
pub const DEFAULT_GATHER: Duration = Duration::from_millis(1000);

impl Default for BatcherConfig {
    fn default() -> Self {
        BatcherConfig {
            window: DEFAULT_GATHER,
            max_records: 2000,
            max_rounds_in_flight: 1,
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

/// One round being gathered: adds (`present`) and deletes (`cleanup`).
#[derive(Default)]
struct Round {
    present: Vec<Request>,
    cleanup: Vec<Request>,
    records: usize,
}

impl Round {
    fn push(&mut self, req: Request) {
        self.records += req.records.len();
        match req.op {
            Op::Present => self.present.push(req),
            Op::Cleanup => self.cleanup.push(req),
        }
    }
}

/// The gathering loop: one round gathers while earlier ones run.
async fn gather(
    mut rx: mpsc::Receiver<Request>,
    solver: Arc<dyn Dns01Solver>,
    propagation: Option<Arc<dyn PropagationCheck>>,
    config: BatcherConfig,
) {
    let rounds = Arc::new(Semaphore::new(config.max_rounds_in_flight.max(1)));
    while let Some(first) = rx.recv().await {
        let mut round = Round::default();
        round.push(first);
        let deadline = tokio::time::Instant::now() + config.window;
        while round.records < config.max_records {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(req)) => round.push(req),
                // Window over, or every handle dropped: send what we have.
                Ok(None) | Err(_) => break,
            }
        }
        // Wait for a round permit, gathering meanwhile, then take in what queued.
        let permit = loop {
            tokio::select! {
                biased;
                p = rounds.clone().acquire_owned() => break p,
                req = rx.recv(), if round.records < config.max_records => match req {
                    Some(req) => round.push(req),
                    None => break rounds.clone().acquire_owned().await,
                },
            }
        };
        let Ok(permit) = permit else {
            return;
        };
        while round.records < config.max_records {
            match rx.try_recv() {
                Ok(req) => round.push(req),
                Err(_) => break,
            }
        }
        let solver = solver.clone();
        let propagation = propagation.clone();
        tokio::spawn(async move {
            let _permit = permit;
            run_round(round, solver.as_ref(), propagation.as_deref()).await;
        });
    }
}

fn reply_all(group: Vec<Request>, result: &Result<(), Arc<Dns01Error>>) {
    for req in group {
        // A caller that went away (its job was cancelled) needs no answer.
        let _ = req.reply.send(result.clone());
    }
}

async fn run_round(
    round: Round,
    solver: &dyn Dns01Solver,
    propagation: Option<&dyn PropagationCheck>,
) {
    let add: Vec<TxtRecord> = round
        .present
        .iter()
        .flat_map(|r| r.records.clone())
        .collect();
    let remove: Vec<TxtRecord> = round
        .cleanup
        .iter()
        .flat_map(|r| r.records.clone())
        .collect();
    tracing::debug!(
        orders = round.present.len() + round.cleanup.len(),
        add = add.len(),
        remove = remove.len(),
        via = solver.name(),
        "dns-01 round"
    );
    let change = Change {
        remove: &remove,
        add: &add,
        host_checks_propagation: propagation.is_some(),
    };
    let applied = solver.apply(change).await.map_err(Arc::new);
    reply_all(round.cleanup, &applied);
    let result = match (applied, propagation) {
        (Ok(()), Some(check)) if !add.is_empty() => {
            check.wait_until_visible(&add).await.map_err(Arc::new)
        }
        (other, _) => other,
    };
    reply_all(round.present, &result);
}

#[cfg(test)]
mod tests;
