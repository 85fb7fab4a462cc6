//! The store conformance suite: the behaviour every [`StateStore`] backend must show
//! (state machine, write-before-network fields, leases and fencing, resume of the same
//! order, deferrals, token buckets, issuance history). Run it against a backend with
//! [`run_all`], giving a function that returns a fresh, empty store each time:
//!
//! ```no_run
//! use std::future::Future;
//! use certfleet_store::{conformance, StateStore};
//!
//! // In a backend's tests, `open_empty` opens a new, empty store each call (a fresh
//! // directory for SQLite, a fresh schema for PostgreSQL): see
//! // `certfleet-store-sqlite/src/tests.rs` and `certfleet-store-postgres/tests/conformance.rs`.
//! async fn backend_conforms<S, Fut>(open_empty: impl FnMut() -> Fut)
//! where
//!     S: StateStore,
//!     Fut: Future<Output = S>,
//! {
//!     conformance::run_all(open_empty).await;
//! }
//! ```
//!
//! Checks panic with a message naming what failed. Time is passed explicitly: nothing
//! sleeps.

use std::future::Future;
use std::time::Duration;

use time::OffsetDateTime;
use time::macros::datetime;

use crate::error::StoreError;
use crate::gcra::{BucketKey, DenyCause, Limit, TokenRequest};
use crate::store::{
    BatchId, ClaimRequest, ClaimedJob, IssuanceRecord, IssuedCert, JobSpec, JobStatus, JobUpdate,
    NewBatch, NewJob, StateStore, TakeOutcome,
};

/// The instant the checks start at.
pub const T0: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);
const LEASE: Duration = Duration::from_secs(60);

fn secs(n: i64) -> time::Duration {
    time::Duration::seconds(n)
}

