//! [`AcmeClient`]: the directory, the HTTP client and the nonce pool, plus the signed-POST
//! loop every account operation goes through ([RFC 8555 §6](https://www.rfc-editor.org/rfc/rfc8555#section-6)).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use certfleet_keys::SigningKey;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Certificate, Method};
use tracing::{debug, warn};

use crate::certificate::PEM_CHAIN;
use crate::http::{BodyLimit, Counters, RequestStats, Response, Transport};
use crate::jws::{self, KeyIdentity};
use crate::nonce::{DEFAULT_CAPACITY, MAX_AGE, NoncePool, replay_nonce};
use crate::{AcmeError, Directory, ProblemKind};

/// JOSE request body type (RFC 8555 §6.2).
pub(crate) const JOSE_JSON: &str = "application/jose+json";

/// How to reach the CA.
#[derive(Clone)]
pub struct ClientConfig {
    /// PEM bundles trusted in addition to the system roots (or instead of them, with
    /// `only_extra_roots`).
    pub extra_roots_pem: Vec<Vec<u8>>,
    /// Trust only `extra_roots_pem` (tests against Pebble).
    pub only_extra_roots: bool,
    /// Defaults to `certfleet/<version>`.
    pub user_agent: String,
    /// Whole-request timeout (default 30 s).
    pub timeout: Duration,
    /// Retries of the directory fetch after the first attempt, on transport errors and
    /// 5xx (default 2: three attempts, waiting `connect_backoff` then twice that).
    pub connect_retries: u32,
    /// First wait between directory attempts (default 0.5 s), doubled each time.
    pub connect_backoff: Duration,
    /// Resends after `badNonce` before giving up (default 10: each resend carries the
    /// fresh nonce of the refusal, so only a CA refusing nonces at random gets this far;
    /// at Pebble's 40 % test rate, 5 left about one request in 250 failing).
    pub max_bad_nonce_retries: u32,
    /// Accept plain `http://` URLs (default false; `--insecure-http-directory`, for local
    /// test CAs only: requests would travel unencrypted).
    pub allow_http: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            extra_roots_pem: Vec::new(),
            only_extra_roots: false,
            user_agent: concat!("certfleet/", env!("CARGO_PKG_VERSION")).to_owned(),
            timeout: Duration::from_secs(30),
            connect_retries: 2,
            connect_backoff: Duration::from_millis(500),
            max_bad_nonce_retries: 10,
            allow_http: false,
        }
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field(
                "extra_roots_pem",
                &format_args!("[{} bundle(s)]", self.extra_roots_pem.len()),
            )
            .field("only_extra_roots", &self.only_extra_roots)
            .field("user_agent", &self.user_agent)
            .field("timeout", &self.timeout)
            .field("connect_retries", &self.connect_retries)
            .field("connect_backoff", &self.connect_backoff)
            .field("max_bad_nonce_retries", &self.max_bad_nonce_retries)
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

/// A connection to one ACME server. Cheap to clone; clones share the HTTP connection
/// pool, the nonce pool and the [`RequestStats`].
#[derive(Clone, Debug)]
pub struct AcmeClient {
    inner: Arc<ClientInner>,
}

#[derive(Debug)]
struct ClientInner {
    transport: Transport,
    directory_url: String,
    directory: Directory,
    max_bad_nonce_retries: u32,
}

/// Who signs a request, and how the signer is named.
#[derive(Clone, Copy)]
pub(crate) enum Signer<'a> {
    Jwk(&'a dyn SigningKey),
    Kid(&'a dyn SigningKey, &'a str),
}

impl AcmeClient {
    /// Fetches the directory at `directory_url`, retrying transport errors and 5xx
    /// answers `config.connect_retries` times with backoff.
    pub async fn connect(
        directory_url: &str,
        config: ClientConfig,
    ) -> Result<AcmeClient, AcmeError> {
        let transport = new_transport(&config)?;
        check_directory_url(&transport, directory_url)?;
        let directory = fetch_directory(&transport, directory_url, &config).await?;
        debug!(directory_url, ?directory, "acme directory");
        Ok(AcmeClient::from_parts(
            transport,
            directory_url,
            directory,
            &config,
        ))
    }

    /// A client for a directory already known (e.g. cached), without fetching it.
    pub fn with_directory(
        directory_url: &str,
        directory: Directory,
        config: ClientConfig,
    ) -> Result<AcmeClient, AcmeError> {
        let transport = new_transport(&config)?;
        check_directory_url(&transport, directory_url)?;
        Ok(AcmeClient::from_parts(
            transport,
            directory_url,
            directory,
            &config,
        ))
    }

