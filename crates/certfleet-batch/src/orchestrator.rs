//! The batch run: claims due jobs from the [`StateStore`] under leases, drives each on its
//! own task (`job_driver`) under the run's bounds ([`crate::slots`]: work slots, pending
//! authorizations, optionally per DNS zone),
//! renews the leases of jobs in flight, and waits for deferred jobs to come due.
//!
//! The orchestrator names no concrete store, key backend or solver: the caller hands them
//! in, so a server-backed store or another node changes nothing here.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use certfleet_acme::{Account, PollPolicy};
use certfleet_dns01::{Dns01Solver, PropagationCheck};
use certfleet_http01::Http01Solver;
use certfleet_issue::{ChallengeKind, ChallengeSolvers, KeyMaker};
use certfleet_keys::{KeyBackend, KeyError, KeyRef, SigningKey};
use time::OffsetDateTime;
use tokio::task::JoinSet;

use crate::error::RunError;
use crate::governor::Governor;
use crate::job_driver::JobDriver;
use crate::slots::{DEFAULT_PENDING_AUTHORIZATIONS, Slots};
use crate::store::{
    BatchId, ClaimRequest, ClaimedJob, JobId, JobStatus, Lease, StateStore, StatusCounts,
};
use crate::zone_batcher::{BatcherConfig, ZoneBatcher};

/// Default orders in flight: Pebble 2.4 deadlocks near 64 concurrent orders.
pub const DEFAULT_CONCURRENCY: usize = 32;

/// Jobs a run claims ahead of its free slots at most (a quarter of `concurrency`): few
/// enough that other nodes of a fleet are not kept from work.
const MAX_CLAIM_AHEAD: usize = 8;

/// How a run behaves.
#[derive(Clone, Debug)]
pub struct OrchestratorConfig {
    /// Orders being worked on at once (ordering, finalizing, downloading). An order whose
    /// challenges are presented and which only waits for DNS or the CA holds no slot.
    pub concurrency: usize,
    /// Authorizations pending at the CA at once (counted per name from before newOrder
    /// until the order is decided): the bound on orders that wait. Let's Encrypt: 300 per
    /// account.
    pub pending_authorizations: usize,
    /// Orders of one DNS zone (registered domain) with records presented at once; `None`:
    /// only `pending_authorizations` bounds them.
    pub per_zone: Option<usize>,
    /// Lease length; leases are renewed every third of it while a job runs.
    pub lease_for: Duration,
    /// Attempts (orders that failed, steps that failed) before a job is `failed`.
    pub max_attempts: u32,
    /// First retry delay after a failure, doubled per attempt.
    pub retry_backoff: Duration,
    /// Extra wait for certificate tokens (per registered domain, per name set): the CA
    /// spends them at issuance, up to this long after the governor spent its copy at order
    /// time.
    pub issuance_margin: Duration,
    /// Polling of orders (never more often than [`certfleet_issue::MIN_POLL_INTERVAL`]).
    pub poll: PollPolicy,
    /// Gathering of dns-01 records.
    pub batcher: BatcherConfig,
    /// Where certificate directories go when a job names none (`<root>/<first name>`).
    pub output_root: PathBuf,
    /// Stop the run (leaving jobs deferred) when nothing is due before `now + max_wait`;
    /// `None`: wait as long as the limits say.
    pub max_wait: Option<Duration>,
}

impl OrchestratorConfig {
    pub fn new(output_root: PathBuf) -> OrchestratorConfig {
        OrchestratorConfig {
            concurrency: DEFAULT_CONCURRENCY,
            pending_authorizations: DEFAULT_PENDING_AUTHORIZATIONS,
            per_zone: None,
            lease_for: Duration::from_secs(120),
            max_attempts: 3,
            retry_backoff: Duration::from_secs(5),
            issuance_margin: Duration::from_secs(2),
            poll: PollPolicy {
                initial: Duration::from_millis(250),
                max_interval: Duration::from_secs(5),
                ..PollPolicy::default()
            },
            batcher: BatcherConfig::default(),
            output_root,
            max_wait: None,
        }
    }
}

/// Told about every certificate the run issues, right after its `issued` status is stored
/// (e.g. to add it to a renewal inventory). Called on a blocking thread, concurrently for
/// different jobs; an error is logged and does not undo the issuance.
pub trait IssuedHook: Send + Sync + std::fmt::Debug {
    fn issued(&self, job: &crate::Job) -> Result<(), String>;
}