/// Runs every check, each on a fresh store from `new_store`.
pub async fn run_all<F, Fut, S>(mut new_store: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = S>,
    S: StateStore,
{
    happy_path_and_fields(&new_store().await).await;
    invalid_transitions_refused(&new_store().await).await;
    fencing_rejects_stale_writer(&new_store().await).await;
    resume_continues_same_order(&new_store().await).await;
    deferral_and_next_due(&new_store().await).await;
    governor_deferrals_are_reevaluated(&new_store().await).await;
    batches_and_jobs_are_idempotent(&new_store().await).await;
    claims_respect_leases_and_limits(&new_store().await).await;
    buckets_debit_atomically(&new_store().await).await;
    pauses_and_refunds(&new_store().await).await;
    issuance_history(&new_store().await).await;
    issuance_rides_with_issued(&new_store().await).await;
    tokens_ride_with_ordering(&new_store().await).await;
    renewal_requeues_issued_only(&new_store().await).await;
}

async fn batch_with(store: &dyn StateStore, n: usize) -> BatchId {
    let (batch, created) = store
        .open_batch(
            &NewBatch {
                name: "conformance".into(),
                digest: "d1".into(),
            },
            T0,
        )
        .await
        .expect("open_batch");
    assert!(created, "a new batch must report created");
    let jobs: Vec<NewJob> = (0..n)
        .map(|i| NewJob {
            key: format!("job-{i}"),
            spec: JobSpec {
                names: vec![format!("n{i}.example.com")],
                source_line: Some(i + 1),
                ..JobSpec::default()
            },
        })
        .collect();
    let added = store.add_jobs(batch.id, &jobs, T0).await.expect("add_jobs");
    assert_eq!(added, n);
    batch.id
}

async fn claim(
    store: &dyn StateStore,
    batch: BatchId,
    node: &str,
    now: OffsetDateTime,
    max: usize,
) -> Vec<ClaimedJob> {
    store
        .claim_jobs(&ClaimRequest {
            batch,
            node: node.into(),
            now,
            lease_for: LEASE,
            max_jobs: max,
        })
        .await
        .expect("claim_jobs")
}

/// The happy path, every field written before the step that needs it, counts.
pub async fn happy_path_and_fields(store: &dyn StateStore) {
    let batch = batch_with(store, 2).await;
    let c = claim(store, batch, "node-a", T0, 1).await.remove(0);
    assert_eq!(c.job.status, JobStatus::Queued);
    assert_eq!(c.job.spec.names, ["n0.example.com"]);
    let l = &c.lease;
    let j = store
        .update_job(l, &JobUpdate::to(JobStatus::Ordering).attempt(), T0)
        .await
        .expect("ordering");
    assert_eq!((j.status, j.attempts), (JobStatus::Ordering, 1));
    let authz = vec![
        "https://ca/authz/1".to_owned(),
        "https://ca/authz/2".to_owned(),
    ];
    let j = store
        .update_job(
            l,
            &JobUpdate::order_created("https://ca/order/1", authz.clone()),
            T0,
        )
        .await
        .expect("authorizing");
    assert_eq!(j.order_url.as_deref(), Some("https://ca/order/1"));
    assert_eq!(j.authorization_urls, authz);
    store
        .update_job(l, &JobUpdate::to(JobStatus::Validating), T0)
        .await
        .expect("validating");
    let j = store
        .update_job(l, &JobUpdate::finalizing("file:/keys/n0.pem"), T0)
        .await
        .expect("finalizing");
    assert_eq!(j.cert_key.as_deref(), Some("file:/keys/n0.pem"));
    assert_eq!(
        j.order_url.as_deref(),
        Some("https://ca/order/1"),
        "order URL kept"
    );
    let cert = IssuedCert {
        serial: "0a1b".into(),
        not_after: T0 + secs(86_400 * 90),
        cert_dir: "/certs/n0.example.com".into(),
        node: None,
    };
    let j = store
        .update_job(l, &JobUpdate::issued(cert.clone()), T0 + secs(5))
        .await
        .expect("issued");
    assert_eq!(j.status, JobStatus::Issued);
    assert_eq!(j.issued, Some(cert));
    assert!(j.lease.is_none(), "a terminal job keeps no lease");
    assert_eq!(j.updated_at, T0 + secs(5));
    let counts = store.status_counts(batch).await.expect("counts");
    assert_eq!(counts.get(JobStatus::Issued), 1);
    assert_eq!(counts.get(JobStatus::Queued), 1);
    assert_eq!(counts.total(), 2);
    let again = store.job(j.id).await.expect("job").expect("exists");
    assert_eq!(again, j, "job() returns what update_job returned");
}

/// Transitions outside the state machine, and inconsistent updates, are refused.
pub async fn invalid_transitions_refused(store: &dyn StateStore) {
    let batch = batch_with(store, 1).await;
    let c = claim(store, batch, "node-a", T0, 1).await.remove(0);
    let err = store
        .update_job(&c.lease, &JobUpdate::to(JobStatus::Finalizing), T0)
        .await
        .expect_err("queued -> finalizing must be refused");
    assert!(
        matches!(
            err,
            StoreError::InvalidTransition {
                from: JobStatus::Queued,
                to: JobStatus::Finalizing,
                ..
            }
        ),
        "{err}"
    );
    let mut bad = JobUpdate::to(JobStatus::Deferred);
    bad.resume_status = Some(JobStatus::Ordering);
    let err = store
        .update_job(&c.lease, &bad, T0)
        .await
        .expect_err("deferred needs a time");
    assert!(matches!(err, StoreError::InvalidUpdate { .. }), "{err}");
    store
        .update_job(&c.lease, &JobUpdate::failed("bad name"), T0)
        .await
        .expect("failed");
    let again = claim(store, batch, "node-a", T0, 5).await;
    assert!(again.is_empty(), "failed jobs are not claimable");
    assert_eq!(store.requeue_failed(batch, T0).await.expect("requeue"), 1);
    let c = claim(store, batch, "node-a", T0, 5).await.remove(0);
    assert_eq!(c.job.status, JobStatus::Queued);
}

/// A writer whose lease was taken over is refused; the new owner is not.
pub async fn fencing_rejects_stale_writer(store: &dyn StateStore) {
    let batch = batch_with(store, 1).await;
    let a = claim(store, batch, "node-a", T0, 1).await.remove(0);
    store
        .update_job(&a.lease, &JobUpdate::to(JobStatus::Ordering), T0)
        .await
        .expect("a writes");
    assert!(
        claim(store, batch, "node-b", T0 + secs(30), 1)
            .await
            .is_empty(),
        "lease still valid"
    );
    // node-a stalls past its lease; node-b takes the job over.
    let b = claim(store, batch, "node-b", T0 + secs(61), 1)
        .await
        .remove(0);
    assert!(
        b.lease.token > a.lease.token,
        "a claim must raise the fencing token"
    );
    assert_eq!(b.job.status, JobStatus::Ordering);
    let stale = JobUpdate::order_created("https://ca/order/stale", vec![]);
    let err = store
        .update_job(&a.lease, &stale, T0 + secs(62))
        .await
        .expect_err("stale write");
    match err {
        StoreError::Fenced {
            presented,
            current,
            ref holder,
            ..
        } => {
            assert_eq!((presented, current), (a.lease.token, b.lease.token));
            assert_eq!(holder, "node-b");
        }
        other => panic!("expected Fenced, got {other}"),
    }
    assert!(matches!(
        store.renew_lease(&a.lease, T0 + secs(62), LEASE).await,
        Err(StoreError::Fenced { .. })
    ));
    assert!(matches!(
        store.release_job(&a.lease).await,
        Err(StoreError::Fenced { .. })
    ));
    let j = store
        .update_job(
            &b.lease,
            &JobUpdate::order_created("https://ca/order/b", vec![]),
            T0 + secs(63),
        )
        .await
        .expect("new owner writes");
    assert_eq!(j.order_url.as_deref(), Some("https://ca/order/b"));
    let renewed = store
        .renew_lease(&b.lease, T0 + secs(100), LEASE)
        .await
        .expect("renew");
    assert_eq!(renewed.expires_at, T0 + secs(160));
    assert!(
        claim(store, batch, "node-c", T0 + secs(130), 1)
            .await
            .is_empty(),
        "renewed lease holds"
    );
}

/// A job interrupted after its order was created resumes with the same order.
pub async fn resume_continues_same_order(store: &dyn StateStore) {
    let batch = batch_with(store, 1).await;
    let first = claim(store, batch, "run-1", T0, 1).await.remove(0);
    let authz = vec!["https://ca/authz/7".to_owned()];
    store
        .update_job(&first.lease, &JobUpdate::to(JobStatus::Ordering), T0)
        .await
        .expect("ordering");
    store
        .update_job(
            &first.lease,
            &JobUpdate::order_created("https://ca/order/7", authz.clone()),
            T0,
        )
        .await
        .expect("authorizing");
    store
        .update_job(&first.lease, &JobUpdate::to(JobStatus::Validating), T0)
        .await
        .expect("validating");
    // run-1 dies; its lease runs out.
    let resumed = claim(store, batch, "run-2", T0 + secs(120), 10).await;
    assert_eq!(resumed.len(), 1);
    let job = &resumed[0].job;
    assert_eq!(job.status, JobStatus::Validating);
    assert_eq!(job.order_url.as_deref(), Some("https://ca/order/7"));
    assert_eq!(job.authorization_urls, authz);
    let j = store
        .update_job(
            &resumed[0].lease,
            &JobUpdate::finalizing("file:/k.pem"),
            T0 + secs(121),
        )
        .await
        .expect("continue");
    assert_eq!(j.order_url.as_deref(), Some("https://ca/order/7"));
    let j = store
        .update_job(
            &resumed[0].lease,
            &JobUpdate::to(JobStatus::Ordering)
                .clear_order()
                .error("order invalid"),
            T0 + secs(122),
        )
        .await
        .expect("new order after an invalid one");
    assert_eq!((j.order_url, j.authorization_urls.len()), (None, 0));
    assert_eq!(j.last_error.as_deref(), Some("order invalid"));
}

/// Deferred jobs wait for their time, keep their order, and resume.
pub async fn deferral_and_next_due(store: &dyn StateStore) {
    let batch = batch_with(store, 1).await;
    let c = claim(store, batch, "node-a", T0, 1).await.remove(0);
    store
        .update_job(&c.lease, &JobUpdate::to(JobStatus::Ordering), T0)
        .await
        .expect("ordering");
    store
        .update_job(
            &c.lease,
            &JobUpdate::order_created("https://ca/order/9", vec![]),
            T0,
        )
        .await
        .expect("authorizing");
    let until = T0 + secs(600);
    let j = store
        .update_job(
            &c.lease,
            &JobUpdate::deferred(until, JobStatus::Authorizing, "503"),
            T0,
        )
        .await
        .expect("deferred");
    assert_eq!(
        (j.status, j.deferred_until, j.resume_status),
        (
            JobStatus::Deferred,
            Some(until),
            Some(JobStatus::Authorizing)
        )
    );
    assert!(j.lease.is_none(), "deferring gives the lease up");
    assert!(
        claim(store, batch, "node-a", T0 + secs(599), 1)
            .await
            .is_empty()
    );
    assert_eq!(
        store.next_due(batch, T0 + secs(1)).await.expect("next_due"),
        Some(until)
    );
    // A CA's deferral (503) is kept when a run re-evaluates the governor's own.
    assert_eq!(
        store
            .redue_governed(batch, T0 + secs(1))
            .await
            .expect("redue"),
        0
    );
    let c = claim(store, batch, "node-a", until, 1).await.remove(0);
    assert_eq!(c.job.order_url.as_deref(), Some("https://ca/order/9"));
    let j = store
        .update_job(&c.lease, &JobUpdate::to(JobStatus::Authorizing), until)
        .await
        .expect("resume");
    assert_eq!((j.status, j.deferred_until), (JobStatus::Authorizing, None));
    assert_eq!(
        j.last_error.as_deref(),
        Some("503"),
        "the last error is kept until issued"
    );
}

/// A deferral by the client's rate governor becomes due at once when a run re-evaluates
/// it (the run's limits decide again); only in the batch named.
pub async fn governor_deferrals_are_reevaluated(store: &dyn StateStore) {
    let batch = batch_with(store, 1).await;
    let c = claim(store, batch, "node-a", T0, 1).await.remove(0);
    let until = T0 + secs(7 * 24 * 3600);
    store
        .update_job(
            &c.lease,
            &JobUpdate::governed(until, JobStatus::Ordering, "domain:example.com"),
            T0,
        )
        .await
        .expect("governed deferral");
    assert!(
        claim(store, batch, "node-a", T0 + secs(5), 1)
            .await
            .is_empty()
    );
    let other = BatchId(batch.0 + 1000);
    assert_eq!(
        store
            .redue_governed(other, T0 + secs(5))
            .await
            .expect("redue"),
        0
    );
    assert_eq!(
        store
            .redue_governed(batch, T0 + secs(5))
            .await
            .expect("redue"),
        1
    );
    let c = claim(store, batch, "node-a", T0 + secs(5), 1)
        .await
        .remove(0);
    assert_eq!(
        (c.job.status, c.job.resume_status),
        (JobStatus::Deferred, Some(JobStatus::Ordering))
    );
}

/// Re-opening a batch and re-adding its jobs duplicates nothing.
pub async fn batches_and_jobs_are_idempotent(store: &dyn StateStore) {
    let batch = batch_with(store, 3).await;
    let (again, created) = store
        .open_batch(
            &NewBatch {
                name: "conformance".into(),
                digest: "d1".into(),
            },
            T0 + secs(9),
        )
        .await
        .expect("reopen");
    assert_eq!((again.id, created), (batch, false));
    let (other, created) = store
        .open_batch(
            &NewBatch {
                name: "conformance".into(),
                digest: "d2".into(),
            },
            T0,
        )
        .await
        .expect("other");
    assert!(created && other.id != batch);
    let dup = vec![NewJob {
        key: "job-1".into(),
        spec: JobSpec::default(),
    }];
    assert_eq!(store.add_jobs(batch, &dup, T0).await.expect("re-add"), 0);
    assert_eq!(store.status_counts(batch).await.expect("counts").total(), 3);
    assert_eq!(store.batches().await.expect("batches").len(), 2);
}

/// Claims never hand out a leased job, honour `max_jobs`, and listings page.
pub async fn claims_respect_leases_and_limits(store: &dyn StateStore) {
    let batch = batch_with(store, 5).await;
    let a = claim(store, batch, "node-a", T0, 3).await;
    let b = claim(store, batch, "node-b", T0, 10).await;
    assert_eq!((a.len(), b.len()), (3, 2));
    let mut ids: Vec<_> = a.iter().chain(&b).map(|c| c.job.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5, "no job claimed twice");
    assert!(
        claim(store, batch, "node-c", T0 + secs(59), 10)
            .await
            .is_empty()
    );
    store.release_job(&a[0].lease).await.expect("release");
    let c = claim(store, batch, "node-c", T0 + secs(1), 10).await;
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].job.id, a[0].job.id);
    let page1 = store.list_jobs(batch, None, 2).await.expect("page 1");
    let page2 = store
        .list_jobs(batch, Some(page1[1].id), 10)
        .await
        .expect("page 2");
    assert_eq!((page1.len(), page2.len()), (2, 3));
    assert!(page2[0].id > page1[1].id);
    assert_eq!(
        page1[0].lease.as_ref().map(|l| l.node.as_str()),
        Some("node-c")
    );
}