    fn from_parts(
        transport: Transport,
        directory_url: &str,
        directory: Directory,
        config: &ClientConfig,
    ) -> AcmeClient {
        AcmeClient {
            inner: Arc::new(ClientInner {
                transport,
                directory_url: directory_url.to_owned(),
                directory,
                max_bad_nonce_retries: config.max_bad_nonce_retries,
            }),
        }
    }

    /// The directory fetched at connect time.
    pub fn directory(&self) -> &Directory {
        &self.inner.directory
    }

    /// The URL the directory was fetched from.
    pub fn directory_url(&self) -> &str {
        &self.inner.directory_url
    }

    /// Requests and signatures so far, over this client and all its clones.
    pub fn stats(&self) -> RequestStats {
        self.inner.transport.counters.snapshot()
    }

    pub(crate) fn transport(&self) -> &Transport {
        &self.inner.transport
    }

    /// A nonce from the pool, else from `HEAD newNonce` (RFC 8555 §7.2).
    async fn nonce(&self) -> Result<String, AcmeError> {
        if let Some(nonce) = self.inner.transport.nonces.take() {
            return Ok(nonce);
        }
        let url = &self.inner.directory.new_nonce;
        let t = &self.inner.transport;
        Counters::bump(&t.counters.new_nonce_requests);
        let resp = t
            .execute(Method::HEAD, url, t.http.head(url), false, BodyLimit::Json)
            .await?;
        if !resp.status.is_success() {
            return Err(resp.into_error());
        }
        replay_nonce(&resp.headers).ok_or_else(|| AcmeError::MissingHeader {
            url: url.clone(),
            header: "Replay-Nonce",
        })
    }

    /// Signs and POSTs `payload` (empty = POST-as-GET) to `url`, resending with a fresh
    /// nonce on `badNonce` up to `max_bad_nonce_retries` times. Returns 2xx responses;
    /// everything else becomes an error.
    pub(crate) async fn post(
        &self,
        url: &str,
        signer: Signer<'_>,
        payload: &[u8],
        accept: Option<&str>,
    ) -> Result<Response, AcmeError> {
        let resp = self.post_raw(url, signer, payload, accept).await?;
        if resp.status.is_success() {
            Ok(resp)
        } else {
            Err(classify(resp.into_error()))
        }
    }

    /// [`post`](Self::post) that also returns non-2xx responses (other than `badNonce`,
    /// which is retried) for callers that interpret them.
    pub(crate) async fn post_raw(
        &self,
        url: &str,
        signer: Signer<'_>,
        payload: &[u8],
        accept: Option<&str>,
    ) -> Result<Response, AcmeError> {
        let t = &self.inner.transport;
        let max = self.inner.max_bad_nonce_retries;
        let mut bad_nonces = 0u32;
        loop {
            let nonce = self.nonce().await?;
            let (key, identity) = match signer {
                Signer::Jwk(key) => (key, KeyIdentity::Jwk),
                Signer::Kid(key, kid) => (key, KeyIdentity::Kid(kid)),
            };
            Counters::bump(&t.counters.signatures);
            let jws = jws::sign(key, identity, Some(&nonce), url, payload).await?;
            crate::wire_log::log_request(url, &jws);
            let body = serde_json::to_vec(&jws).map_err(|cause| AcmeError::Json {
                url: url.to_owned(),
                cause,
            })?;
            let mut req = t.http.post(url).header(CONTENT_TYPE, JOSE_JSON).body(body);
            if let Some(accept) = accept {
                req = req.header(ACCEPT, accept);
            }
            let limit = if accept == Some(PEM_CHAIN) {
                BodyLimit::Chain
            } else {
                BodyLimit::Json
            };
            let resp = t.execute(Method::POST, url, req, true, limit).await?;
            if resp.status.is_success() || !is_bad_nonce(&resp) {
                return Ok(resp);
            }
            if bad_nonces >= max {
                return Err(AcmeError::BadNonceExhausted {
                    url: url.to_owned(),
                    attempts: bad_nonces + 1,
                });
            }
            bad_nonces += 1;
            Counters::bump(&t.counters.bad_nonce_retries);
            debug!(
                url,
                attempt = bad_nonces,
                "badNonce, retrying with a fresh nonce"
            );
        }
    }
}

