//! Orders one at a time, and the reads of fresh authorizations kept apart from them.
//!
//! - **One order section at a time** ([`OrderGate::section`]): from taking the new-order
//!   tokens until the order URL is stored. At any moment at most one order exists that
//!   the store does not know (a crash costs at most one extra order, which the lost-order
//!   recovery then adopts), and tokens are taken in the order the CA sees the requests.
//! - **newOrder never overlaps a read of a fresh authorization**: Pebble 2.4 deadlocks
//!   when an authorization read (holding that authorization's lock while it looks up the
//!   account) overlaps a newOrder scanning every authorization while a store write waits.
//!   Reads wait while any job is in or waiting for an order section, so the reads of the
//!   orders created back to back go out together, in parallel, between newOrders; they
//!   wait for at most [`MAX_ORDERS_BEFORE_READS`] sections, so a steady stream of new
//!   orders cannot starve them.
//!
//! Holding the authorization reads inside the order section instead (one newOrder, then
//! its reads, then the next newOrder) made the section the run's bottleneck: 96 % of a
//! 1,000-certificate run's wall time, 40 % of it waiting for those reads.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Mutex, MutexGuard, Notify, RwLock, RwLockReadGuard};

/// Order sections a read of fresh authorizations lets go first at most.
pub(crate) const MAX_ORDERS_BEFORE_READS: usize = 16;

#[derive(Debug, Default)]
pub(crate) struct OrderGate {
    section: Mutex<()>,
    /// newOrder (write) against fresh authorization reads (read).
    requests: RwLock<()>,
    /// Jobs in or waiting for an order section.
    ordering: AtomicUsize,
    /// Order sections ended (or waits for one given up) so far.
    left: AtomicUsize,
    someone_left: Notify,
}

/// The one order section; the order requests inside go through [`OrderSection::new_order`].
pub(crate) struct OrderSection<'g> {
    gate: &'g OrderGate,
    _serial: MutexGuard<'g, ()>,
}

impl OrderGate {
    /// Waits for the order section.
    pub(crate) async fn section(&self) -> OrderSection<'_> {
        self.ordering.fetch_add(1, Ordering::SeqCst);
        // Counted before the wait, so reads hold back for queued orders too; the guard
        // below undoes the count however this future ends (also when dropped mid-wait).
        let count = Counted(self);
        let serial = self.section.lock().await;
        std::mem::forget(count);
        OrderSection {
            gate: self,
            _serial: serial,
        }
    }

    /// Waits until no job is in or waiting for an order section (or
    /// [`MAX_ORDERS_BEFORE_READS`] sections have ended) and no newOrder is out; reads of
    /// fresh authorizations are made while the guard is held.
    pub(crate) async fn fresh_reads(&self) -> RwLockReadGuard<'_, ()> {
        let start = self.left.load(Ordering::SeqCst);
        loop {
            let left = self.someone_left.notified();
            tokio::pin!(left);
            // Registered before the check: a section ending in between still wakes us.
            left.as_mut().enable();
            if self.ordering.load(Ordering::SeqCst) == 0
                || self.left.load(Ordering::SeqCst).wrapping_sub(start) >= MAX_ORDERS_BEFORE_READS
            {
                return self.requests.read().await;
            }
            left.await;
        }
    }

    fn leave(&self) {
        self.left.fetch_add(1, Ordering::SeqCst);
        self.ordering.fetch_sub(1, Ordering::SeqCst);
        self.someone_left.notify_waiters();
    }
}

impl OrderSection<'_> {
    /// Runs the newOrder request `f` while no fresh authorization is being read.
    pub(crate) async fn new_order<T>(&self, f: impl Future<Output = T>) -> T {
        let _exclusive = self.gate.requests.write().await;
        f.await
    }
}

impl Drop for OrderSection<'_> {
    fn drop(&mut self) {
        self.gate.leave();
    }
}

/// Leaves the count of a section wait that ended without the section.
struct Counted<'g>(&'g OrderGate);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.leave();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn reads_wait_for_queued_orders_and_never_overlap_a_new_order() {
        let gate = Arc::new(OrderGate::default());
        let in_new_order = Arc::new(AtomicBool::new(false));
        let first = gate.section().await;
        // A second order queues behind the first.
        let queued = tokio::spawn({
            let (gate, flag) = (gate.clone(), in_new_order.clone());
            async move {
                let s = gate.section().await;
                s.new_order(async {
                    flag.store(true, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    flag.store(false, Ordering::SeqCst);
                })
                .await;
            }
        });
        let read = tokio::spawn({
            let (gate, flag) = (gate.clone(), in_new_order.clone());
            async move {
                let _r = gate.fresh_reads().await;
                assert!(!flag.load(Ordering::SeqCst), "a read overlapped a newOrder");
                gate.ordering.load(Ordering::SeqCst)
            }
        });
        tokio::task::yield_now().await;
        assert!(
            !read.is_finished(),
            "the read waits while orders are queued"
        );
        drop(first);
        queued.await.expect("second order");
        let ordering_at_read = tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .expect("the read goes once no one orders")
            .expect("read task");
        assert_eq!(ordering_at_read, 0);
    }

    #[tokio::test]
    async fn a_steady_stream_of_orders_lets_reads_go_after_the_bound() {
        let gate: &'static OrderGate = Box::leak(Box::default());
        // The next order always queues before the previous one ends: `ordering` never
        // drops to 0.
        let mut held = gate.section().await;
        let read = tokio::spawn(async move {
            let _r = gate.fresh_reads().await;
            gate.left.load(Ordering::SeqCst)
        });
        let mut sections = 0;
        while !read.is_finished() && sections < 4 * MAX_ORDERS_BEFORE_READS {
            let next = tokio::spawn(async move { gate.section().await });
            while gate.ordering.load(Ordering::SeqCst) < 2 {
                tokio::task::yield_now().await;
            }
            drop(held);
            held = next.await.expect("section");
            sections += 1;
            tokio::task::yield_now().await;
        }
        assert!(
            read.is_finished(),
            "the read still waits after {sections} sections"
        );
        let left_at_read = read.await.expect("the read went");
        assert!(
            left_at_read >= MAX_ORDERS_BEFORE_READS,
            "the read went after {left_at_read} sections, before the bound"
        );
        drop(held);
    }

    #[tokio::test]
    async fn a_section_wait_given_up_leaves_no_count_behind() {
        let gate = OrderGate::default();
        let held = gate.section().await;
        let gave_up = tokio::time::timeout(Duration::from_millis(10), gate.section()).await;
        assert!(gave_up.is_err(), "the section is taken");
        drop(held);
        assert_eq!(gate.ordering.load(Ordering::SeqCst), 0);
        let _reads = tokio::time::timeout(Duration::from_secs(5), gate.fresh_reads())
            .await
            .expect("reads go when no one orders");
    }
}
