//! HTTP plumbing: one place that sends requests, counts them, harvests nonces and turns
//! error responses into typed problems.

use std::sync::atomic::{AtomicU64, Ordering};

use reqwest::header::{CONTENT_TYPE, HeaderMap, LOCATION};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use tracing::{debug, trace};

use crate::escape::escaped;
use crate::nonce::{NoncePool, replay_nonce};
use crate::{AcmeError, Problem, ProblemKind, RetryAfter};

/// Largest JSON response read (directory, account, order, authorization, problem, ARI).
/// Real ones are a few KiB; an order for 100 names is ~20 KiB.
pub const MAX_JSON_BYTES: usize = 1 << 20;
/// Largest certificate chain read. Real chains are 2–10 KiB.
pub const MAX_CHAIN_BYTES: usize = 1 << 20;

/// How big a response body may get, by what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyLimit {
    Json,
    Chain,
}

impl BodyLimit {
    fn bytes(self) -> usize {
        match self {
            BodyLimit::Json => MAX_JSON_BYTES,
            BodyLimit::Chain => MAX_CHAIN_BYTES,
        }
    }

    fn what(self) -> &'static str {
        match self {
            BodyLimit::Json => "JSON",
            BodyLimit::Chain => "certificate chain",
        }
    }
}

/// Request and signature counters of a client and all its clones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestStats {
    /// Every HTTP request sent (directory, newNonce, POSTs, ARI GETs, retries).
    pub http_requests: u64,
    /// `HEAD newNonce` requests: the pool was empty.
    pub new_nonce_requests: u64,
    /// Calls to [`SigningKey::sign`](certfleet_keys::SigningKey::sign) (EAB MACs excluded).
    pub signatures: u64,
    /// Requests resent after a `badNonce` error.
    pub bad_nonce_retries: u64,
}

impl RequestStats {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &RequestStats) -> RequestStats {
        RequestStats {
            http_requests: self.http_requests.saturating_sub(earlier.http_requests),
            new_nonce_requests: self
                .new_nonce_requests
                .saturating_sub(earlier.new_nonce_requests),
            signatures: self.signatures.saturating_sub(earlier.signatures),
            bad_nonce_retries: self
                .bad_nonce_retries
                .saturating_sub(earlier.bad_nonce_retries),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) http_requests: AtomicU64,
    pub(crate) new_nonce_requests: AtomicU64,
    pub(crate) signatures: AtomicU64,
    pub(crate) bad_nonce_retries: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> RequestStats {
        RequestStats {
            http_requests: self.http_requests.load(Ordering::Relaxed),
            new_nonce_requests: self.new_nonce_requests.load(Ordering::Relaxed),
            signatures: self.signatures.load(Ordering::Relaxed),
            bad_nonce_retries: self.bad_nonce_retries.load(Ordering::Relaxed),
        }
    }
}

/// A fully read response.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) url: String,
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Response {
    pub(crate) fn json<T: DeserializeOwned>(&self) -> Result<T, AcmeError> {
        serde_json::from_slice(&self.body).map_err(|cause| AcmeError::Json {
            url: self.url.clone(),
            cause,
        })
    }

    /// The `Location` header, resolved against the request URL.
    pub(crate) fn location(&self) -> Result<String, AcmeError> {
        let raw = self
            .headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| AcmeError::MissingHeader {
                url: self.url.clone(),
                header: "Location",
            })?;
        Ok(resolve(&self.url, raw))
    }

    pub(crate) fn retry_after(&self) -> Option<RetryAfter> {
        RetryAfter::from_headers(&self.headers)
    }

    /// The error this (non-2xx) response stands for: its problem document, or for a body
    /// that is not one, an `about:blank` problem with the status and a body excerpt.
    pub(crate) fn into_error(self) -> AcmeError {
        let retry_after = self.retry_after();
        let mut problem = match Problem::from_json(&self.body) {
            Ok(p) => p,
            Err(_) => {
                // Not a problem document (a proxy's 502 page, an empty 404): keep the
                // status reason and a body excerpt. Display adds "(HTTP <status>)".
                let reason = self.status.canonical_reason().unwrap_or("error");
                let excerpt: String = String::from_utf8_lossy(&self.body)
                    .chars()
                    .take(200)
                    .collect();
                let excerpt = escaped(excerpt.trim());
                let excerpt = excerpt.as_str();
                let detail = if excerpt.is_empty() {
                    reason.to_owned()
                } else {
                    format!("{reason}: {excerpt}")
                };
                Problem::new(ProblemKind::Other("about:blank".to_owned()), detail)
            }
        };
        problem.status.get_or_insert(self.status.as_u16());
        AcmeError::Api {
            url: self.url,
            problem,
            retry_after,
        }
    }
}

