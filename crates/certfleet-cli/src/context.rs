//! The composition root: turns settings into a connected ACME client, loaded keys and a
//! state directory. The only place that names concrete key backends.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use certfleet_acme::{Account, AcmeClient, ClientConfig, PollPolicy};
use certfleet_batch::StateStore;
use certfleet_keys::file::FileBackend;
use certfleet_keys::{KeyBackend, KeyRef, SigningKey};
use certfleet_keys_pkcs11::{PinMemory, Pkcs11Backend};
use certfleet_keys_tpm::{DEFAULT_TCTI, TpmBackend};
use certfleet_store_postgres::{PgOptions, PgStore, is_postgres_url, redact_url};
use certfleet_store_sqlite::SqliteStore;

use crate::config::Settings;
use crate::state::StateDir;

#[derive(Debug)]
pub struct Context {
    pub settings: Settings,
    pub state: StateDir,
    backends: Vec<Arc<dyn KeyBackend>>,
}

impl Context {
    pub fn new(settings: Settings) -> Result<Context> {
        let state = StateDir::new(settings.state_dir()?);
        Ok(Context {
            backends: vec![
                Arc::new(FileBackend),
                Arc::new(Context::pkcs11_backend(&state)),
                Arc::new(Context::tpm_backend()),
            ],
            settings,
            state,
        })
    }

    /// The PKCS#11 backend (`pkcs11:` references): one module context and one session pool
    /// per token for the whole process, whichever copy of the backend opens it. PINs a
    /// token rejected are remembered in the state directory (`pin-memory/`), so cron runs
    /// with a wrong PIN file cost one login attempt in total.
    fn pkcs11_backend(state: &StateDir) -> Pkcs11Backend {
        Pkcs11Backend::new().with_pin_memory(PinMemory::new(state.root().join("pin-memory")))
    }

    /// The TPM backend (`tpm:` references); references without `tcti=` use the kernel's
    /// resource manager, `device:/dev/tpmrm0`.
    fn tpm_backend() -> TpmBackend {
        TpmBackend::new(DEFAULT_TCTI)
    }

    /// The PKCS#11 backend, for generating and listing token keys.
    pub fn pkcs11(&self) -> Pkcs11Backend {
        Context::pkcs11_backend(&self.state)
    }

    /// The TPM backend, for generating and listing TPM keys.
    pub fn tpm(&self) -> TpmBackend {
        Context::tpm_backend()
    }

    /// The same context for another CA directory (a renewal goes to the CA a certificate
    /// came from).
    pub fn for_directory(&self, directory: &str) -> Context {
        let mut settings = self.settings.clone();
        settings.directory = directory.to_owned();
        Context {
            settings,
            state: self.state.clone(),
            backends: self.backends.clone(),
        }
    }

    pub fn directory(&self) -> &str {
        &self.settings.directory
    }

    /// Every key backend, for code that loads keys by reference itself (the batch run).
    pub fn key_backends(&self) -> Vec<Arc<dyn KeyBackend>> {
        self.backends.clone()
    }

    /// How new certificate keys are made: file keys (PEM, 0600), generated off the async
    /// workers.
    pub fn key_maker(&self) -> Arc<dyn certfleet_issue::KeyMaker> {
        Arc::new(FileKeyMaker)
    }

    /// Parses a key reference given on the command line.
    pub fn parse_key_ref(&self, value: &str) -> Result<KeyRef> {
        Ok(value.parse::<KeyRef>()?)
    }

    /// Loads the key a reference names, through the backend of its scheme.
    pub async fn load_key(&self, key_ref: &KeyRef) -> Result<Arc<dyn SigningKey>> {
        Ok(certfleet_keys::load_key(&self.backends, key_ref).await?)
    }

    /// Loads a key whose reference is stored for later runs (the account key, a
    /// certificate key kept for renewals): a literal PIN (`pin-value=`) is refused before
    /// anything is loaded or ordered, since files only ever hold the reference redacted.
    pub async fn load_stored_key_str(
        &self,
        value: &str,
        role: &str,
    ) -> Result<Arc<dyn SigningKey>> {
        let key_ref = self.parse_key_ref(value)?;
        self.load_stored_key(&key_ref, role).await
    }

    /// [`Self::load_stored_key_str`] for a reference parsed at the edge.
    pub async fn load_stored_key(
        &self,
        key_ref: &KeyRef,
        role: &str,
    ) -> Result<Arc<dyn SigningKey>> {
        if key_ref.has_pin_value() {
            anyhow::bail!(
                "{key_ref}: the {role} reference is stored for later runs, and certfleet never \
                 stores a PIN: give it with pin-source=file:/path/to/pin or \
                 pin-source=env:VARIABLE instead of pin-value="
            );
        }
        self.load_key(key_ref).await
    }

