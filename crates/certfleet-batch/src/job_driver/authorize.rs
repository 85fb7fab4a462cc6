//! The `authorizing` and `validating` steps through the shared order steps
//! ([`certfleet_issue::steps`]): every pending authorization is read (the fresh ones were
//! read under the order gate), its challenge presented through the dns-01 zone batcher or
//! the http-01 solver, `validating` written at the checkpoint before the challenges are
//! answered, then the **order** polled until the CA has decided. Records are cleaned up on
//! every path.

use std::sync::Arc;

use async_trait::async_trait;
use certfleet_issue::IssueError;
use certfleet_issue::steps::{Authorized, Checkpoint, NextStep, next_step};
use certfleet_keys::SigningKey;

use super::{JobDriver, now};
use crate::error::RunError;
use crate::governor::registered_domain;
use crate::store::{JobStatus, JobUpdate};

/// The batch's checkpoint: each status is stored before the network step that depends on
/// it.
pub(super) struct JobCheckpoint<'a> {
    pub(super) driver: &'a mut JobDriver,
    /// The status the step started at.
    pub(super) status: JobStatus,
}

#[async_trait]
impl Checkpoint<RunError> for JobCheckpoint<'_> {
    async fn answering(&mut self) -> Result<(), RunError> {
        if self.status != JobStatus::Validating {
            self.driver
                .write(JobUpdate::to(JobStatus::Validating))
                .await?;
        }
        Ok(())
    }

    async fn finalize_key(&mut self) -> Result<Arc<dyn SigningKey>, RunError> {
        let key = self.driver.cert_key().await?;
        // The CSR goes out next. A fleet node paused since it wrote `finalizing` (or while
        // that write's answer was on its way) may have lost the job to another node, which
        // finalizes the same order: two finalize requests at once can both succeed at the
        // CA (two certificates, seen with Pebble). So the lease is confirmed right here.
        self.driver.check_lease().await?;
        Ok(key)
    }
}

impl JobDriver {
    /// Takes room for the order's authorizations unless held already (a resumed order
    /// takes it here, before it waits).
    pub(super) async fn hold_pending(&mut self) {
        if self.pending.is_none() {
            self.pending = self.sh.slots.pending(self.job.spec.names.len()).await;
        }
    }

    /// Presents, responds to and polls every pending authorization of the order.
    pub(super) async fn authorize(&mut self, status: JobStatus) -> Result<JobStatus, RunError> {
        let Some((order, _)) = self.current_order().await? else {
            return Ok(JobStatus::Ordering);
        };
        match next_step(order.state.status, false) {
            NextStep::Reorder => {
                return self
                    .reorder(format!("order {} became invalid", order.url))
                    .await;
            }
            NextStep::Authorize => {}
            NextStep::Finalize => {
                self.order = Some((order, false));
                return Ok(JobStatus::Finalizing);
            }
        }
        let sh = self.sh.clone();
        // Waiting is not working: from here until the CA decided, the order holds room
        // for its pending authorizations but no work slot.
        self.hold_pending().await;
        self.slot = None;
        let zone = registered_domain(&self.job.spec.names[0]);
        let zone_permit = sh.slots.zone(&zone).await;
        let prefetched = std::mem::take(&mut self.prefetched);
        let steps = self.steps.clone();
        let outcome = steps
            .authorize(
                order,
                prefetched,
                &mut JobCheckpoint {
                    driver: self,
                    status,
                },
            )
            .await;
        drop(zone_permit);
        self.pending = None;
        self.slot = sh.slots.work().await;
        if let Err(RunError::Issue(IssueError::ValidationFailed { name, .. })) = &outcome {
            sh.governor
                .authorization_failed(sh.account.url(), name, now())
                .await?;
        }
        let Authorized {
            order,
            assumed_ready,
        } = outcome?;
        self.order = Some((order, assumed_ready));
        Ok(JobStatus::Finalizing)
    }
}
