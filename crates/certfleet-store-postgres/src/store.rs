//! [`StateStore`] for [`PgStore`]: each method delegates to the module that owns its SQL.

use std::time::Duration;

use async_trait::async_trait;
use certfleet_store::gcra::{BucketKey, BucketState, TokenRequest};
use certfleet_store::{
    BatchId, BatchRecord, ClaimRequest, ClaimedJob, Deployment, IssuanceRecord, Job, JobId,
    JobUpdate, Lease, NewBatch, NewJob, RunGuard, RunHolder, StateStore, StatusCounts, StoreError,
    StoredBundle, TakeOutcome,
};
use time::OffsetDateTime;

use crate::{PgStore, buckets, fenced, jobs, nodes, shared};

#[async_trait]
impl StateStore for PgStore {
    fn location(&self) -> String {
        self.db.location.clone()
    }

    /// Registers the node; never ends other nodes' leases (they may be alive: leases and
    /// fencing coordinate the nodes).
    async fn begin_run(&self, holder: &RunHolder) -> Result<RunGuard, StoreError> {
        nodes::register(&self.db, holder).await?;
        let guard = nodes::NodeGuard::start(self.db.clone(), holder.node.clone());
        Ok(RunGuard::new(holder.clone(), Box::new(guard)))
    }

    async fn end_run(&self, holder: &RunHolder) -> Result<(), StoreError> {
        nodes::end(&self.db, &holder.node).await
    }

    async fn open_batch(
        &self,
        batch: &NewBatch,
        now: OffsetDateTime,
    ) -> Result<(BatchRecord, bool), StoreError> {
        jobs::open_batch(&self.db, batch, now).await
    }

    async fn batches(&self) -> Result<Vec<BatchRecord>, StoreError> {
        jobs::batches(&self.db).await
    }

    async fn add_jobs(
        &self,
        batch: BatchId,
        new_jobs: &[NewJob],
        now: OffsetDateTime,
    ) -> Result<usize, StoreError> {
        jobs::add_jobs(&self.db, batch, new_jobs, now).await
    }

    async fn claim_jobs(&self, req: &ClaimRequest) -> Result<Vec<ClaimedJob>, StoreError> {
        jobs::claim(&self.db, req).await
    }

    async fn renew_lease(
        &self,
        lease: &Lease,
        now: OffsetDateTime,
        lease_for: Duration,
    ) -> Result<Lease, StoreError> {
        fenced::renew_lease(&self.db, lease, now, lease_for).await
    }

    async fn release_job(&self, lease: &Lease) -> Result<(), StoreError> {
        fenced::release(&self.db, lease).await
    }

    async fn update_job(
        &self,
        lease: &Lease,
        update: &JobUpdate,
        now: OffsetDateTime,
    ) -> Result<Job, StoreError> {
        fenced::update(&self.db, lease, update, now).await
    }

    async fn job(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        jobs::job(&self.db, id).await
    }

    async fn list_jobs(
        &self,
        batch: BatchId,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<Job>, StoreError> {
        jobs::list(&self.db, batch, after, limit).await
    }

    async fn status_counts(&self, batch: BatchId) -> Result<StatusCounts, StoreError> {
        jobs::counts(&self.db, batch).await
    }

    async fn next_due(
        &self,
        batch: BatchId,
        now: OffsetDateTime,
    ) -> Result<Option<OffsetDateTime>, StoreError> {
        jobs::next_due(&self.db, batch, now).await
    }

    async fn requeue_failed(
        &self,
        batch: BatchId,
        now: OffsetDateTime,
    ) -> Result<usize, StoreError> {
        jobs::requeue_failed(&self.db, batch, now).await
    }

    async fn redue_governed(
        &self,
        batch: BatchId,
        now: OffsetDateTime,
    ) -> Result<usize, StoreError> {
        jobs::redue_governed(&self.db, batch, now).await
    }

    async fn requeue_issued(
        &self,
        batch: BatchId,
        ids: &[JobId],
        now: OffsetDateTime,
    ) -> Result<usize, StoreError> {
        jobs::requeue_issued(&self.db, batch, ids, now).await
    }

    async fn take_tokens(
        &self,
        requests: &[TokenRequest],
        now: OffsetDateTime,
    ) -> Result<TakeOutcome, StoreError> {
        buckets::take(&self.db, requests, now).await
    }

    async fn take_tokens_writing(
        &self,
        requests: &[TokenRequest],
        lease: &Lease,
        update: &JobUpdate,
        now: OffsetDateTime,
    ) -> Result<(TakeOutcome, Option<Job>), StoreError> {
        buckets::take_writing(&self.db, requests, lease, update, now).await
    }

    async fn peek_tokens(
        &self,
        requests: &[TokenRequest],
        now: OffsetDateTime,
    ) -> Result<TakeOutcome, StoreError> {
        buckets::peek(&self.db, requests, now).await
    }

    async fn refund_tokens(
        &self,
        requests: &[TokenRequest],
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        buckets::refund(&self.db, requests, now).await
    }

    async fn pause(&self, key: &BucketKey, until: OffsetDateTime) -> Result<(), StoreError> {
        buckets::pause(&self.db, key, until).await
    }

    async fn bucket(&self, key: &BucketKey) -> Result<BucketState, StoreError> {
        buckets::state(&self.db, key).await
    }

    async fn record_issuance(&self, record: &IssuanceRecord) -> Result<(), StoreError> {
        buckets::record_issuance(&self.db, record).await
    }

    async fn last_issuance(&self, name_set: &str) -> Result<Option<IssuanceRecord>, StoreError> {
        buckets::last_issuance(&self.db, name_set).await
    }

    fn shares_bundles(&self) -> bool {
        true
    }

    async fn put_bundle(&self, lease: &Lease, bundle: &StoredBundle) -> Result<(), StoreError> {
        shared::put_bundle(&self.db, lease, bundle).await
    }

    async fn bundle(&self, job: JobId) -> Result<Option<StoredBundle>, StoreError> {
        shared::bundle(&self.db, job).await
    }

    async fn put_job_key(&self, lease: &Lease, sealed: &[u8]) -> Result<(), StoreError> {
        shared::put_job_key(&self.db, lease, sealed).await
    }

    async fn job_key(&self, job: JobId) -> Result<Option<Vec<u8>>, StoreError> {
        shared::job_key(&self.db, job).await
    }

    async fn record_deployment(&self, deployment: &Deployment) -> Result<(), StoreError> {
        shared::record_deployment(&self.db, deployment).await
    }

    async fn deployments(&self, batch: BatchId) -> Result<Vec<Deployment>, StoreError> {
        shared::deployments(&self.db, batch).await
    }
}
