//! A private cluster per test (started by the test, stopped when it ends).

use certfleet_store_postgres::{PgOptions, PgStore};
use certfleet_testenv::postgres::{Postgres, require_postgres};

pub struct Cluster {
    pub pg: Postgres,
    next: std::sync::atomic::AtomicUsize,
}

impl Cluster {
    /// `None` (test skipped with a message) when PostgreSQL is missing outside CI.
    pub async fn start() -> Option<Cluster> {
        if !require_postgres() {
            return None;
        }
        let pg = tokio::task::spawn_blocking(Postgres::start)
            .await
            .expect("join")
            .expect("start PostgreSQL");
        Some(Cluster { pg, next: 0.into() })
    }

    /// A fresh, empty database; returns its URL.
    pub fn fresh_db(&self) -> String {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("t{n}");
        self.pg.create_database(&name).expect("create database");
        self.pg.url(&name)
    }

    pub async fn open(&self, url: &str) -> PgStore {
        PgStore::open(url, &PgOptions::default())
            .await
            .expect("open the store")
    }
}

/// The database name in a URL from [`Cluster::fresh_db`] (for `psql`).
#[allow(dead_code, reason = "not every test file asks for it")]
pub fn db_name(url: &str) -> &str {
    url.rsplit('/')
        .next()
        .and_then(|s| s.split('?').next())
        .expect("a database name in the URL")
}
