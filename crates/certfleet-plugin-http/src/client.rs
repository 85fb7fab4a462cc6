//! A blocking HTTP client for provider APIs: one ureq agent (rustls on ring; plain HTTP for
//! loopback tests), per-request timeout, bounded retries on 429/5xx and transport failures,
//! counters for the plugin's `metrics`, and nothing of a credential in any message.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use certfleet_plugin_abi::{ErrorKind, Logger, PluginError};
use serde::de::DeserializeOwned;

use crate::{RetryPolicy, Secret, parse_retry_after, redact};

/// Largest answer body read; provider answers for these calls are far smaller.
const MAX_BODY: u64 = 8 * 1024 * 1024;

/// How a request is authenticated. Called for every attempt (a SigV4 signature carries the
/// time), after the request's own headers are set.
pub trait Auth: Send + Sync {
    /// Headers to add: `method`, the full `url`, the request's `headers` and `body` as sent.
    fn headers(
        &self,
        method: &str,
        url: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<Vec<(String, String)>, PluginError>;

    /// The credentials to blank out of any provider text quoted in an error.
    fn secrets(&self) -> Vec<&Secret>;
}

/// No authentication (for tests and public endpoints).
#[derive(Debug)]
pub struct NoAuth;

impl Auth for NoAuth {
    fn headers(
        &self,
        _: &str,
        _: &str,
        _: &[(String, String)],
        _: &[u8],
    ) -> Result<Vec<(String, String)>, PluginError> {
        Ok(Vec::new())
    }

