//! The store as a fleet's source of truth (issue 14): bundles and sealed keys written only
//! under a current lease, issuance rows unique by serial, session timeouts on every
//! connection, `ended_at` written by `end_run`.

mod common;

use std::time::Duration;

use certfleet_store::{
    ClaimRequest, Deployment, IssuanceRecord, JobSpec, NewBatch, NewJob, RunHolder, StateStore,
    StoreError, StoredBundle,
};
use time::macros::datetime;

const T0: time::OffsetDateTime = datetime!(2026-01-01 00:00 UTC);
const LEASE: Duration = Duration::from_secs(60);

fn bundle(job: certfleet_store::JobId, serial: &str, node: &str) -> StoredBundle {
    StoredBundle {
        job,
        serial: serial.into(),
        not_after: T0 + time::Duration::days(90),
        cert_pem: "-----BEGIN CERTIFICATE-----\n".into(),
        chain_pem: String::new(),
        meta_json: "{}".into(),
        key_ref: "file:/k.pem".into(),
        sealed_key: Some(vec![1, 2, 3]),
        node: node.into(),
        stored_at: T0,
    }
}

#[tokio::test]
async fn a_stale_lease_stores_no_bundle_and_no_key() {
    let Some(cluster) = common::Cluster::start().await else {
        return;
    };
    let url = cluster.fresh_db();
    let (a, b) = tokio::join!(cluster.open(&url), cluster.open(&url));
    assert!(a.shares_bundles());
    let (batch, _) = a
        .open_batch(
            &NewBatch {
                name: "f".into(),
                digest: "d".into(),
            },
            T0,
        )
        .await
        .expect("must succeed");
    let job = NewJob {
        key: "k".into(),
        spec: JobSpec {
            names: vec!["a.example".into()],
            ..JobSpec::default()
        },
    };
    a.add_jobs(batch.id, &[job], T0)
        .await
        .expect("must succeed");
    let req = |node: &str, now| ClaimRequest {
        batch: batch.id,
        node: node.into(),
        now,
        lease_for: LEASE,
        max_jobs: 1,
    };
    let old = a
        .claim_jobs(&req("A", T0))
        .await
        .expect("must succeed")
        .remove(0)
        .lease;
    // A is paused past its lease; B takes the job over.
    let later = T0 + time::Duration::seconds(120);
    let new = b
        .claim_jobs(&req("B", later))
        .await
        .expect("must succeed")
        .remove(0)
        .lease;
    let id = new.job;
    let err = a.put_job_key(&old, &[9, 9]).await.expect_err("must fail");
    assert!(matches!(err, StoreError::Fenced { .. }), "{err}");
    let err = a
        .put_bundle(&old, &bundle(id, "aa", "A"))
        .await
        .expect_err("must fail");
    assert!(matches!(err, StoreError::Fenced { .. }), "{err}");
    assert_eq!(
        b.job_key(id).await.expect("must succeed"),
        None,
        "the stale key was not stored"
    );
    assert_eq!(
        b.bundle(id).await.expect("must succeed"),
        None,
        "the stale bundle was not stored"
    );
    assert_eq!(
        cluster
            .pg
            .psql(common::db_name(&url), "SELECT count(*) FROM fenced_writes WHERE operation IN ('put_bundle', 'put_job_key')")
            .expect("must succeed"),
        "2",
        "both refusals recorded"
    );
    // The holder's writes are stored and read back by any node.
    b.put_job_key(&new, &[7, 7]).await.expect("must succeed");
    b.put_bundle(&new, &bundle(id, "bb", "B"))
        .await
        .expect("must succeed");
    assert_eq!(a.job_key(id).await.expect("must succeed"), Some(vec![7, 7]));
    assert_eq!(
        a.bundle(id).await.expect("must succeed"),
        Some(bundle(id, "bb", "B"))
    );
    // Deployments: one row per job and host, the newest wins.
    for serial in ["bb", "cc"] {
        a.record_deployment(&Deployment {
            job: id,
            host: "web1".into(),
            dir: "/srv/certs/a.example".into(),
            serial: serial.into(),
            at: T0,
        })
        .await
        .expect("must succeed");
    }
    let d = b.deployments(batch.id).await.expect("must succeed");
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].serial, "cc");
}

#[tokio::test]
async fn issuances_unique_by_serial_timeouts_and_ended_at() {
    let Some(cluster) = common::Cluster::start().await else {
        return;
    };
    let url = cluster.fresh_db();
    let db = common::db_name(&url).to_owned();
    let store = cluster.open(&url).await;
    let rec = IssuanceRecord {
        name_set: "a.example".into(),
        names: vec!["a.example".into()],
        account: "acct".into(),
        serial: "0abc".into(),
        issued_at: T0,
        not_after: T0 + time::Duration::days(90),
        replaces: None,
    };
    store.record_issuance(&rec).await.expect("must succeed");
    store.record_issuance(&rec).await.expect("must succeed");
    assert_eq!(
        cluster
            .pg
            .psql(&db, "SELECT count(*) FROM issuances")
            .expect("must succeed"),
        "1",
        "one row per serial"
    );
    assert_eq!(
        store
            .session_setting("idle_in_transaction_session_timeout")
            .await
            .expect("must succeed"),
        "10s"
    );
    assert_eq!(
        store
            .session_setting("lock_timeout")
            .await
            .expect("must succeed"),
        "5s"
    );
    assert_eq!(
        store
            .session_setting("statement_timeout")
            .await
            .expect("must succeed"),
        "30s"
    );
    let holder = RunHolder::this_process(time::OffsetDateTime::now_utc(), "h1");
    let guard = store.begin_run(&holder).await.expect("must succeed");
    store.end_run(&holder).await.expect("must succeed");
    let ended = cluster
        .pg
        .psql(
            &db,
            &format!(
                "SELECT ended_at IS NOT NULL FROM nodes WHERE node = '{}'",
                holder.node
            ),
        )
        .expect("must succeed");
    assert_eq!(ended, "t", "ended_at written before the guard is dropped");
    drop(guard);
}
