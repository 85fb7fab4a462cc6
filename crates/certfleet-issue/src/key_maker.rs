//! The seam through which a new certificate key is made (the composition root picks the
//! backend; the order flow only asks for a key of an algorithm at a path).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use certfleet_keys::{KeyAlgorithm, KeyError, SigningKey};

/// Makes new certificate keys (the composition root picks the backend).
#[async_trait]
pub trait KeyMaker: Send + Sync + fmt::Debug {
    /// Generates a key of `alg` at `path` (mode 0600, written atomically; `path` must not
    /// exist).
    async fn generate(
        &self,
        alg: KeyAlgorithm,
        path: &Path,
    ) -> Result<Arc<dyn SigningKey>, KeyError>;
}