    pub async fn load_key_str(&self, value: &str) -> Result<Arc<dyn SigningKey>> {
        let key_ref = self.parse_key_ref(value)?;
        self.load_key(&key_ref).await
    }

    /// Connects to the CA's directory (bounded retries).
    pub async fn client(&self) -> Result<AcmeClient> {
        let mut extra_roots_pem = Vec::new();
        for path in &self.settings.ca_roots {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading --ca-root {}", path.display()))?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                anyhow::bail!(
                    "--ca-root {}: no PEM certificate in the file (expected -----BEGIN CERTIFICATE-----)",
                    path.display()
                );
            }
            extra_roots_pem.push(pem);
        }
        let net = &self.settings.network;
        let config = ClientConfig {
            extra_roots_pem,
            only_extra_roots: self.settings.ca_roots_only,
            allow_http: self.settings.insecure_http_directory,
            timeout: net.timeout(),
            // `connect_retries` counts retries after the first attempt.
            connect_retries: net.connect_attempts.max(1) - 1,
            ..ClientConfig::default()
        };
        let client = AcmeClient::connect(self.directory(), config)
            .await
            .with_context(|| format!("cannot use the ACME directory {}", self.directory()))?;
        Ok(client)
    }

    /// The registered account for the configured directory, ready to use.
    pub async fn account(&self) -> Result<(AcmeClient, Account)> {
        let record = self.state.require_account(self.directory())?;
        let key = self
            .load_key(&record.key_ref)
            .await
            .with_context(|| format!("loading the account key {}", record.key_ref))?;
        let client = self.client().await?;
        let account = client.account_from_parts(key, record.url.clone());
        Ok((client, account))
    }

    /// The batch state store URL: the flag (or `CERTFLEET_BATCH_STORE`), else `[batch]
    /// store`; `None` = the SQLite file in the state directory.
    pub fn store_url(&self, flag: Option<&str>) -> Option<String> {
        flag.map(str::to_owned)
            .or_else(|| self.settings.batch.store.as_ref().map(|s| s.0.clone()))
            .filter(|s| !s.trim().is_empty())
    }

    /// Opens the PostgreSQL store at `url` (bounded connection retries).
    pub async fn open_postgres(&self, url: &str) -> Result<PgStore> {
        // libpq's variables, read here at the edge (the store crate reads no environment).
        let options = PgOptions {
            default_user: std::env::var("PGUSER").ok().filter(|u| !u.is_empty()),
            default_password: std::env::var("PGPASSWORD").ok().filter(|p| !p.is_empty()),
            password_file: self.settings.batch.store_password_file.clone(),
            ..PgOptions::default()
        };
        Ok(PgStore::open(url, &options).await?)
    }

    /// Opens the batch state store: PostgreSQL for a `postgres://` URL, else SQLite in the
    /// state directory (the default). The only place that picks a store backend.
    pub async fn open_store(&self, flag: Option<&str>) -> Result<Arc<dyn StateStore>> {
        match self.store_url(flag) {
            Some(url) if is_postgres_url(&url) => Ok(Arc::new(self.open_postgres(&url).await?)),
            Some(url) => anyhow::bail!(
                "--store {}: not a PostgreSQL URL (expected postgres://user@host:port/db; leave \
                 it unset for the SQLite store in the state directory)",
                redact_url(&url)
            ),
            None => Ok(Arc::new(SqliteStore::open(self.state.root()).await?)),
        }
    }

    pub fn poll_policy(&self) -> PollPolicy {
        let net = &self.settings.network;
        PollPolicy {
            initial: Duration::from_millis(net.poll_initial_millis.max(50)),
            timeout: Duration::from_secs(net.poll_timeout_secs.max(1)),
            max_interval: Duration::from_secs(net.poll_max_interval_secs.max(1)),
            ..PollPolicy::default()
        }
    }
}

/// New certificate keys as PEM files.
#[derive(Debug)]
struct FileKeyMaker;

#[async_trait::async_trait]
impl certfleet_issue::KeyMaker for FileKeyMaker {
    async fn generate(
        &self,
        alg: certfleet_keys::KeyAlgorithm,
        path: &std::path::Path,
    ) -> Result<Arc<dyn SigningKey>, certfleet_keys::KeyError> {
        let path = path.to_owned();
        let key = tokio::task::spawn_blocking(move || {
            certfleet_keys::file::FileKey::generate(alg, &path)
        })
        .await
        .map_err(|e| certfleet_keys::KeyError::Io {
            path: std::path::PathBuf::new(),
            source: std::io::Error::other(format!("key generation task failed: {e}")),
        })??;
        Ok(Arc::new(key))
    }
}

/// This host's name, for run holders and leases: the kernel's, else `$HOSTNAME`.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned())
}
