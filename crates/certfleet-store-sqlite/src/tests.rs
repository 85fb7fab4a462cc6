use std::time::Duration;

use crate::SqliteStore;
use certfleet_store::conformance::{self, T0};
use certfleet_store::{
    ClaimRequest, JobSpec, JobStatus, JobUpdate, NewBatch, NewJob, RunHolder, StateStore,
};
use certfleet_store::{SCHEMA_VERSION, StoreError};

#[tokio::test]
async fn conformance_suite() {
    let mut dirs = Vec::new();
    conformance::run_all(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        dirs.push(dir);
        async move { SqliteStore::open(&path).await.expect("open") }
    })
    .await;
}

fn holder(node: &str, pid: u32) -> RunHolder {
    RunHolder {
        node: node.into(),
        pid,
        host: "build-host".into(),
        started_at: T0,
    }
}

#[tokio::test]
async fn second_run_is_refused_naming_the_holder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = SqliteStore::open(dir.path()).await.expect("open a");
    let b = SqliteStore::open(dir.path()).await.expect("open b");
    let guard = a
        .begin_run(&holder("host/4242/ab", 4242))
        .await
        .expect("first run");
    let err = b
        .begin_run(&holder("host/7/cd", 7))
        .await
        .expect_err("second run must be refused");
    let msg = err.to_string();
    match &err {
        StoreError::Locked { holder, .. } => assert_eq!(holder.pid, 4242),
        other => panic!("expected Locked, got {other}"),
    }
    assert!(msg.contains("pid 4242 on host build-host"), "{msg}");
    assert!(msg.contains("started at 2026-01-01T00:00:00Z"), "{msg}");
    assert!(msg.contains("batch.db"), "{msg}");
    drop(guard);
    b.begin_run(&holder("host/7/cd", 7))
        .await
        .expect("free after the first run ends");
}

#[tokio::test]
async fn newer_schema_is_refused_with_both_versions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path()).await.expect("open");
    store
        .force_schema_version(SCHEMA_VERSION + 1)
        .await
        .expect("bump");
    drop(store);
    let err = SqliteStore::open(dir.path())
        .await
        .expect_err("newer schema");
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            StoreError::SchemaTooNew {
                found: 2,
                supported: 1,
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains("schema version 2, newer than version 1"),
        "{msg}"
    );
}

/// A run killed mid-order leaves its lease behind; the next run (after reopening the
/// database) takes the job at once and continues the same order.
#[tokio::test]
async fn resumed_run_continues_the_same_order_after_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lease_for = Duration::from_secs(3600);
    {
        let store = SqliteStore::open(dir.path()).await.expect("open");
        let _run = store.begin_run(&holder("run-1", 1)).await.expect("run 1");
        let (batch, _) = store
            .open_batch(
                &NewBatch {
                    name: "b".into(),
                    digest: "x".into(),
                },
                T0,
            )
            .await
            .expect("batch");
        let job = NewJob {
            key: "a.example".into(),
            spec: JobSpec {
                names: vec!["a.example".into()],
                ..JobSpec::default()
            },
        };
        store.add_jobs(batch.id, &[job], T0).await.expect("add");
        let c = store
            .claim_jobs(&ClaimRequest {
                batch: batch.id,
                node: "run-1".into(),
                now: T0,
                lease_for,
                max_jobs: 1,
            })
            .await
            .expect("claim")
            .remove(0);
        store
            .update_job(&c.lease, &JobUpdate::to(JobStatus::Ordering), T0)
            .await
            .expect("ordering");
        store
            .update_job(
                &c.lease,
                &JobUpdate::order_created(
                    "https://ca/order/42",
                    vec!["https://ca/authz/42".into()],
                ),
                T0,
            )
            .await
            .expect("authorizing");
        // The process dies here: no release, no clean shutdown.
    }
    let store = SqliteStore::open(dir.path()).await.expect("reopen");
    let _run = store.begin_run(&holder("run-2", 2)).await.expect("run 2");
    let (batch, created) = store
        .open_batch(
            &NewBatch {
                name: "b".into(),
                digest: "x".into(),
            },
            T0,
        )
        .await
        .expect("batch");
    assert!(!created);
    // One second later, long before run-1's lease would have expired.
    let claimed = store
        .claim_jobs(&ClaimRequest {
            batch: batch.id,
            node: "run-2".into(),
            now: T0 + time::Duration::seconds(1),
            lease_for,
            max_jobs: 10,
        })
        .await
        .expect("claim");
    assert_eq!(
        claimed.len(),
        1,
        "the dead run's lease was ended by begin_run"
    );
    let job = &claimed[0].job;
    assert_eq!(job.status, JobStatus::Authorizing);
    assert_eq!(job.order_url.as_deref(), Some("https://ca/order/42"));
    assert_eq!(job.authorization_urls, ["https://ca/authz/42"]);
}