/// Test hooks at the windows where a node holds something only it has, right before the
/// fenced store writes that would share it, or right before a request that another owner
/// would repeat. Tests stop the node there (SIGSTOP) to show that a node whose lease is
/// taken over meanwhile publishes nothing, leaves nothing and sends nothing.
pub trait WindowHook: Send + Sync + std::fmt::Debug {
    /// `ordering` is written and the tokens taken; the lease check and newOrder are next.
    fn before_new_order(&self, job: &crate::Job);
    /// The certificate directory is staged; the bundle and `issued` are next.
    fn before_fenced_publish(&self, job: &crate::Job);
    /// A certificate key generated for the job, or restored from the store, is this node's
    /// pending key file only; recording it (sealing into the store, `finalizing`, the lease
    /// check before finalize) is next.
    fn before_key_recorded(&self, job: &crate::Job);
}

/// The solvers a run may use; a job asks for one by its challenge.
#[derive(Clone, Debug, Default)]
pub struct RunSolvers {
    pub http01: Option<Arc<dyn Http01Solver>>,
    pub dns01: Option<Arc<dyn Dns01Solver>>,
    pub propagation: Option<Arc<dyn PropagationCheck>>,
}

/// How a run loads certificate keys (by reference) and makes new ones.
#[derive(Clone, Debug)]
pub struct RunKeys {
    pub backends: Vec<Arc<dyn KeyBackend>>,
    pub maker: Arc<dyn KeyMaker>,
    /// The fleet's key-encryption key: generated keys are stored sealed with it in a
    /// server-backed store so every node can use them.
    pub kek: Option<Arc<crate::kek::Kek>>,
}

/// What a run did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSummary {
    /// Jobs per status at the end.
    pub counts: StatusCounts,
    pub elapsed: Duration,
    /// The run stopped with jobs still deferred (see [`OrchestratorConfig::max_wait`]).
    pub stopped_early: bool,
}

impl RunSummary {
    /// Every job issued.
    pub fn all_issued(&self) -> bool {
        self.counts.get(JobStatus::Issued) == self.counts.total()
    }
}

/// State shared by the run loop and every job driver.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn StateStore>,
    pub(crate) governor: Arc<Governor>,
    pub(crate) account: Account,
    /// http-01 solver and the dns-01 zone batcher (which checks propagation itself).
    pub(crate) solvers: ChallengeSolvers,
    pub(crate) key_backends: Vec<Arc<dyn KeyBackend>>,
    pub(crate) key_maker: Arc<dyn KeyMaker>,
    pub(crate) kek: Option<Arc<crate::kek::Kek>>,
    pub(crate) config: OrchestratorConfig,
    pub(crate) issued_hook: Option<Arc<dyn IssuedHook>>,
    pub(crate) window_hook: Option<Arc<dyn WindowHook>>,
    /// Work slots, pending authorizations, per-zone bound.
    pub(crate) slots: Slots,
    /// One order section at a time; fresh authorization reads apart from newOrders.
    pub(crate) order_gate: crate::order_gate::OrderGate,
}

impl Shared {
    /// Loads a certificate key by reference through the backend of its scheme.
    pub(crate) async fn load_key(&self, reference: &str) -> Result<Arc<dyn SigningKey>, KeyError> {
        let key_ref: KeyRef = reference.parse()?;
        certfleet_keys::load_key(&self.key_backends, &key_ref).await
    }
}

/// Runs batches for one account.
#[derive(Debug)]
pub struct Orchestrator {
    shared: Arc<Shared>,
    node: String,
    stop: Option<StopRequest>,
}

/// A request to stop a run early (SIGINT/SIGTERM): see [`Orchestrator::with_stop`].
#[derive(Debug)]
struct StopRequest {
    requested: tokio::sync::watch::Receiver<bool>,
    grace: Duration,
}

impl Orchestrator {
    /// `node` is the run's [`crate::RunHolder::node`] (from [`StateStore::begin_run`]).
    /// Must be called on a Tokio runtime (it starts the dns-01 batcher task).
    pub fn new(
        store: Arc<dyn StateStore>,
        governor: Arc<Governor>,
        account: Account,
        solvers: RunSolvers,
        keys: RunKeys,
        config: OrchestratorConfig,
        node: impl Into<String>,
    ) -> Orchestrator {
        let dns01 = solvers.dns01.map(|s| {
            Arc::new(ZoneBatcher::start(s, solvers.propagation, config.batcher))
                as Arc<dyn Dns01Solver>
        });
        Orchestrator {
            shared: Arc::new(Shared {
                store,
                governor,
                account,
                solvers: ChallengeSolvers {
                    preferred: ChallengeKind::Dns01,
                    http01: solvers.http01,
                    dns01,
                    dns01_propagation: None,
                },
                key_backends: keys.backends,
                key_maker: keys.maker,
                kek: keys.kek,
                config: config.clone(),
                issued_hook: None,
                window_hook: None,
                slots: Slots::new(
                    config.concurrency,
                    config.pending_authorizations,
                    config.per_zone,
                ),
                order_gate: crate::order_gate::OrderGate::default(),
            }),
            node: node.into(),
            stop: None,
        }
    }

