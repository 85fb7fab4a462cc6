//! What a fleet shares through a server-backed store besides job state: the certificate
//! bundle of each issued job (so decisions and deployments never depend on files of the
//! node that issued it), the sealed private key of a job whose key was generated, and where
//! each bundle was deployed.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::JobId;

/// A certificate bundle as stored at issuance: chain, metadata, key reference and — for a
/// generated key — the key sealed with the fleet's key-encryption key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBundle {
    pub job: JobId,
    /// Serial number, lowercase hex.
    pub serial: String,
    pub not_after: OffsetDateTime,
    /// The leaf certificate (PEM).
    pub cert_pem: String,
    /// The issuer chain without the leaf (PEM).
    pub chain_pem: String,
    /// The certificate's `meta.json` as written into a bundle directory.
    pub meta_json: String,
    /// The certificate key: a token reference shared by reference, or the reference the
    /// issuing node used for a generated key (then [`StoredBundle::sealed_key`] is set).
    pub key_ref: String,
    /// A generated private key, sealed (never stored in the clear).
    pub sealed_key: Option<Vec<u8>>,
    /// The node that issued it.
    pub node: String,
    pub stored_at: OffsetDateTime,
}

impl std::fmt::Debug for StoredBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredBundle")
            .field("job", &self.job)
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .field("key_ref", &self.key_ref)
            .field("sealed_key", &self.sealed_key.as_ref().map(|_| "***"))
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// Where a host materialised a bundle (`certfleet batch deploy`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub job: JobId,
    /// The host that deployed it (as the CLI names it).
    pub host: String,
    /// The certificate directory it wrote.
    pub dir: String,
    pub serial: String,
    pub at: OffsetDateTime,
}
