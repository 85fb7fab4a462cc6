//! One job from its stored status to `issued`, `deferred` or `failed`.
//!
//! Every status is written **before** the network step that depends on it (see
//! [`crate::store`]): `ordering` before newOrder, `authorizing` with the order URL as soon as
//! newOrder returns, `validating` before responding to challenges, `finalizing` with the
//! certificate key before finalize. A resumed job re-reads its order and authorizations by
//! URL and continues the same order; a job resumed at `finalizing` finalizes only if the
//! order is still `ready`, so a name set is finalized at most once. A fleet's job that
//! leaves this node unissued takes this node's pending key file with it ([`pending_key`]).

use std::sync::Arc;

use certfleet_acme::{Authorization, Identifier, Order};
use certfleet_issue::output::CertificateMeta;
use certfleet_issue::poll::Poller;
use certfleet_issue::steps::new_order_request;
use certfleet_issue::{ChallengeKind, IssueError, OrderSteps};
use time::OffsetDateTime;

use crate::error::{RunError, StoreError};
use crate::gcra::BucketKey;
use crate::governor::{
    OrderContext, OrderReached, RateLimitSignal, Reservation, Reserve, new_orders_key,
};
use crate::orchestrator::Shared;
use crate::slots::{PendingAuthorizations, WorkSlot};
use crate::store::{ClaimedJob, Job, JobStatus, JobUpdate, Lease};

mod authorize;
mod finalize;
mod fleet;
mod pending_key;
mod recover;

use pending_key::{Leaving, OwnPendingKey};

/// Steps one job may take in one claim (a bound on the state loop).
const MAX_STEPS: usize = 12;

pub(crate) struct JobDriver {
    sh: Arc<Shared>,
    lease: Lease,
    job: Job,
    ctx: OrderContext,
    reservation: Option<Reservation>,
    /// The shared order steps, with this job's challenge type.
    steps: OrderSteps,
    /// The order as last returned by the CA in this claim, and whether its authorizations
    /// were all made valid since (so `ready` can be assumed without a re-read).
    order: Option<(Order, bool)>,
    /// The order's authorizations as read under the order gate, for `collect`.
    prefetched: Vec<Authorization>,
    /// The work slot, given back while the order waits for DNS or the CA.
    slot: Option<WorkSlot>,
    /// Room for the order's authorizations, held from before newOrder until decided.
    pending: Option<PendingAuthorizations>,
    /// Claimed in `ordering` with no order URL: a run was stopped between writing
    /// `ordering` and storing the order's URL, so the CA may hold an order for this job
    /// already (see `recover`).
    maybe_lost_order: bool,
    /// The pending key file this node generated or restored from the store in this claim,
    /// as it wrote it ([`pending_key`]).
    own_pending: Option<OwnPendingKey>,
}

impl JobDriver {
    pub(crate) fn new(sh: Arc<Shared>, claimed: ClaimedJob, slot: Option<WorkSlot>) -> JobDriver {
        let mut ctx = OrderContext::new(sh.account.url(), &claimed.job.spec.names);
        ctx.replaces = claimed.job.spec.replaces.clone();
        ctx.in_renewal_window = ctx.replaces.is_some();
        let mut solvers = sh.solvers.clone();
        solvers.preferred = claimed.job.spec.challenge.unwrap_or(ChallengeKind::Dns01);
        let steps = OrderSteps::new(
            sh.account.clone(),
            solvers,
            Poller::new(sh.config.poll.clone()),
        );
        JobDriver {
            steps,
            sh,
            lease: claimed.lease,
            job: claimed.job,
            ctx,
            reservation: None,
            order: None,
            prefetched: Vec::new(),
            slot,
            pending: None,
            maybe_lost_order: false,
            own_pending: None,
        }
    }

    /// Runs the job until it is issued, deferred or failed; returns it as stored.
    pub(crate) async fn run(mut self) -> Result<Job, RunError> {
        let outcome = self.drive().await;
        match &outcome {
            Err(RunError::Store(StoreError::Fenced { .. })) => {
                self.drop_own_pending_key(Leaving::Refused);
            }
            _ if self.job.status != JobStatus::Issued => {
                self.drop_own_pending_key(Leaving::Unissued);
            }
            _ => {}
        }
        outcome.map(|()| self.job)
    }