    /// Once `requested` turns true the run claims nothing more, lets the jobs in flight
    /// reach their next stored checkpoint (issued, deferred, failed) for up to `grace`,
    /// then aborts the rest and gives their leases up (each resumes from its last stored
    /// step on the next run; an abort costs at most the one order the store does not know
    /// yet), and returns with [`RunSummary::stopped_early`].
    pub fn with_stop(
        mut self,
        requested: tokio::sync::watch::Receiver<bool>,
        grace: Duration,
    ) -> Orchestrator {
        self.stop = Some(StopRequest { requested, grace });
        self
    }

    /// Calls `hook` for every certificate issued from now on.
    pub fn with_issued_hook(mut self, hook: Arc<dyn IssuedHook>) -> Orchestrator {
        Arc::get_mut(&mut self.shared)
            .expect("no job runs before the orchestrator is started")
            .issued_hook = Some(hook);
        self
    }

    /// Calls `hook` at each fleet publish window ([`WindowHook`]).
    pub fn with_window_hook(mut self, hook: Arc<dyn WindowHook>) -> Orchestrator {
        Arc::get_mut(&mut self.shared)
            .expect("no job runs before the orchestrator is started")
            .window_hook = Some(hook);
        self
    }

    /// Runs `batch` until every job is issued or failed (or, with
    /// [`OrchestratorConfig::max_wait`], until nothing is due soon).
    pub async fn run(&self, batch: BatchId) -> Result<RunSummary, RunError> {
        let started = std::time::Instant::now();
        let sh = &self.shared;
        let store = sh.store.clone();
        let lease_for = sh.config.lease_for;
        let mut tasks: JoinSet<(JobId, Result<crate::Job, RunError>)> = JoinSet::new();
        let mut leases: HashMap<JobId, Lease> = HashMap::new();
        let mut renew = tokio::time::interval((lease_for / 3).max(Duration::from_millis(100)));
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopped_early = false;
        let mut stop = self.stop.as_ref().map(|s| (s.requested.clone(), s.grace));
        let mut stop_deadline: Option<tokio::time::Instant> = None;
        // Jobs claimed ahead of a free slot: one claim per few jobs instead of one per
        // freed slot (a claim was the costliest store call of a job); their leases are
        // renewed like those of running jobs and given up if the run stops first.
        let mut ready: VecDeque<ClaimedJob> = VecDeque::new();
        let claim_ahead = (sh.config.concurrency / 4).clamp(1, MAX_CLAIM_AHEAD);
        loop {
            if stop_deadline.is_none()
                && let Some((requested, grace)) = &stop
                && *requested.borrow()
            {
                stop_deadline = Some(tokio::time::Instant::now() + *grace);
                release_unstarted(store.as_ref(), &mut ready, &mut leases).await;
                tracing::info!(
                    in_flight = tasks.len(),
                    "stopping: no new jobs; waiting up to {}s for the jobs in flight",
                    grace.as_secs()
                );
            }
            if let Some(deadline) = stop_deadline {
                stopped_early = true;
                if tasks.is_empty() {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    abort_in_flight(store.as_ref(), &mut tasks, &mut leases).await;
                    break;
                }
            }
            let free = sh.slots.free_work();
            let mut claimed_any = false;
            if free > 0 && stop_deadline.is_none() {
                if ready.len() < free {
                    let claimed = store
                        .claim_jobs(&ClaimRequest {
                            batch,
                            node: self.node.clone(),
                            now: now(),
                            lease_for,
                            max_jobs: free - ready.len() + claim_ahead,
                        })
                        .await?;
                    for c in claimed {
                        leases.insert(c.job.id, c.lease.clone());
                        ready.push_back(c);
                    }
                }
                for _ in 0..free {
                    let Some(c) = ready.pop_front() else { break };
                    claimed_any = true;
                    let id = c.job.id;
                    // This loop is the only taker of fresh slots, and `free` were free.
                    let slot = sh.slots.try_work();
                    let driver = JobDriver::new(sh.clone(), c, slot);
                    tasks.spawn(async move { (id, driver.run().await) });
                }
            }
            let wait = if stop_deadline.is_some() {
                Duration::from_millis(100)
            } else if tasks.is_empty() {
                if claimed_any {
                    continue;
                }
                let t = now();
                match store.next_due(batch, t).await? {
                    None => break,
                    Some(due) => {
                        let wait = Duration::try_from(due - t).unwrap_or(Duration::ZERO);
                        if sh.config.max_wait.is_some_and(|m| wait > m) {
                            stopped_early = true;
                            break;
                        }
                        wait
                    }
                }
            } else if free > 0 && !claimed_any {
                // Room for more but nothing due now: look again when something may be.
                let t = now();
                store
                    .next_due(batch, t)
                    .await?
                    .map_or(Duration::from_secs(1), |due| {
                        Duration::try_from(due - t).unwrap_or(Duration::ZERO)
                    })
            } else {
                Duration::from_secs(1)
            };
            let wait = wait.clamp(Duration::from_millis(20), Duration::from_secs(1));
            tokio::select! {
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    match done {
                        Ok((id, result)) => {
                            let lease = leases.remove(&id);
                            if let Err(e) = result {
                                tracing::warn!(job = %id, "job stopped: {e}");
                                if let Some(lease) = lease {
                                    settle_stopped_job(store.as_ref(), &lease, &e).await;
                                }
                            }
                        }
                        Err(e) => tracing::error!("job task ended abnormally: {e}"),
                    }
                }
                _ = renew.tick() => {
                    renew_leases(store.as_ref(), &mut leases, lease_for).await;
                }
                () = sh.slots.work_freed(), if free == 0 || claimed_any => {}
                () = tokio::time::sleep(wait) => {}
                changed = async {
                    match stop.as_mut() {
                        Some((requested, _)) => requested.changed().await,
                        None => std::future::pending().await,
                    }
                }, if stop_deadline.is_none() => {
                    if changed.is_err() {
                        // The sender is gone: no stop can come any more.
                        stop = None;
                    }
                }
            }
        }
        release_unstarted(store.as_ref(), &mut ready, &mut leases).await;
        Ok(RunSummary {
            counts: store.status_counts(batch).await?,
            elapsed: started.elapsed(),
            stopped_early,
        })
    }
}