fn req(key: &str, limit: Limit, cost: u32) -> TokenRequest {
    TokenRequest {
        key: BucketKey(key.into()),
        limit: Some(limit),
        cost,
        check_only: false,
    }
}

/// Takes are all or nothing; the wait is computed by GCRA; peeks write nothing.
pub async fn buckets_debit_atomically(store: &dyn StateStore) {
    // 3 per 60 s: one token every 20 s.
    let small = Limit {
        capacity: 3,
        period: Duration::from_secs(60),
    };
    let big = Limit {
        capacity: 100,
        period: Duration::from_secs(60),
    };
    for i in 0..3 {
        let out = store
            .take_tokens(&[req("a", small, 1), req("b", big, 1)], T0)
            .await
            .expect("take");
        assert_eq!(out, TakeOutcome::Granted, "take {i}");
    }
    let out = store
        .take_tokens(&[req("b", big, 1), req("a", small, 1)], T0 + secs(5))
        .await
        .expect("take");
    assert_eq!(
        out,
        TakeOutcome::Wait {
            key: BucketKey("a".into()),
            cause: DenyCause::Limit,
            retry_at: Some(T0 + secs(20))
        }
    );
    // "b" was not debited by the refused take: 97 left at T0 + 5 s.
    let b = store.bucket(&BucketKey("b".into())).await.expect("bucket");
    assert_eq!(b.tat, Some(T0 + time::Duration::milliseconds(1800)));
    let peek = store
        .peek_tokens(&[req("a", small, 1)], T0 + secs(20))
        .await
        .expect("peek");
    assert_eq!(peek, TakeOutcome::Granted);
    let peek2 = store
        .peek_tokens(&[req("a", small, 1)], T0 + secs(20))
        .await
        .expect("peek");
    assert_eq!(peek2, TakeOutcome::Granted, "a peek takes nothing");
    assert_eq!(
        store
            .take_tokens(&[req("a", small, 1)], T0 + secs(20))
            .await
            .expect("take"),
        TakeOutcome::Granted
    );
    let out = store
        .take_tokens(&[req("a", small, 4)], T0 + secs(999))
        .await
        .expect("take");
    assert!(
        matches!(
            out,
            TakeOutcome::Wait {
                cause: DenyCause::ExceedsCapacity,
                retry_at: None,
                ..
            }
        ),
        "{out:?}"
    );
}