    async fn drive(&mut self) -> Result<(), RunError> {
        let mut status = self.job.status;
        self.maybe_lost_order = status == JobStatus::Ordering && self.job.order_url.is_none();
        self.adopt_pending_key_on_disk().await?;
        if status == JobStatus::Deferred {
            // A claimed deferred job resumes at its stored status, written first so every
            // later transition starts from there.
            status = self.job.resume_status.unwrap_or(JobStatus::Ordering);
            if status == JobStatus::Queued {
                status = JobStatus::Ordering;
            }
            self.write(JobUpdate::to(status)).await?;
        }
        for _ in 0..MAX_STEPS {
            let step = match status {
                JobStatus::Queued | JobStatus::Ordering => self.order().await,
                JobStatus::Authorizing | JobStatus::Validating => self.authorize(status).await,
                JobStatus::Finalizing => self.finalize().await,
                JobStatus::Issued | JobStatus::Failed | JobStatus::Deferred => break,
            };
            status = match step {
                Ok(next) => next,
                Err(RunError::Store(e)) => return Err(RunError::Store(e)),
                Err(e) => self.on_error(status, e).await?,
            };
        }
        if status.is_active() {
            // The bound was hit (an order that keeps bouncing between states): try later.
            let until = now() + self.sh.config.retry_backoff;
            self.write(JobUpdate::deferred(
                until,
                status,
                "too many steps in one attempt",
            ))
            .await?;
        }
        Ok(())
    }

    async fn write(&mut self, update: JobUpdate) -> Result<(), RunError> {
        self.job = self
            .sh
            .store
            .update_job(&self.lease, &update, now())
            .await?;
        Ok(())
    }

    /// Reserves tokens, writes `ordering`, creates the order, writes `authorizing`.
    async fn order(&mut self) -> Result<JobStatus, RunError> {
        if self.job.order_url.is_some() {
            return Ok(JobStatus::Authorizing);
        }
        let sh = self.sh.clone();
        self.hold_pending().await;
        if std::mem::take(&mut self.maybe_lost_order)
            && let Some(order) = self.adopt_lost_order().await?
        {
            self.order = Some((order, false));
            return Ok(JobStatus::Authorizing);
        }
        self.replaces_issued_certificate().await;
        let new_order_url = sh.account.client().directory().new_order.clone();
        let t = now();
        let cost = sh.governor.order_cost(&self.ctx, &new_order_url, t).await?;
        let section = sh.order_gate.section().await;
        let t = now();
        // The tokens and `ordering` are one store write.
        let ordering = JobUpdate::to(JobStatus::Ordering);
        let (reserve, written) = sh
            .governor
            .reserve_writing(&cost, Some((&self.lease, &ordering)), t)
            .await?;
        match reserve {
            Reserve::Granted(r) => {
                self.reservation = Some(r);
                match written {
                    Some(job) => self.job = job,
                    // A store that granted without writing: `ordering` before newOrder
                    // all the same.
                    None => self.write(ordering).await?,
                }
            }
            Reserve::Wait { until, key, cause } => {
                drop(section);
                let Some(until) = until else {
                    self.write(JobUpdate::failed(format!(
                        "the order can never fit the rate limit {key} ({cause:?})"
                    )))
                    .await?;
                    return Ok(JobStatus::Failed);
                };
                // The CA spends certificate tokens at issuance, a moment after we spend ours
                // at order time: wake a little later than our bucket says so the CA's
                // bucket has the token too.
                let until = if key == new_orders_key(sh.account.url()) {
                    until
                } else {
                    until + crate::gcra::to_time(sh.config.issuance_margin)
                };
                tracing::debug!(job = %self.job.id, bucket = %key, until = %until, "waiting for rate-limit tokens");
                self.write(JobUpdate::governed(
                    until,
                    JobStatus::Ordering,
                    &key.to_string(),
                ))
                .await?;
                return Ok(JobStatus::Deferred);
            }
        }
        if let Some(hook) = sh.window_hook.clone() {
            hook.before_new_order(&self.job);
        }
        if let Err(e) = self.hold_lease_for_request().await {
            // Nothing reached the CA: the tokens go back, for the node that orders instead.
            if let Err(refund) = self
                .give_back_tokens(OrderReached::NotCreated, None, now())
                .await
            {
                tracing::warn!(job = %self.job.id, "could not give back the tokens of the order not sent: {refund}");
            }
            return Err(e);
        }
        let spec = &self.job.spec;
        let req = new_order_request(&spec.names, spec.profile.clone(), self.ctx.replaces.clone());
        let answered = section.new_order(self.steps.new_order(&req)).await;
        // From the grant: how late the CA may have started counting (see the governor).
        sh.governor
            .note_order_answered((now() - t).try_into().unwrap_or_default());
        let (order, replaced) = answered?;
        if !replaced && self.ctx.replaces.is_some() {
            self.ctx.replaces = None;
            self.ctx.in_renewal_window = false;
        }
        tracing::debug!(job = %self.job.id, order = %order.url, "order created");
        self.write(JobUpdate::order_created(
            order.url.clone(),
            order.state.authorizations.clone(),
        ))
        .await?;
        drop(section);
        let reads = sh.order_gate.fresh_reads().await;
        self.prefetched = self.steps.read_authorizations(&order).await?;
        drop(reads);
        self.order = Some((order, false));
        Ok(JobStatus::Authorizing)
    }

