//! A real PowerDNS Authoritative server (`pdns_server`, Debian's `pdns-server` with
//! `pdns-backend-sqlite3`) on loopback: its own configuration directory and SQLite database
//! (made from the schema the package ships), DNS and the HTTP API on free ports picked at run
//! time, zones created through the API, polled until it serves them, killed on drop.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::server_process::{ServerProcess, StartAttempts};
use crate::{install_crypto_provider, ports};

/// Readiness: at most this long.
const READY_DEADLINE: Duration = Duration::from_secs(20);
/// The API key of every test server (a test secret, asserted absent from certfleet's output).
pub const PDNS_API_KEY: &str = "pdns-test-api-key-9c3e71b2";

/// Where Debian puts the SQLite schema (the `/usr/share/doc` copy may be excluded on slim
/// images, so it is the fallback).
const SCHEMAS: &[&str] = &[
    "/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql",
    "/usr/share/doc/pdns-backend-sqlite3/schema.sqlite3.sql",
];

/// `pdns_server`: on PATH, else where Debian installs it (`/usr/sbin` is not on every PATH).
pub fn pdns_binary() -> Option<PathBuf> {
    if crate::tool_exists("pdns_server") {
        return Some(PathBuf::from("pdns_server"));
    }
    let p = Path::new("/usr/sbin/pdns_server");
    p.is_file().then(|| p.to_path_buf())
}

/// The SQLite schema Debian ships for the gsqlite3 backend.
pub fn sqlite_schema() -> Result<String> {
    let schema = SCHEMAS
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .context("the pdns-backend-sqlite3 schema is not installed")?;
    fs::read_to_string(schema).with_context(|| format!("reading {}", schema.display()))
}

/// Whether pdns_server and its SQLite backend are installed; `false` means skip (never under
/// CI, where a missing server panics with the install line).
pub fn require_pdns() -> bool {
    let present = pdns_binary().is_some()
        && SCHEMAS.iter().any(|s| Path::new(s).is_file())
        && crate::tool_exists("dig");
    if present {
        return true;
    }
    let line = "apt-get install -y pdns-server pdns-backend-sqlite3 bind9-dnsutils";
    if crate::in_ci() {
        panic!(
            "pdns_server, its sqlite3 backend or dig is missing (CI is set, so this test may not skip); install with: {line}"
        );
    }
    eprintln!("SKIPPED: pdns_server, its sqlite3 backend or dig is missing; install with: {line}");
    false
}

/// A running pdns_server; killed on drop.
#[derive(Debug)]
pub struct Pdns {
    dns: SocketAddr,
    api: SocketAddr,
    zones: Vec<String>,
    process: ServerProcess,
    client: reqwest::Client,
    /// Set once the server is up (launch attempts share it).
    _dir: Option<TempDir>,
}

impl Pdns {
    /// Starts pdns_server and creates `zones` (names without trailing dot), each with
    /// `NS ns1.<zone>.` and `ns1.<zone>. A 127.0.0.1`.
    pub async fn start(zones: &[&str]) -> Result<Pdns> {
        let dir = tempfile::Builder::new()
            .prefix("certfleet-pdns-")
            .tempdir()
            .context("creating a directory for pdns_server")?;
        let schema = SCHEMAS
            .iter()
            .map(Path::new)
            .find(|p| p.is_file())
            .context("the pdns-backend-sqlite3 schema is not installed")?;
        let db = dir.path().join("pdns.sqlite3");
        let sql =
            fs::read_to_string(schema).with_context(|| format!("reading {}", schema.display()))?;
        rusqlite::Connection::open(&db)
            .and_then(|c| c.execute_batch(&sql))
            .with_context(|| format!("creating {} from {}", db.display(), schema.display()))?;
        let mut attempts = StartAttempts::default();
        while attempts.another() {
            match Pdns::launch(&dir, &db).await {
                Ok(mut pdns) => {
                    for z in zones {
                        pdns.create_zone(z).await?;
                    }
                    pdns._dir = Some(dir);
                    return Ok(pdns);
                }
                Err(e) => attempts.failed(e),
            }
        }
        Err(attempts.into_error("pdns_server"))
    }

