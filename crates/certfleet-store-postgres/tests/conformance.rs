//! The shared store conformance suite (the same one SQLite passes), each check on a fresh
//! database of a private cluster.

mod common;

#[tokio::test]
async fn conformance_suite_passes_on_postgres() {
    let Some(cluster) = common::Cluster::start().await else {
        return;
    };
    let mut opened = 0;
    certfleet_store::conformance::run_all(|| {
        opened += 1;
        let url = cluster.fresh_db();
        let cluster = &cluster;
        async move { cluster.open(&url).await }
    })
    .await;
    assert_eq!(opened, 14, "every check ran on its own store");
}