    /// A renewal (a job issued before and queued again) names the certificate it replaces
    /// when the CA offers ARI (RFC 9773 §5), read from that certificate's meta.json.
    async fn replaces_issued_certificate(&mut self) {
        if self.ctx.replaces.is_some()
            || self.sh.account.client().directory().renewal_info.is_none()
        {
            return;
        }
        let Some(issued) = &self.job.issued else {
            return;
        };
        let meta = match self.stored_meta().await {
            Some(m) => Ok(m),
            None => CertificateMeta::read(std::path::Path::new(&issued.cert_dir)),
        };
        match meta {
            Ok(meta) if meta.ari_cert_id.is_some() => {
                self.ctx.replaces = meta.ari_cert_id;
                self.ctx.in_renewal_window = true;
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(job = %self.job.id, "no `replaces`: {e}"),
        }
    }

    /// The order's current state: the one just returned, else re-read by URL.
    async fn current_order(&mut self) -> Result<Option<(Order, bool)>, RunError> {
        if let Some(o) = self.order.take() {
            return Ok(Some(o));
        }
        let Some(url) = self.job.order_url.clone() else {
            return Ok(None);
        };
        let order = self.sh.account.order(&url).await?;
        // Read back from the CA: still an order for this job's names, or nothing of it is
        // presented.
        let names: Vec<Identifier> = self.job.spec.names.iter().map(Identifier::dns).collect();
        order.check_names(&names)?;
        Ok(Some((order, false)))
    }

    /// Forgets an order that went invalid (counting an attempt) and orders again.
    async fn reorder(&mut self, why: String) -> Result<JobStatus, RunError> {
        tracing::info!(job = %self.job.id, "{why}: ordering again");
        self.give_back_tokens(OrderReached::Created, None, now())
            .await?;
        if self.job.attempts + 1 >= self.sh.config.max_attempts {
            self.write(JobUpdate::failed(why).attempt()).await?;
            return Ok(JobStatus::Failed);
        }
        self.write(
            JobUpdate::to(JobStatus::Ordering)
                .clear_order()
                .attempt()
                .error(why),
        )
        .await?;
        Ok(JobStatus::Ordering)
    }

    /// Gives back what this claim's reservation took, if it still holds one, by how far the
    /// order `reached` ([`crate::governor::Governor::release`]; `refused_by` keeps its token).
    async fn give_back_tokens(
        &mut self,
        reached: OrderReached,
        refused_by: Option<&BucketKey>,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        match self.reservation.take() {
            Some(r) => self.sh.governor.release(&r, reached, refused_by, at).await,
            None => Ok(()),
        }
    }

    /// A step failed: rate limits and 503s defer (never fail) and pause their scope; other
    /// errors are retried with backoff up to [`crate::OrchestratorConfig::max_attempts`].
    async fn on_error(&mut self, status: JobStatus, e: RunError) -> Result<JobStatus, RunError> {
        let sh = self.sh.clone();
        let t = now();
        let before_order = self.job.order_url.is_none();
        let resume = if before_order {
            JobStatus::Ordering
        } else {
            status.max(JobStatus::Authorizing)
        };
        let signal = e
            .acme()
            .and_then(|a| RateLimitSignal::from_error(a, t, sh.governor.reactive_defaults()));
        let paused = match &signal {
            Some(signal) => Some(sh.governor.on_rate_limited(&self.ctx, signal).await?),
            None => None,
        };
        let reached = if before_order {
            OrderReached::NotCreated
        } else {
            OrderReached::Created
        };
        let refused_by = paused.as_ref().map(|(_, bucket)| bucket);
        self.give_back_tokens(reached, refused_by, t).await?;
        if let Some((until, _)) = paused {
            tracing::info!(job = %self.job.id, until = %until, "deferred by the CA: {e}");
            self.write(JobUpdate::deferred(until, resume, e.to_string()))
                .await?;
            return Ok(JobStatus::Deferred);
        }
        let attempts = self.job.attempts + 1;
        if attempts >= sh.config.max_attempts {
            tracing::warn!(job = %self.job.id, attempts, "giving up: {e}");
            self.write(JobUpdate::failed(e.to_string()).attempt())
                .await?;
            return Ok(JobStatus::Failed);
        }
        let backoff = sh
            .config
            .retry_backoff
            .saturating_mul(1 << (attempts - 1).min(10));
        let until = t + backoff;
        let keeps_order = is_transient(&e);
        tracing::info!(job = %self.job.id, attempts, until = %until, "retrying later: {e}");
        let mut update = JobUpdate::deferred(
            until,
            if keeps_order {
                resume
            } else {
                JobStatus::Ordering
            },
            e.to_string(),
        )
        .attempt();
        if !keeps_order {
            update = update.clear_order();
        }
        self.write(update).await?;
        Ok(JobStatus::Deferred)
    }
}

/// Worth retrying with the same order: transport trouble, server errors, DNS trouble and
/// polls that ran out of time.
fn is_transient(e: &RunError) -> bool {
    match e {
        RunError::Dns01(_) | RunError::BatcherClosed => true,
        RunError::Issue(
            IssueError::Dns01(_) | IssueError::Http01(_) | IssueError::PollTimeout { .. },
        ) => true,
        _ => e.acme().is_some_and(|a| a.is_transient()),
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}