/// Reactive pauses block a scope; refunds give tokens back.
pub async fn pauses_and_refunds(store: &dyn StateStore) {
    let limit = Limit {
        capacity: 2,
        period: Duration::from_secs(60),
    };
    let key = BucketKey("domain:example.com".into());
    store.pause(&key, T0 + secs(300)).await.expect("pause");
    store
        .pause(&key, T0 + secs(100))
        .await
        .expect("earlier pause is ignored");
    let out = store
        .take_tokens(&[req(&key.0, limit, 1)], T0)
        .await
        .expect("take");
    assert_eq!(
        out,
        TakeOutcome::Wait {
            key: key.clone(),
            cause: DenyCause::Paused,
            retry_at: Some(T0 + secs(300))
        }
    );
    let pause_only = TokenRequest {
        key: key.clone(),
        limit: None,
        cost: 0,
        check_only: true,
    };
    assert!(matches!(
        store
            .peek_tokens(std::slice::from_ref(&pause_only), T0)
            .await
            .expect("peek"),
        TakeOutcome::Wait { .. }
    ));
    let later = T0 + secs(300);
    assert_eq!(
        store.peek_tokens(&[pause_only], later).await.expect("peek"),
        TakeOutcome::Granted
    );
    let two = [req(&key.0, limit, 1), req(&key.0, limit, 1)];
    assert_eq!(
        store.take_tokens(&two, later).await.expect("take 2"),
        TakeOutcome::Granted
    );
    assert!(matches!(
        store
            .take_tokens(&[req(&key.0, limit, 1)], later)
            .await
            .expect("take"),
        TakeOutcome::Wait { .. }
    ));
    store
        .refund_tokens(&[req(&key.0, limit, 1)], later)
        .await
        .expect("refund");
    assert_eq!(
        store
            .take_tokens(&[req(&key.0, limit, 1)], later)
            .await
            .expect("take"),
        TakeOutcome::Granted
    );
}

