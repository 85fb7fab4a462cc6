//! Errors of the PostgreSQL store, carried inside [`StoreError::Database`] so callers see
//! one error type for every backend. None of them contains a password.

use std::path::PathBuf;

use certfleet_store::StoreError;

/// Why the PostgreSQL store could not be opened or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    #[error("invalid PostgreSQL store URL {url}: {detail}")]
    Url { url: String, detail: String },

    /// TLS to the server could not be set up or the server was not trusted.
    #[error("TLS to PostgreSQL: {0}")]
    Tls(String),

    #[error("cannot read the PostgreSQL password file {}: {source}", path.display())]
    PasswordFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "cannot reach PostgreSQL at {address} after {attempts} attempts over {waited_ms} ms: \
         {detail}"
    )]
    Unreachable {
        address: String,
        attempts: u32,
        waited_ms: u128,
        detail: String,
    },

    #[error(
        "PostgreSQL at {address} refused user {user:?}: {detail} (check the password in the \
         URL, PGPASSWORD or [batch] store_password_file)"
    )]
    Auth {
        address: String,
        user: String,
        detail: String,
    },

    #[error("PostgreSQL at {address}: {detail}")]
    Server { address: String, detail: String },

    #[error("{0}")]
    Driver(#[from] tokio_postgres::Error),

    #[error("no database connection: {0}")]
    Pool(String),
}

pub(crate) fn db(location: &str, e: impl Into<PgError>) -> StoreError {
    StoreError::Database {
        location: location.to_owned(),
        source: Box::new(e.into()),
    }
}

pub(crate) fn corrupt(location: &str, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        location: location.to_owned(),
        detail: detail.into(),
    }
}

impl From<deadpool_postgres::PoolError> for PgError {
    fn from(e: deadpool_postgres::PoolError) -> PgError {
        match e {
            deadpool_postgres::PoolError::Backend(e) => PgError::Driver(e),
            other => PgError::Pool(other.to_string()),
        }
    }
}
