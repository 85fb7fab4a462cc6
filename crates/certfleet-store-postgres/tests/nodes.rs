//! Several stores (nodes) on one database: concurrent first migration, claims that never
//! overlap, fencing across nodes, runs side by side, shared buckets that never over-grant.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use certfleet_store::gcra::{BucketKey, Limit, TokenRequest};
use certfleet_store::{
    ClaimRequest, JobSpec, JobStatus, JobUpdate, NewBatch, NewJob, RunHolder, StateStore,
    StoreError, TakeOutcome,
};
use certfleet_store_postgres::PgStore;
use time::macros::datetime;

const T0: time::OffsetDateTime = datetime!(2026-01-01 00:00 UTC);
const LEASE: Duration = Duration::from_secs(60);

async fn three(cluster: &common::Cluster) -> (String, Vec<PgStore>) {
    let url = cluster.fresh_db();
    // First open by three nodes at once: the advisory lock serialises the migration.
    let (a, b, c) = tokio::join!(cluster.open(&url), cluster.open(&url), cluster.open(&url));
    (url, vec![a, b, c])
}

async fn batch(store: &PgStore, n: usize) -> certfleet_store::BatchId {
    let (b, _) = store
        .open_batch(
            &NewBatch {
                name: "shared".into(),
                digest: "d".into(),
            },
            T0,
        )
        .await
        .expect("open_batch");
    let jobs: Vec<NewJob> = (0..n)
        .map(|i| NewJob {
            key: format!("k{i}"),
            spec: JobSpec {
                names: vec![format!("n{i}.example")],
                ..JobSpec::default()
            },
        })
        .collect();
    store.add_jobs(b.id, &jobs, T0).await.expect("add_jobs");
    b.id
}

fn claim_req(
    batch: certfleet_store::BatchId,
    node: &str,
    now: time::OffsetDateTime,
) -> ClaimRequest {
    ClaimRequest {
        batch,
        node: node.into(),
        now,
        lease_for: LEASE,
        max_jobs: 7,
    }
}

#[tokio::test]
async fn nodes_share_one_batch_safely() {
    let Some(cluster) = common::Cluster::start().await else {
        return;
    };
    let (url, stores) = three(&cluster).await;
    let versions = cluster
        .pg
        .psql(
            common::db_name(&url),
            "SELECT count(*), max(version) FROM schema_version",
        )
        .expect("psql");
    assert_eq!(versions, "1|2", "migrated exactly once, to version 2");

    // Concurrent claims from three nodes: every job claimed exactly once, by all nodes.
    let id = batch(&stores[0], 300).await;
    let tasks: Vec<_> = stores
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                // Bounded: 300 jobs, at least one per round while any is left.
                for _ in 0..300 {
                    let got = s
                        .claim_jobs(&claim_req(id, &format!("node-{i}"), T0))
                        .await
                        .expect("claim");
                    if got.is_empty() {
                        break;
                    }
                    mine.extend(got.into_iter().map(|c| c.job.id));
                    tokio::task::yield_now().await;
                }
                mine
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        let mine = t.await.expect("join");
        assert!(!mine.is_empty(), "every node claimed work");
        all.extend(mine);
    }
    let distinct: BTreeSet<_> = all.iter().collect();
    assert_eq!(
        (all.len(), distinct.len()),
        (300, 300),
        "each job claimed once"
    );

    // A second run beside the first does not end its leases.
    let _a = stores[0].begin_run(&holder("node-0")).await.expect("run a");
    let _b = stores[1].begin_run(&holder("node-1")).await.expect("run b");
    let job = stores[2].job(all[0]).await.expect("job").expect("exists");
    assert!(
        job.lease.is_some(),
        "leases survive another node's begin_run"
    );
    let nodes = stores[2].nodes().await.expect("nodes");
    assert_eq!(nodes.len(), 2, "{nodes:?}");
}

fn holder(node: &str) -> RunHolder {
    RunHolder {
        node: node.into(),
        pid: 1,
        host: "h".into(),
        started_at: T0,
    }
}

#[tokio::test]
async fn a_paused_node_is_fenced_and_the_new_owner_continues_the_same_order() {
    let Some(cluster) = common::Cluster::start().await else {
        return;
    };
    let (url, stores) = three(&cluster).await;
    let (a, b) = (&stores[0], &stores[1]);
    let id = batch(a, 1).await;
    let ca = a
        .claim_jobs(&claim_req(id, "node-a", T0))
        .await
        .expect("claim")
        .remove(0);
    a.update_job(&ca.lease, &JobUpdate::to(JobStatus::Ordering), T0)
        .await
        .expect("ordering");
    a.update_job(
        &ca.lease,
        &JobUpdate::order_created("https://ca/order/1", vec!["https://ca/authz/1".into()]),
        T0,
    )
    .await
    .expect("authorizing");
    // node-a pauses past its lease; node-b takes over and sees the same order.
    let later = T0 + time::Duration::seconds(61);
    let cb = b
        .claim_jobs(&claim_req(id, "node-b", later))
        .await
        .expect("claim")
        .remove(0);
    assert_eq!(cb.job.order_url.as_deref(), Some("https://ca/order/1"));
    assert!(cb.lease.token > ca.lease.token);
    // node-a wakes up: every write it tries is refused.
    let err = a
        .update_job(&ca.lease, &JobUpdate::finalizing("file:/k.pem"), later)
        .await
        .expect_err("stale");
    assert!(
        matches!(err, StoreError::Fenced { ref holder, .. } if holder == "node-b"),
        "{err}"
    );
    assert!(matches!(
        a.renew_lease(&ca.lease, later, LEASE).await,
        Err(StoreError::Fenced { .. })
    ));
    assert_eq!(a.stats().fenced, 2);
    let db = common::db_name(&url);
    let recorded = cluster
        .pg
        .psql(db, "SELECT node, operation FROM fenced_writes ORDER BY id")
        .expect("psql");
    assert_eq!(recorded, "node-a|update_job\nnode-a|renew_lease");
    let j = b
        .update_job(&cb.lease, &JobUpdate::to(JobStatus::Validating), later)
        .await
        .expect("owner");
    assert_eq!(
        (j.status, j.order_url.as_deref()),
        (JobStatus::Validating, Some("https://ca/order/1"))
    );
    assert_eq!(j.cert_key, None, "the stale finalizing write left nothing");
}

#[tokio::test]
async fn shared_buckets_never_over_grant() {
    let Some(cluster) = common::Cluster::start().await else {
        return;
    };
    let (_, stores) = three(&cluster).await;
    let limit = Limit {
        capacity: 20,
        period: Duration::from_secs(60),
    };
    let request = |key: &str| TokenRequest {
        key: BucketKey(key.into()),
        limit: Some(limit),
        cost: 1,
        check_only: false,
    };
    // 3 nodes × 15 debits at the same instant of two overlapping buckets (in both orders,
    // which would deadlock without ordered locking): exactly 20 pass.
    let tasks: Vec<_> = stores
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let s = s.clone();
            let reqs = if i % 2 == 0 {
                vec![request("new-orders:acct"), request("domain:example.com")]
            } else {
                vec![request("domain:example.com"), request("new-orders:acct")]
            };
            tokio::spawn(async move {
                let mut granted = 0;
                for _ in 0..15 {
                    if s.take_tokens(&reqs, T0).await.expect("take") == TakeOutcome::Granted {
                        granted += 1;
                    }
                }
                granted
            })
        })
        .collect();
    let mut granted = 0;
    for t in tasks {
        granted += t.await.expect("join");
    }
    assert_eq!(granted, 20, "one account's limit across all nodes");
}