/// Resolves a possibly relative reference (Location, Link) against `base`.
pub(crate) fn resolve(base: &str, reference: &str) -> String {
    match url::Url::parse(base).and_then(|b| b.join(reference)) {
        Ok(u) => u.to_string(),
        Err(_) => reference.to_owned(),
    }
}

/// The HTTP client, counters and nonce pool shared by a client and its clones.
#[derive(Debug)]
pub(crate) struct Transport {
    pub(crate) http: reqwest::Client,
    pub(crate) counters: Counters,
    pub(crate) nonces: NoncePool,
    /// Plain `http://` URLs allowed (`--insecure-http-directory`, test CAs only).
    pub(crate) allow_http: bool,
}

impl Transport {
    /// Refuses a plain `http://` URL unless allowed: the directory's own, and every URL
    /// the directory or a response hands out (a hostile directory could point requests
    /// at `http://` endpoints).
    pub(crate) fn check_scheme(&self, url: &str) -> Result<(), AcmeError> {
        let plain = url
            .get(..7)
            .is_some_and(|s| s.eq_ignore_ascii_case("http://"));
        if plain && !self.allow_http {
            return Err(AcmeError::InsecureHttp { url: escaped(url) });
        }
        Ok(())
    }

    /// Sends `req`, reads the body (at most `limit`, while streaming: a hostile server
    /// cannot make us buffer more) and keeps any `Replay-Nonce` (unless the caller wants
    /// the nonce itself: `keep_nonce = false`). Error statuses are returned as responses,
    /// not errors; transport failures, redirects and oversized bodies are errors.
    pub(crate) async fn execute(
        &self,
        method: Method,
        url: &str,
        req: RequestBuilder,
        keep_nonce: bool,
        limit: BodyLimit,
    ) -> Result<Response, AcmeError> {
        self.check_scheme(url)?;
        Counters::bump(&self.counters.http_requests);
        debug!(%method, url, "acme request");
        let http_err = |cause| AcmeError::Http {
            url: url.to_owned(),
            cause,
        };
        let mut resp = req.send().await.map_err(http_err)?;
        let status = resp.status();
        let headers = resp.headers().clone();
        if keep_nonce && let Some(nonce) = replay_nonce(&headers) {
            self.nonces.push(nonce);
        }
        if status.is_redirection() {
            let location = headers
                .get(LOCATION)
                .map(|v| escaped(&String::from_utf8_lossy(v.as_bytes())))
                .unwrap_or_else(|| "(no Location)".to_owned());
            return Err(AcmeError::Redirect {
                url: url.to_owned(),
                status: status.as_u16(),
                location,
            });
        }
        let too_large = || AcmeError::ResponseTooLarge {
            url: url.to_owned(),
            limit: limit.bytes(),
            what: limit.what(),
        };
        if resp
            .content_length()
            .is_some_and(|n| n > limit.bytes() as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(http_err)? {
            if body.len() + chunk.len() > limit.bytes() {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        debug!(
            %method,
            url,
            status = status.as_u16(),
            content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or(""),
            bytes = body.len(),
            "acme response"
        );
        // Response bodies hold no secrets (EAB keys and private keys only ever travel in
        // requests, and requests are not logged).
        trace!(url, body = %escaped(&String::from_utf8_lossy(&body)), "acme response body");
        Ok(Response {
            url: url.to_owned(),
            status,
            headers,
            body,
        })
    }

    /// Unauthenticated GET (directory, renewalInfo).
    pub(crate) async fn get(&self, url: &str, accept: &str) -> Result<Response, AcmeError> {
        let req = self.http.get(url).header(reqwest::header::ACCEPT, accept);
        self.execute(Method::GET, url, req, true, BodyLimit::Json)
            .await
    }
}
