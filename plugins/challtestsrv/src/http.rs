//! A minimal HTTP/1.1 client over a plain TCP stream: challtestsrv speaks plain HTTP on
//! loopback, and a plugin that pulled in a full HTTP stack would carry its own TLS and
//! runtime for two JSON POSTs.

use std::fmt;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use certfleet_plugin_abi::{ErrorKind, PluginError};

/// Largest response read (challtestsrv answers with a few bytes).
const MAX_RESPONSE: u64 = 64 * 1024;

/// A bearer token: never shown by `Debug` or `Display`.
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(s)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// `http://host:port` of the management API.
pub struct Endpoint {
    host: String,
    port: u16,
    timeout: Duration,
    token: Option<Secret>,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}:{}", self.host, self.port)
    }
}

impl Endpoint {
    pub fn parse(
        url: &str,
        timeout: Duration,
        token: Option<Secret>,
    ) -> Result<Endpoint, PluginError> {
        let bad = |why: &str| PluginError::config(format!("url = {url:?}: {why}"));
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("expected http://HOST:PORT (challtestsrv speaks plain HTTP)"))?;
        let authority = rest.trim_end_matches('/');
        if authority.contains('/') || authority.contains('@') {
            return Err(bad("expected http://HOST:PORT without a path"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h.trim_start_matches('[').trim_end_matches(']'),
                p.parse::<u16>().map_err(|_| bad("bad port"))?,
            ),
            None => (authority, 80),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Endpoint {
            host: host.to_owned(),
            port,
            timeout,
            token,
        })
    }

    /// Sends one request; returns the status code and body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, String), PluginError> {
        let net = |what: &str, e: std::io::Error| {
            PluginError::new(
                ErrorKind::Network,
                format!("{method} {self}{path}: {what}: {e}"),
            )
        };
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| net("cannot resolve", e))?
            .next()
            .ok_or_else(|| net("cannot resolve", std::io::ErrorKind::NotFound.into()))?;
        let mut stream = TcpStream::connect_timeout(&addr, self.timeout)
            .map_err(|e| net("cannot connect", e))?;
        stream
            .set_read_timeout(Some(self.timeout))
            .and_then(|()| stream.set_write_timeout(Some(self.timeout)))
            .map_err(|e| net("socket", e))?;
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}:{}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            self.host,
            self.port,
            payload.len()
        );
        if let Some(Secret(t)) = &self.token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        head.push_str("\r\n");
        stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(payload.as_bytes()))
            .map_err(|e| net("cannot send", e))?;
        let mut response = Vec::new();
        stream
            .take(MAX_RESPONSE)
            .read_to_end(&mut response)
            .map_err(|e| net("cannot read the answer", e))?;
        let text = String::from_utf8_lossy(&response);
        let status = text
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| {
                PluginError::new(
                    ErrorKind::Provider,
                    format!("{method} {self}{path}: not an HTTP answer"),
                )
            })?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    }
}
