//! A job claimed in `ordering` with no order URL: the run before wrote `ordering`, maybe
//! sent newOrder, and stopped (SIGKILL, power loss) before the order's URL was stored. The
//! CA may hold an order for the job already; continuing it keeps the batch at exactly one
//! order per certificate.
//!
//! Where the CA keeps an orders list (RFC 8555 §7.1.2.1; Pebble does, paged by 3, oldest
//! first), the job waits until the interrupted request had [`LOST_ORDER_SETTLE`] to reach
//! the CA, reads the whole list, leaves out every order URL the store holds for a job of
//! this batch, and continues the newest open order (`pending`/`ready`) for exactly its
//! names. Where the CA keeps no list (Let's Encrypt's Boulder), or the list is longer than
//! the bounds, the job orders again: **at most one extra order per crash**, because the
//! order gate lets at most one newOrder be in flight whose URL is not stored yet.

use std::collections::HashSet;
use std::time::Duration;

use certfleet_acme::Order;
use certfleet_issue::poll::settle_until;
use certfleet_issue::steps::OpenOrderSearch;

use super::JobDriver;
use crate::error::RunError;
use crate::store::{JobId, JobUpdate};

/// How long after the interrupted run wrote `ordering` (right before its newOrder) the
/// orders list is read: a request whose bytes reached the CA before the crash is
/// processed by then (Pebble: milliseconds), one that did not never will be.
pub(crate) const LOST_ORDER_SETTLE: Duration = Duration::from_secs(3);

/// Orders fetched (those no job stores, newest first) when looking for the lost one.
const MAX_LOST_ORDER_FETCH: usize = 200;

/// Jobs read per store page when collecting the batch's known order URLs.
const KNOWN_PAGE: usize = 500;

impl JobDriver {
    /// Continues the order an interrupted run created for this job, if the CA lists it:
    /// stores its URL and reads its authorizations (under the order gate, as after
    /// newOrder). `None`: order anew (see the module docs for the bound).
    pub(super) async fn adopt_lost_order(&mut self) -> Result<Option<Order>, RunError> {
        let since = self.job.updated_at;
        settle_until(since + LOST_ORDER_SETTLE, LOST_ORDER_SETTLE).await;
        let known = self.known_order_urls().await?;
        let search = self
            .steps
            .find_open_order(
                &self.job.spec.names,
                &|url| known.contains(url),
                MAX_LOST_ORDER_FETCH,
            )
            .await?;
        let order = match search {
            OpenOrderSearch::Found(order) => *order,
            OpenOrderSearch::Absent { listed, fetched } => {
                tracing::debug!(job = %self.job.id, listed, fetched, "no order of an interrupted run to continue: ordering");
                return Ok(None);
            }
            OpenOrderSearch::Incomplete { listed, fetched } => {
                tracing::info!(job = %self.job.id, listed, fetched, "the orders list is longer than the search bounds: ordering (at most one extra order for this crash)");
                return Ok(None);
            }
            OpenOrderSearch::NoList => {
                tracing::info!(job = %self.job.id, "the CA keeps no orders list: ordering (at most one extra order for this crash)");
                return Ok(None);
            }
        };
        tracing::info!(job = %self.job.id, order = %order.url, "continuing the order an interrupted run created");
        self.write(JobUpdate::order_created(
            order.url.clone(),
            order.state.authorizations.clone(),
        ))
        .await?;
        let sh = self.sh.clone();
        let reads = sh.order_gate.fresh_reads().await;
        self.prefetched = self.steps.read_authorizations(&order).await?;
        drop(reads);
        Ok(Some(order))
    }

    /// Order URLs the store holds for the jobs of this batch (never adopted twice).
    async fn known_order_urls(&self) -> Result<HashSet<String>, RunError> {
        let mut known = HashSet::new();
        let mut after: Option<JobId> = None;
        loop {
            let page = self
                .sh
                .store
                .list_jobs(self.job.batch, after, KNOWN_PAGE)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            let full = page.len() == KNOWN_PAGE;
            known.extend(page.into_iter().filter_map(|j| j.order_url));
            if !full {
                break;
            }
        }
        Ok(known)
    }
}