/// Issuances are recorded and the latest per name set is found.
pub async fn issuance_history(store: &dyn StateStore) {
    assert!(
        store
            .last_issuance("a.example")
            .await
            .expect("none")
            .is_none()
    );
    for (serial, at) in [("01", 0), ("02", 50)] {
        store
            .record_issuance(&IssuanceRecord {
                name_set: "a.example,b.example".into(),
                names: vec!["a.example".into(), "b.example".into()],
                account: "https://ca/acct/1".into(),
                serial: serial.into(),
                issued_at: T0 + secs(at),
                not_after: T0 + secs(at + 86_400),
                replaces: (serial == "02").then(|| "aki.serial".to_owned()),
            })
            .await
            .expect("record");
    }
    let last = store
        .last_issuance("a.example,b.example")
        .await
        .expect("last")
        .expect("some");
    assert_eq!(
        (last.serial.as_str(), last.issued_at),
        ("02", T0 + secs(50))
    );
    assert_eq!(last.replaces.as_deref(), Some("aki.serial"));
    assert_eq!(last.names, ["a.example", "b.example"]);
}

/// An `issued` update carrying an issuance record writes both or, refused, neither; the
/// record goes with `issued` only.
pub async fn issuance_rides_with_issued(store: &dyn StateStore) {
    let batch = batch_with(store, 1).await;
    let a = claim(store, batch, "node-a", T0, 1).await.remove(0);
    for step in [
        JobUpdate::to(JobStatus::Ordering),
        JobUpdate::order_created("https://ca/order/1", vec![]),
        JobUpdate::to(JobStatus::Validating),
        JobUpdate::finalizing("file:/k.pem"),
    ] {
        store
            .update_job(&a.lease, &step, T0)
            .await
            .expect("to finalizing");
    }
    let record = |serial: &str| IssuanceRecord {
        name_set: "n0.example.com".into(),
        names: vec!["n0.example.com".into()],
        account: "https://ca/acct/1".into(),
        serial: serial.into(),
        issued_at: T0 + secs(70),
        not_after: T0 + secs(86_400),
        replaces: None,
    };
    let cert = |serial: &str| IssuedCert {
        serial: serial.into(),
        not_after: T0 + secs(86_400),
        cert_dir: "/certs/n0.example.com".into(),
        node: None,
    };
    assert!(
        matches!(
            store
                .update_job(
                    &a.lease,
                    &JobUpdate::to(JobStatus::Finalizing).recording(record("00")),
                    T0
                )
                .await,
            Err(StoreError::InvalidUpdate { .. })
        ),
        "a record without `issued` is refused"
    );
    // node-a stalls past its lease; node-b takes the job over: node-a's `issued` with its
    // record is refused whole.
    let b = claim(store, batch, "node-b", T0 + secs(61), 1)
        .await
        .remove(0);
    let stale = JobUpdate::issued(cert("0a")).recording(record("0a"));
    assert!(matches!(
        store.update_job(&a.lease, &stale, T0 + secs(70)).await,
        Err(StoreError::Fenced { .. })
    ));
    assert!(
        store
            .last_issuance("n0.example.com")
            .await
            .expect("read")
            .is_none(),
        "a refused update records no issuance"
    );
    let j = store
        .update_job(
            &b.lease,
            &JobUpdate::issued(cert("0b")).recording(record("0b")),
            T0 + secs(70),
        )
        .await
        .expect("issued");
    assert_eq!(j.status, JobStatus::Issued);
    let last = store
        .last_issuance("n0.example.com")
        .await
        .expect("read")
        .expect("recorded with issued");
    assert_eq!(last, record("0b"));
}