    async fn launch(dir: &TempDir, db: &Path) -> Result<Pdns> {
        let root = dir.path();
        let dns = SocketAddr::from(([127, 0, 0, 1], ports::free_tcp_udp_port()?));
        let api = SocketAddr::from(([127, 0, 0, 1], ports::free_tcp_port()?));
        // No caches, so an API change is served at once; no security polling (it would query
        // the internet); everything on loopback.
        let conf = format!(
            "launch=gsqlite3\ngsqlite3-database={db}\nlocal-address=127.0.0.1\nlocal-port={dp}\n\
             webserver=yes\nwebserver-address=127.0.0.1\nwebserver-port={ap}\n\
             webserver-allow-from=127.0.0.0/8\napi=yes\napi-key={PDNS_API_KEY}\n\
             guardian=no\ndaemon=no\ndisable-syslog=yes\nsocket-dir={dir}\n\
             security-poll-suffix=\ncache-ttl=0\nquery-cache-ttl=0\nnegquery-cache-ttl=0\n\
             default-soa-content=ns1.@ hostmaster.@ 0 60 60 600 1\nloglevel=4\n",
            db = db.display(),
            dp = dns.port(),
            ap = api.port(),
            dir = root.display(),
        );
        fs::write(root.join("pdns.conf"), conf).context("writing pdns.conf")?;
        let bin = pdns_binary().context("pdns_server is not installed")?;
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config-dir={}", root.display()));
        let process = ServerProcess::spawn("pdns_server", cmd, &root.join("pdns.log"))?;
        install_crypto_provider();
        let pdns = Pdns {
            dns,
            api,
            zones: Vec::new(),
            process,
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(10))
                .build()
                .context("building an HTTP client")?,
            _dir: None,
        };
        let what = format!("answer on its API at {}", pdns.api);
        let p = &pdns;
        p.process
            .wait_ready(&what, READY_DEADLINE, || async move {
                p.api("GET", "", None).await.is_ok()
            })
            .await?;
        Ok(pdns)
    }

    /// One API call below `/api/v1/servers/localhost`; error unless 2xx.
    pub async fn api(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let url = format!("{}/api/v1/servers/localhost{path}", self.api_url());
        let mut req = self
            .client
            .request(method.parse().context("method")?, &url)
            .header("X-API-Key", PDNS_API_KEY);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let text = crate::send_checked(req, method, &url).await?;
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn create_zone(&mut self, zone: &str) -> Result<()> {
        self.api(
            "POST",
            "/zones",
            Some(json!({"name": format!("{zone}."), "kind": "Native",
                        "nameservers": [format!("ns1.{zone}.")]})),
        )
        .await?;
        self.api(
            "PATCH",
            &format!("/zones/{zone}."),
            Some(json!({"rrsets": [{"name": format!("ns1.{zone}."), "type": "A", "ttl": 60,
                "changetype": "REPLACE", "records": [{"content": "127.0.0.1", "disabled": false}]}]})),
        )
        .await?;
        // Served over DNS, not only stored.
        let dns = self.dns;
        self.process
            .wait_ready(&format!("serve {zone}"), READY_DEADLINE, || async move {
                crate::run_output(Command::new("dig").arg(format!("@{}", dns.ip())).args([
                    "-p",
                    &dns.port().to_string(),
                    "+short",
                    "+norec",
                    "+time=1",
                    "+tries=1",
                    "SOA",
                    zone,
                ]))
                .is_ok_and(|o| !o.trim().is_empty())
            })
            .await?;
        self.zones.push(zone.to_owned());
        Ok(())
    }

    /// The DNS address (`127.0.0.1:PORT`): Pebble's `-dnsserver`.
    pub fn dns_addr(&self) -> SocketAddr {
        self.dns
    }

    /// The API base URL (`http://127.0.0.1:PORT`), the plugin's `url`.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api)
    }

    /// `ns1.<zone>.` → this server, for `[dns01.propagation] nameserver_addresses`.
    pub fn nameserver_addresses(&self) -> Vec<(String, SocketAddr)> {
        self.zones
            .iter()
            .map(|z| (format!("ns1.{z}."), self.dns))
            .collect()
    }

    /// The TXT values (unquoted) of `name` (absolute) in `zone`, as the API stores them.
    pub async fn txt(&self, zone: &str, name: &str) -> Result<Vec<String>> {
        let z = self.api("GET", &format!("/zones/{zone}."), None).await?;
        let mut out = Vec::new();
        for set in z["rrsets"].as_array().into_iter().flatten() {
            if set["type"] == "TXT"
                && set["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            {
                for r in set["records"].as_array().into_iter().flatten() {
                    out.push(
                        r["content"]
                            .as_str()
                            .unwrap_or("")
                            .trim_matches('"')
                            .to_owned(),
                    );
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every TXT RRset name in `zone`.
    pub async fn txt_names(&self, zone: &str) -> Result<Vec<String>> {
        let z = self.api("GET", &format!("/zones/{zone}."), None).await?;
        Ok(z["rrsets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["type"] == "TXT")
            .filter_map(|s| s["name"].as_str().map(str::to_owned))
            .collect())
    }

    /// Replaces the TXT RRset of `name` in `zone` with `values` (a value someone else owns).
    pub async fn set_txt(&self, zone: &str, name: &str, values: &[&str]) -> Result<()> {
        let records: Vec<Value> = values
            .iter()
            .map(|v| json!({"content": format!("\"{v}\""), "disabled": false}))
            .collect();
        self.api(
            "PATCH",
            &format!("/zones/{zone}."),
            Some(json!({"rrsets": [{"name": name, "type": "TXT", "ttl": 60,
                "changetype": "REPLACE", "records": records}]})),
        )
        .await
        .map(drop)
    }

    /// TXT values of `name` served over DNS (`dig +short`, quotes removed).
    pub fn dig_txt(&self, name: &str) -> Result<Vec<String>> {
        let out = crate::run_output(Command::new("dig").arg(format!("@{}", self.dns.ip())).args(
            [
                "-p",
                &self.dns.port().to_string(),
                "+short",
                "+norec",
                "+time=1",
                "+tries=1",
                "TXT",
                name,
            ],
        ))?;
        let mut v: Vec<String> = out
            .lines()
            .map(|l| l.trim_matches('"').to_owned())
            .collect();
        v.sort();
        Ok(v)
    }

    /// The last `lines` of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }
}
