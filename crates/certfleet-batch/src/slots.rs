//! The run's three bounds, kept apart from the orchestrator loop:
//!
//! - **work slots** (`concurrency`): orders being *worked on* — reserving tokens, creating
//!   the order, reading authorizations, finalizing and downloading. An order whose
//!   challenges are presented and which only waits (for DNS propagation, for the CA's
//!   validation) gives its slot back, so a few dozen slots keep hundreds of orders moving.
//! - **pending authorizations** (`pending_authorizations`): authorizations this run holds
//!   at the CA that are not decided yet, counted per name from before newOrder until the
//!   order is no longer `pending`. Let's Encrypt refuses new orders beyond 300 pending
//!   authorizations per account; the preset sets the bound.
//! - **per zone** (`per_zone`, optional): orders of one DNS zone (registered domain) with
//!   records presented and waiting at once, for DNS providers that limit the records of a
//!   zone.
//!
//! Acquiring never deadlocks: an order holds at most one permit it does not need to finish
//! the step it is in (it waits for pending authorizations while holding its work slot, but
//! gives the slot back before it waits for a zone permit or for the CA).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Pending authorizations when neither the preset nor the configuration bounds them.
pub const DEFAULT_PENDING_AUTHORIZATIONS: usize = 1_000;

/// The bounds of one run.
#[derive(Debug)]
pub(crate) struct Slots {
    work: Arc<Semaphore>,
    /// Told whenever a work slot is given back (the run loop claims another job).
    freed: Arc<Notify>,
    pending: Arc<Semaphore>,
    pending_bound: usize,
    per_zone: Option<usize>,
    zones: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// A work slot; giving it back (dropping it) wakes the run loop.
#[derive(Debug)]
pub(crate) struct WorkSlot {
    _permit: OwnedSemaphorePermit,
    freed: Arc<Notify>,
}

impl Drop for WorkSlot {
    fn drop(&mut self) {
        self.freed.notify_one();
    }
}

/// Pending authorizations of one order, held until the order is decided.
#[derive(Debug)]
pub(crate) struct PendingAuthorizations {
    _permit: OwnedSemaphorePermit,
}

impl Slots {
    pub(crate) fn new(concurrency: usize, pending: usize, per_zone: Option<usize>) -> Slots {
        let pending_bound = pending.max(1);
        Slots {
            work: Arc::new(Semaphore::new(concurrency.max(1))),
            freed: Arc::new(Notify::new()),
            pending: Arc::new(Semaphore::new(pending_bound)),
            pending_bound,
            per_zone: per_zone.map(|n| n.max(1)),
            zones: Mutex::new(HashMap::new()),
        }
    }

    /// Work slots free now (orders waiting to get theirs back come first).
    pub(crate) fn free_work(&self) -> usize {
        self.work.available_permits()
    }

    /// A work slot if one is free now.
    pub(crate) fn try_work(&self) -> Option<WorkSlot> {
        let permit = self.work.clone().try_acquire_owned().ok()?;
        Some(WorkSlot {
            _permit: permit,
            freed: self.freed.clone(),
        })
    }

    /// A work slot, waiting for one (an order that finished waiting and has work again).
    pub(crate) async fn work(&self) -> Option<WorkSlot> {
        let permit = self.work.clone().acquire_owned().await.ok()?;
        Some(WorkSlot {
            _permit: permit,
            freed: self.freed.clone(),
        })
    }

    /// Resolves when a work slot was given back since the last call.
    pub(crate) async fn work_freed(&self) {
        self.freed.notified().await;
    }

    /// Room for the `names` authorizations of one order (an order with more names than
    /// the bound takes the whole bound).
    pub(crate) async fn pending(&self, names: usize) -> Option<PendingAuthorizations> {
        let n = names.clamp(1, self.pending_bound);
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        let permit = self.pending.clone().acquire_many_owned(n).await.ok()?;
        Some(PendingAuthorizations { _permit: permit })
    }

    /// A permit of the zone's bound on orders waiting at once; `None` when unbounded.
    pub(crate) async fn zone(&self, zone: &str) -> Option<OwnedSemaphorePermit> {
        let bound = self.per_zone?;
        let sem = {
            let mut zones = self.zones.lock().unwrap_or_else(|p| p.into_inner());
            zones
                .entry(zone.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(bound)))
                .clone()
        };
        sem.acquire_owned().await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_returned_work_slot_wakes_the_loop_and_is_free_again() {
        let slots = Slots::new(2, 10, None);
        let a = slots.try_work().expect("first slot");
        let _b = slots.try_work().expect("second slot");
        assert!(slots.try_work().is_none(), "only two slots");
        assert_eq!(slots.free_work(), 0);
        drop(a);
        tokio::time::timeout(std::time::Duration::from_secs(5), slots.work_freed())
            .await
            .expect("the loop is told a slot is free");
        assert_eq!(slots.free_work(), 1);
    }

    #[tokio::test]
    async fn pending_authorizations_are_counted_per_name_and_bounded() {
        let slots = Slots::new(1, 5, None);
        let three = slots.pending(3).await.expect("3 of 5");
        let two = slots.pending(2).await.expect("2 of 5");
        let blocked = tokio::time::timeout(std::time::Duration::from_millis(50), slots.pending(1));
        assert!(blocked.await.is_err(), "a sixth authorization must wait");
        drop(three);
        let _ = slots.pending(3).await.expect("room again");
        // More names than the bound: takes the whole bound once the others are gone.
        drop(two);
        let _all = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            // The three taken just above were dropped at the end of their statement.
            slots.pending(100).await
        })
        .await
        .expect("an order larger than the bound still runs")
        .expect("permit");
    }

    #[tokio::test]
    async fn per_zone_bounds_only_when_set() {
        let unbounded = Slots::new(1, 10, None);
        assert!(unbounded.zone("example.com").await.is_none());
        let bounded = Slots::new(1, 10, Some(1));
        let first = bounded.zone("example.com").await.expect("first");
        let other_zone = bounded.zone("example.org").await;
        assert!(other_zone.is_some(), "zones are bounded apart");
        let second = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            bounded.zone("example.com"),
        );
        assert!(second.await.is_err(), "one order per zone at once");
        drop(first);
    }
}