/// `requeue_issued` moves exactly the listed issued jobs back to `queued` and keeps the
/// certificate they replace; other statuses and other batches are untouched.
pub async fn renewal_requeues_issued_only(store: &dyn StateStore) {
    let batch = batch_with(store, 3).await;
    let mut claimed = claim(store, batch, "node-a", T0, 3).await;
    assert_eq!(claimed.len(), 3);
    let cert = IssuedCert {
        serial: "0c0d".into(),
        not_after: T0 + secs(86_400 * 90),
        cert_dir: "/certs/n0.example.com".into(),
        node: None,
    };
    let issued = claimed.remove(0);
    let finalizing = JobUpdate::finalizing("file:/keys/n0.pem");
    for update in [
        JobUpdate::to(JobStatus::Ordering),
        JobUpdate::order_created("https://ca/order/9", vec!["https://ca/authz/9".into()]),
        finalizing,
        JobUpdate::issued(cert.clone()),
    ] {
        store
            .update_job(&issued.lease, &update, T0)
            .await
            .expect("issue job 0");
    }
    let failed = claimed.remove(0);
    store
        .update_job(&failed.lease, &JobUpdate::failed("bad"), T0)
        .await
        .expect("fail job 1");
    let (other, _) = store
        .open_batch(
            &NewBatch {
                name: "other".into(),
                digest: "d2".into(),
            },
            T0,
        )
        .await
        .expect("other batch");
    let ids = [issued.job.id, failed.job.id, claimed[0].job.id];
    assert_eq!(
        store
            .requeue_issued(other.id, &ids, T0)
            .await
            .expect("wrong batch"),
        0,
        "jobs of another batch are not moved"
    );
    let moved = store
        .requeue_issued(batch, &ids, T0 + secs(10))
        .await
        .expect("requeue_issued");
    assert_eq!(moved, 1, "only the issued job moves");
    let j = store
        .job(issued.job.id)
        .await
        .expect("job")
        .expect("exists");
    assert_eq!(j.status, JobStatus::Queued);
    assert_eq!(j.issued, Some(cert), "the replaced certificate is kept");
    assert_eq!(j.order_url, None, "a renewal gets a new order");
    assert_eq!(j.attempts, 0);
    let f = store
        .job(failed.job.id)
        .await
        .expect("job")
        .expect("exists");
    assert_eq!(f.status, JobStatus::Failed);
}