/// The stop's grace ran out: aborts the jobs still in flight and gives their leases up so
/// the next run claims them at once (each resumes from its last stored step).
async fn abort_in_flight(
    store: &dyn StateStore,
    tasks: &mut JoinSet<(JobId, Result<crate::Job, RunError>)>,
    leases: &mut HashMap<JobId, Lease>,
) {
    tracing::warn!(
        jobs = tasks.len(),
        "stopping: aborting the jobs still in flight at their last stored step"
    );
    tasks.abort_all();
    // Bounded: every task was aborted, so each join returns at once.
    while tasks.join_next().await.is_some() {}
    for (_, lease) in leases.drain() {
        if let Err(e) = store.release_job(&lease).await {
            tracing::debug!(job = %lease.job, "lease not given up: {e}");
        }
    }
}

/// Gives up the leases of jobs claimed ahead that never started, so the next run (or
/// another node) claims them at once.
async fn release_unstarted(
    store: &dyn StateStore,
    ready: &mut VecDeque<ClaimedJob>,
    leases: &mut HashMap<JobId, Lease>,
) {
    for c in ready.drain(..) {
        let Some(lease) = leases.remove(&c.job.id) else {
            continue;
        };
        if let Err(e) = store.release_job(&lease).await {
            tracing::debug!(job = %lease.job, "lease not given up: {e}");
        }
    }
}

/// A job whose driver stopped with an error. A refused write that no retry can fix (a
/// transition outside the state machine) fails the job, so it is reported instead of being
/// claimed again forever; otherwise the lease is given up so the job can be claimed again
/// at once rather than when the lease runs out (refused if another run took it over).
async fn settle_stopped_job(store: &dyn StateStore, lease: &Lease, e: &RunError) {
    let permanent = matches!(
        e,
        RunError::Store(
            crate::StoreError::InvalidTransition { .. } | crate::StoreError::InvalidUpdate { .. }
        )
    );
    let outcome = if permanent {
        store
            .update_job(
                lease,
                &crate::JobUpdate::failed(format!("internal error: {e}")),
                now(),
            )
            .await
            .map(drop)
    } else {
        store.release_job(lease).await
    };
    if let Err(e) = outcome {
        tracing::debug!(job = %lease.job, "stopped job not settled: {e}");
    }
}

/// Extends the leases of jobs in flight; a lost lease is logged (the job's next write is
/// fenced and its driver stops).
async fn renew_leases(
    store: &dyn StateStore,
    leases: &mut HashMap<JobId, Lease>,
    lease_for: Duration,
) {
    let t = now();
    for lease in leases.values_mut() {
        if lease.expires_at - t > crate::gcra::to_time(lease_for / 2) {
            continue;
        }
        match store.renew_lease(lease, t, lease_for).await {
            Ok(fresh) => *lease = fresh,
            Err(e) => tracing::debug!(job = %lease.job, "lease not renewed: {e}"),
        }
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}