    fn secrets(&self) -> Vec<&Secret> {
        Vec::new()
    }
}

/// One API request: method, path (with query) below the client's base URL, headers, body.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: &'static str,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

impl Request {
    pub fn new(method: &'static str, path: impl Into<String>) -> Request {
        Request {
            method,
            path: path.into(),
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn get(path: impl Into<String>) -> Request {
        Request::new("GET", path)
    }

    /// `method` with a JSON body.
    pub fn json(
        method: &'static str,
        path: impl Into<String>,
        body: &serde_json::Value,
    ) -> Request {
        Request::new(method, path).body("application/json", body.to_string().into_bytes())
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Request {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    pub fn body(self, content_type: &str, bytes: Vec<u8>) -> Request {
        let mut r = self.header("content-type", content_type);
        r.body = Some(bytes);
        r
    }
}

/// An answer: the status after the last attempt and what the retries cost.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
    /// Attempts made (1 when the first answer was final).
    pub attempts: u32,
    pub elapsed: Duration,
    pub retry_after: Option<Duration>,
}

impl Response {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// ` (after N attempts in Ts)` when retries happened, else empty: for error messages.
    pub fn after(&self) -> String {
        if self.attempts > 1 {
            format!(
                " (after {} attempts in {:.1}s)",
                self.attempts,
                self.elapsed.as_secs_f64()
            )
        } else {
            String::new()
        }
    }

    /// The kind of error a non-success status means: 401/403 auth, 404 not found, else
    /// provider.
    pub fn error_kind(&self) -> ErrorKind {
        match self.status {
            401 | 403 => ErrorKind::Auth,
            404 => ErrorKind::NotFound,
            _ => ErrorKind::Provider,
        }
    }
}

/// Counters since the client was made, for the plugin's `metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
}

impl Counters {
    /// The plugin's `metrics`: `http_requests`, `http_retries` and the provider's own
    /// counters (`change_requests`, …).
    pub fn metrics(&self, own: &[(&str, &AtomicU64)]) -> std::collections::BTreeMap<String, u64> {
        let load = |c: &AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        [
            ("http_requests", &self.requests),
            ("http_retries", &self.retries),
        ]
        .iter()
        .chain(own)
        .map(|(name, c)| ((*name).to_owned(), load(c)))
        .collect()
    }
}

/// A blocking client for one API base URL.
pub struct ApiClient {
    agent: ureq::Agent,
    base: String,
    policy: RetryPolicy,
    log: Logger,
    pub counters: Counters,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    /// A client for `base` (`https://…`, or `http://` for tests; no trailing slash needed).
    /// `setting` names the setting `base` came from, for the error. `timeout` bounds each
    /// attempt (connect, send, answer).
    pub fn new(
        setting: &str,
        base: &str,
        timeout: Duration,
        policy: RetryPolicy,
        log: Logger,
    ) -> Result<ApiClient, PluginError> {
        let scheme_ok = base.starts_with("https://") || base.starts_with("http://");
        let rest = base.split_once("://").map_or("", |(_, r)| r);
        if !scheme_ok || rest.is_empty() || rest.starts_with('/') || base.contains(['?', '#', ' '])
        {
            return Err(PluginError::config(format!(
                "{setting} = {base:?}: expected an http(s) URL such as https://api.example.com"
            )));
        }
        let host = rest.split(['/', ':']).next().unwrap_or("");
        let loopback = matches!(host, "127.0.0.1" | "localhost") || rest.starts_with("[::1]");
        if base.starts_with("http://") && !loopback {
            // Allowed (a PowerDNS API on a private network), but worth a line in the log.
            log.warn(&format!(
                "{setting} = {base:?} is plain HTTP: the API credential crosses the network unencrypted"
            ));
        }
        if policy.max_attempts == 0 {
            return Err(PluginError::config("max_attempts: must be at least 1"));
        }
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            // APIs do not redirect these calls; following one could send a credential elsewhere.
            .max_redirects(0)
            .user_agent(concat!("certfleet-dns-plugin/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(ApiClient {
            agent: config.new_agent(),
            base: base.trim_end_matches('/').to_owned(),
            policy,
            log,
            counters: Counters::default(),
        })
    }

    /// The base URL (never holds a credential).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `METHOD URL` of `req`, for messages.
    pub fn describe(&self, req: &Request) -> String {
        format!("{} {}{}", req.method, self.base, req.path)
    }

    /// Sends `req`, retrying while `retryable` says so (see [`ApiClient::default_retryable`])
    /// or the connection fails, within the retry policy. Returns the last answer, whatever
    /// its status; `Err` only when no answer came (kind `network`).
    pub fn send(
        &self,
        req: &Request,
        auth: &dyn Auth,
        retryable: &dyn Fn(&Response) -> bool,
    ) -> Result<Response, PluginError> {
        let started = Instant::now();
        let what = self.describe(req);
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            let outcome = self.once(req, auth);
            let (retry_after, reason) = match outcome {
                Ok(mut resp) => {
                    resp.attempts = attempt;
                    resp.elapsed = started.elapsed();
                    if !retryable(&resp) {
                        return Ok(resp);
                    }
                    let reason = format!("HTTP {}", resp.status);
                    if attempt >= self.policy.max_attempts {
                        return Ok(resp);
                    }
                    let ra = resp.retry_after;
                    let delay = self.policy.delay(attempt, ra);
                    if started.elapsed() + delay > self.policy.max_elapsed {
                        return Ok(resp);
                    }
                    (delay, reason)
                }
                Err(e) => {
                    let delay = self.policy.delay(attempt, None);
                    if !e.retryable
                        || attempt >= self.policy.max_attempts
                        || started.elapsed() + delay > self.policy.max_elapsed
                    {
                        return Err(PluginError::new(
                            ErrorKind::Network,
                            format!(
                                "{what}: {} (after {attempt} attempt{} in {:.1}s)",
                                e.message,
                                if attempt == 1 { "" } else { "s" },
                                started.elapsed().as_secs_f64()
                            ),
                        ));
                    }
                    (delay, e.message)
                }
            };
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            self.log.warn(&format!(
                "{what}: {reason}; retry {attempt} of {} in {:.1}s",
                self.policy.max_attempts - 1,
                retry_after.as_secs_f64()
            ));
            std::thread::sleep(retry_after);
        }
    }

    /// The usual retry rule: 429 and 5xx.
    pub fn default_retryable(resp: &Response) -> bool {
        resp.status == 429 || resp.status >= 500
    }

    fn once(&self, req: &Request, auth: &dyn Auth) -> Result<Response, TransportError> {
        let url = format!("{}{}", self.base, req.path);
        let body = req.body.as_deref().unwrap_or_default();
        let extra = auth
            .headers(req.method, &url, &req.headers, body)
            .map_err(|e| TransportError {
                message: e.message,
                retryable: false,
            })?;
        let mut builder = ureq::http::Request::builder().method(req.method).uri(&url);
        for (k, v) in req.headers.iter().chain(extra.iter()) {
            builder = builder.header(k.as_str(), v.as_str());
        }
        let result = match &req.body {
            Some(b) => builder
                .body(b.clone())
                .map_err(TransportError::request)
                .and_then(|r| self.agent.run(r).map_err(TransportError::from)),
            None => builder
                .body(ureq::SendBody::none())
                .map_err(TransportError::request)
                .and_then(|r| self.agent.run(r).map_err(TransportError::from)),
        };
        let mut resp = result?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .map_err(TransportError::from)?;
        Ok(Response {
            status,
            body: redact(&body, &auth.secrets()),
            attempts: 1,
            elapsed: Duration::ZERO,
            retry_after,
        })
    }
}

/// No answer: why, and whether another attempt may help.
struct TransportError {
    message: String,
    retryable: bool,
}

impl TransportError {
    fn request(e: ureq::http::Error) -> TransportError {
        TransportError {
            message: format!("cannot build the request: {e}"),
            retryable: false,
        }
    }
}

impl From<ureq::Error> for TransportError {
    fn from(e: ureq::Error) -> TransportError {
        let retryable = matches!(
            e,
            ureq::Error::Io(_)
                | ureq::Error::Timeout(_)
                | ureq::Error::HostNotFound
                | ureq::Error::ConnectionFailed
                | ureq::Error::Protocol(_)
        );
        TransportError {
            message: e.to_string(),
            retryable,
        }
    }
}

/// Parses an answer body as `T`; a body that does not fit is a `provider` error naming the
/// request and quoting the start of the body.
pub fn parse_json<T: DeserializeOwned>(what: &str, resp: &Response) -> Result<T, PluginError> {
    serde_json::from_str(&resp.body).map_err(|e| {
        PluginError::new(
            ErrorKind::Provider,
            format!(
                "{what}: malformed answer (HTTP {}): {e}; body: {}",
                resp.status,
                snippet(&resp.body, 200)
            ),
        )
    })
}

/// At most `max` characters of `text`, whitespace runs collapsed, `…` when cut.
pub fn snippet(text: &str, max: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        if flat.is_empty() {
            "(empty)".to_owned()
        } else {
            flat
        }
    } else {
        let mut s: String = flat.chars().take(max).collect();
        s.push('…');
        s
    }
}