/// `take_tokens_writing`: a grant and the job's `ordering` are written together; a fenced
/// writer spends no token; a denial writes nothing.
pub async fn tokens_ride_with_ordering(store: &dyn StateStore) {
    let limit = Limit {
        capacity: 1,
        period: Duration::from_secs(3600),
    };
    let one = [req("account:ordering", limit, 1)];
    let ordering = JobUpdate::to(JobStatus::Ordering);
    let batch = batch_with(store, 2).await;
    let a = claim(store, batch, "node-a", T0, 1).await.remove(0);
    // node-a stalls past its lease; node-b takes the job over.
    let b = claim(store, batch, "node-b", T0 + secs(61), 1)
        .await
        .into_iter()
        .find(|c| c.job.id == a.job.id)
        .expect("node-b takes the stalled job over");
    assert!(
        matches!(
            store
                .take_tokens_writing(&one, &a.lease, &ordering, T0 + secs(62))
                .await,
            Err(StoreError::Fenced { .. })
        ),
        "a stale lease is refused"
    );
    let (outcome, job) = store
        .take_tokens_writing(&one, &b.lease, &ordering, T0 + secs(62))
        .await
        .expect("granted");
    assert_eq!(
        outcome,
        TakeOutcome::Granted,
        "the refused write spent no token"
    );
    let job = job.expect("the job as written comes with a grant");
    assert_eq!(job.status, JobStatus::Ordering);
    let c = claim(store, batch, "node-c", T0 + secs(63), 1)
        .await
        .remove(0);
    let (outcome, job) = store
        .take_tokens_writing(&one, &c.lease, &ordering, T0 + secs(63))
        .await
        .expect("denied");
    assert!(matches!(outcome, TakeOutcome::Wait { .. }), "{outcome:?}");
    assert!(job.is_none(), "a denial writes nothing");
    let stored = store.job(c.job.id).await.expect("read").expect("job");
    assert_ne!(
        stored.status,
        JobStatus::Ordering,
        "a denial writes nothing"
    );
}
