use std::sync::Mutex;

use async_trait::async_trait;
use certfleet_dns01::{Change, Dns01Error};

use super::*;

/// Records every call it gets.
#[derive(Debug, Default)]
struct Recorder {
    presents: Mutex<Vec<usize>>,
    cleanups: Mutex<Vec<usize>>,
    fail: bool,
}

#[async_trait]
impl Dns01Solver for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }

    async fn present(&self, records: &[TxtRecord]) -> Result<(), Dns01Error> {
        self.presents.lock().expect("lock").push(records.len());
        if self.fail {
            return Err(Dns01Error::Provider {
                provider: "recorder".to_owned(),
                detail: "refused".to_owned(),
                records: records.to_vec(),
            });
        }
        Ok(())
    }

    async fn cleanup(&self, records: &[TxtRecord]) -> Result<(), Dns01Error> {
        self.cleanups.lock().expect("lock").push(records.len());
        Ok(())
    }
}

fn record(i: usize) -> TxtRecord {
    TxtRecord::for_domain(&format!("h{i}.example.com"), format!("value{i}"))
}

#[tokio::test]
async fn concurrent_presents_become_one_solver_call() {
    let solver = Arc::new(Recorder::default());
    let batcher = ZoneBatcher::start(solver.clone(), None, BatcherConfig::default());
    let calls = (0..20).map(|i| {
        let b = batcher.clone();
        async move { b.present(vec![record(i)]).await }
    });
    for r in futures::future::join_all(calls).await {
        r.expect("presented");
    }
    assert_eq!(*solver.presents.lock().expect("lock"), vec![20]);
    batcher
        .cleanup((0..20).map(record).collect())
        .await
        .expect("cleaned");
    assert_eq!(*solver.cleanups.lock().expect("lock"), vec![20]);
}

#[tokio::test]
async fn a_full_round_goes_out_before_the_window_ends() {
    let solver = Arc::new(Recorder::default());
    let config = BatcherConfig {
        window: Duration::from_secs(30),
        max_records: 5,
        max_rounds_in_flight: 2,
    };
    let batcher = ZoneBatcher::start(solver.clone(), None, config);
    let started = std::time::Instant::now();
    batcher
        .present((0..5).map(record).collect())
        .await
        .expect("presented");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "did not wait for the window"
    );
}

#[tokio::test]
async fn a_failed_round_fails_every_order_in_it() {
    let solver = Arc::new(Recorder {
        fail: true,
        ..Recorder::default()
    });
    let batcher = ZoneBatcher::start(solver.clone(), None, BatcherConfig::default());
    let (a, b) = tokio::join!(
        batcher.present(vec![record(1)]),
        batcher.present(vec![record(2)])
    );
    assert!(matches!(a, Err(RunError::Dns01(_))), "{a:?}");
    assert!(matches!(b, Err(RunError::Dns01(_))), "{b:?}");
    assert_eq!(solver.presents.lock().expect("lock").len(), 1);
}

/// A propagation check that holds every round until the test lets it go.
#[derive(Debug)]
struct Gate(tokio::sync::Semaphore);

/// A batcher over `solver` gathering for 20 ms whose propagation checks wait for `Gate`
/// permits (closed at first).
fn gated(solver: Arc<dyn Dns01Solver>, config: BatcherConfig) -> (ZoneBatcher, Arc<Gate>) {
    let gate = Arc::new(Gate(tokio::sync::Semaphore::new(0)));
    let config = BatcherConfig {
        window: Duration::from_millis(20),
        ..config
    };
    (ZoneBatcher::start(solver, Some(gate.clone()), config), gate)
}

#[async_trait]
impl PropagationCheck for Gate {
    async fn wait_until_visible(&self, _records: &[TxtRecord]) -> Result<(), Dns01Error> {
        let _pass = self.0.acquire().await.expect("gate open");
        Ok(())
    }
}