fn is_bad_nonce(resp: &Response) -> bool {
    !resp.status.is_success()
        && crate::Problem::from_json(&resp.body).is_ok_and(|p| p.kind == ProblemKind::BadNonce)
}

/// Maps problems that deserve their own message.
pub(crate) fn classify(err: AcmeError) -> AcmeError {
    match err {
        AcmeError::Api { url, problem, .. }
            if problem.kind == ProblemKind::ExternalAccountRequired =>
        {
            AcmeError::ExternalAccountRequired { url, problem }
        }
        AcmeError::Api { url, problem, .. }
            if problem.kind == ProblemKind::Unauthorized
                && problem
                    .detail
                    .as_deref()
                    .is_some_and(|d| d.to_ascii_lowercase().contains("deactivated")) =>
        {
            AcmeError::AccountDeactivated { url, problem }
        }
        other => other,
    }
}

fn new_transport(config: &ClientConfig) -> Result<Transport, AcmeError> {
    Ok(Transport {
        http: build_http_client(config)?,
        counters: Counters::default(),
        nonces: NoncePool::new(DEFAULT_CAPACITY, MAX_AGE),
        allow_http: config.allow_http,
    })
}

/// Refuses an `http://` directory unless allowed, and warns when it is.
fn check_directory_url(transport: &Transport, url: &str) -> Result<(), AcmeError> {
    transport.check_scheme(url)?;
    if url
        .get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("http://"))
    {
        warn!(
            url,
            "using a plain http:// ACME directory: requests travel unencrypted (test CAs only)"
        );
    }
    Ok(())
}

fn build_http_client(config: &ClientConfig) -> Result<reqwest::Client, AcmeError> {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        return Err(AcmeError::Config {
            detail: "no rustls crypto provider is installed; call \
                     rustls::crypto::ring::default_provider().install_default() at startup"
                .to_owned(),
        });
    }
    let mut roots = Vec::new();
    for (i, pem) in config.extra_roots_pem.iter().enumerate() {
        let certs = Certificate::from_pem_bundle(pem).map_err(|e| AcmeError::Config {
            detail: format!("extra root bundle #{}: not PEM certificates: {e}", i + 1),
        })?;
        if certs.is_empty() {
            return Err(AcmeError::Config {
                detail: format!("extra root bundle #{} contains no certificate", i + 1),
            });
        }
        roots.extend(certs);
    }
    // No redirects: RFC 8555 has none, and a signed request must reach the URL it was
    // signed for (a 307 to http:// would send it in clear).
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(config.user_agent.clone())
        .timeout(config.timeout)
        .connect_timeout(config.timeout.min(Duration::from_secs(10)));
    if config.only_extra_roots {
        if roots.is_empty() {
            return Err(AcmeError::Config {
                detail: "only_extra_roots is set but no extra roots were given".to_owned(),
            });
        }
        builder = builder.tls_certs_only(roots);
    } else if !roots.is_empty() {
        builder = builder.tls_certs_merge(roots);
    }
    builder.build().map_err(|e| AcmeError::Config {
        detail: format!("cannot build the HTTP client: {e}"),
    })
}

async fn fetch_directory(
    transport: &Transport,
    url: &str,
    config: &ClientConfig,
) -> Result<Directory, AcmeError> {
    let attempts = config.connect_retries.saturating_add(1);
    let mut wait = config.connect_backoff;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let err = match transport.get(url, "application/json").await {
            Ok(resp) if resp.status.is_success() => {
                return Directory::from_json(&resp.body).map_err(|cause| AcmeError::Json {
                    url: url.to_owned(),
                    cause,
                });
            }
            Ok(resp) => resp.into_error(),
            Err(e) => e,
        };
        let retryable = match &err {
            AcmeError::Http { .. } => true,
            AcmeError::Api { problem, .. } => problem.status.is_some_and(|s| s >= 500),
            _ => false,
        };
        if !retryable {
            return Err(err);
        }
        if attempt >= attempts {
            return Err(AcmeError::DirectoryUnreachable {
                url: url.to_owned(),
                attempts: attempt,
                source: Box::new(err),
            });
        }
        warn!(url, attempt, error = %err, "directory fetch failed; retrying in {wait:?}");
        tokio::time::sleep(wait).await;
        wait = wait.saturating_mul(2);
    }
}

#[cfg(test)]
mod tests;
