//! HTTP-01 challenge solvers (RFC 8555 §8.3).
//!
//! The CA fetches `http://<domain>/.well-known/acme-challenge/<token>` and expects the key
//! authorization as the body. Two ways to serve it:
//! - [`StandaloneServer`]: certfleet listens itself (`--http-listen`, default `[::]:80`);
//! - [`Webroot`]: certfleet writes files into a directory an existing web server serves
//!   (`--webroot DIR`) and removes them afterwards.
//!
//! Both implement [`Http01Solver`], which takes batches so many orders can share one server.

mod on_demand;
mod standalone;
mod webroot;

use std::fmt;
use std::path::PathBuf;

use async_trait::async_trait;

pub use on_demand::OnDemandServer;
pub use standalone::{ServerLimits, StandaloneServer};
pub use webroot::Webroot;

/// Path prefix the CA requests (RFC 8555 §8.3).
pub const CHALLENGE_PATH_PREFIX: &str = "/.well-known/acme-challenge/";

/// One token to serve and the body to answer with.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Http01Response {
    pub token: String,
    pub key_authorization: String,
}

impl fmt::Debug for Http01Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key authorization is public once served, but there is no reason to log it.
        f.debug_struct("Http01Response")
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

/// Why a solver could not serve or remove a response.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Http01Error {
    /// Tokens are base64url (RFC 8555 §8.1); anything else could escape the directory.
    #[error("invalid http-01 token {token:?}: expected base64url characters only")]
    InvalidToken { token: String },
    #[error(
        "cannot listen on {addr} for http-01: {source} (is another web server on that port? use --webroot, or run with the privilege to bind it)"
    )]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("webroot {path}: {source}")]
    Webroot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Makes key authorizations available at their well-known URLs.
#[async_trait]
pub trait Http01Solver: Send + Sync + fmt::Debug {
    /// Short description for logs (`standalone [::]:80`, `webroot /var/www`).
    fn describe(&self) -> String;

    async fn present(&self, responses: &[Http01Response]) -> Result<(), Http01Error>;

    /// Removes these tokens; a token already gone is not an error.
    async fn cleanup(&self, responses: &[Http01Response]) -> Result<(), Http01Error>;
}

/// Checks a token is non-empty base64url, so it is safe as a file name and URL segment.
pub fn validate_token(token: &str) -> Result<(), Http01Error> {
    let ok = !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Http01Error::InvalidToken {
            token: token.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests;