#[tokio::test]
async fn records_arriving_while_a_round_propagates_go_out_together_in_the_next() {
    let solver = Arc::new(Recorder::default());
    let config = BatcherConfig {
        max_records: 500,
        max_rounds_in_flight: 1,
        ..BatcherConfig::default()
    };
    let (batcher, gate) = gated(solver.clone(), config);
    let first = tokio::spawn({
        let b = batcher.clone();
        async move { b.present(vec![record(0)]).await }
    });
    // Wait until the first round is out (and held by the propagation gate).
    for _ in 0..200 {
        if !solver.presents.lock().expect("lock").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // 30 more orders over several gathering windows while the first round propagates.
    let mut later = Vec::new();
    for i in 1..=30 {
        let b = batcher.clone();
        later.push(tokio::spawn(
            async move { b.present(vec![record(i)]).await },
        ));
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    gate.0.add_permits(100);
    first.await.expect("task").expect("presented");
    for l in later {
        l.await.expect("task").expect("presented");
    }
    let presents = solver.presents.lock().expect("lock").clone();
    assert_eq!(presents.iter().sum::<usize>(), 31, "{presents:?}");
    assert_eq!(
        presents,
        vec![1, 30],
        "the 30 records that waited for the round permit go out together"
    );
}

/// A solver with its own combined change: records (removed, added) per call.
#[derive(Debug, Default)]
struct Combining {
    applied: Mutex<Vec<(usize, usize, bool)>>,
}

#[async_trait]
impl Dns01Solver for Combining {
    fn name(&self) -> &str {
        "combining"
    }

    async fn present(&self, _records: &[TxtRecord]) -> Result<(), Dns01Error> {
        panic!("present must go through apply")
    }

    async fn cleanup(&self, _records: &[TxtRecord]) -> Result<(), Dns01Error> {
        panic!("cleanup must go through apply")
    }

    async fn apply(&self, change: Change<'_>) -> Result<(), Dns01Error> {
        self.applied.lock().expect("lock").push((
            change.remove.len(),
            change.add.len(),
            change.host_checks_propagation,
        ));
        Ok(())
    }
}

#[tokio::test]
async fn deletes_of_finished_orders_ride_with_the_next_adds_in_one_change() {
    let solver = Arc::new(Combining::default());
    let (batcher, gate) = gated(solver.clone(), BatcherConfig::default());
    let first = tokio::spawn({
        let b = batcher.clone();
        async move { b.present((0..5).map(record).collect()).await }
    });
    for _ in 0..200 {
        if !solver.applied.lock().expect("lock").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // While the first round propagates (one round in flight by default), finished orders
    // clean up and new ones present: they wait together for the next round.
    let cleanup = tokio::spawn({
        let b = batcher.clone();
        async move { b.cleanup((100..103).map(record).collect()).await }
    });
    let later: Vec<_> = (10..14)
        .map(|i| {
            let b = batcher.clone();
            tokio::spawn(async move { b.present(vec![record(i)]).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        solver.applied.lock().expect("lock").len(),
        1,
        "one round in flight"
    );
    gate.0.add_permits(100);
    first.await.expect("task").expect("presented");
    cleanup.await.expect("task").expect("cleaned");
    for l in later {
        l.await.expect("task").expect("presented");
    }
    assert_eq!(
        *solver.applied.lock().expect("lock"),
        vec![(0, 5, true), (3, 4, true)],
        "the 3 deletes and 4 adds went out in one change"
    );
}

#[tokio::test]
async fn a_cleanup_is_answered_when_its_change_is_accepted_not_after_propagation() {
    let solver = Arc::new(Combining::default());
    let (batcher, _gate) = gated(solver.clone(), BatcherConfig::default());
    let (present, cleanup) = tokio::join!(
        tokio::time::timeout(Duration::from_millis(500), batcher.present(vec![record(1)])),
        tokio::time::timeout(Duration::from_secs(10), batcher.cleanup(vec![record(2)])),
    );
    assert!(
        present.is_err(),
        "the add waits for the held propagation check"
    );
    cleanup.expect("answered in time").expect("cleaned");
    assert_eq!(*solver.applied.lock().expect("lock"), vec![(1, 1, true)]);
}
