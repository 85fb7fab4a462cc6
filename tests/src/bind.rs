//! A real BIND 9 (`named -g`) on loopback with its own configuration directory: the DNS
//! servers of the DNS-01 tests, the demo and the DNS benchmark.
//!
//! One [`Bind`] runs a **primary** authoritative for the configured zones (RFC 2136 updates
//! allowed to TSIG keys made with `tsig-keygen`), optionally a **secondary** for the same
//! zones (kept current by NOTIFY, or lagging on purpose), and optionally a **recursive
//! resolver** that forwards those zones to the primary (what a CA uses; needed when
//! `_acme-challenge` is a CNAME into another zone, since an authoritative server does not
//! follow it). Zones come from `tests/bind/zone.db.in`. Every server gets free loopback
//! ports picked at run time and a statistics channel (UPDATE/QUERY counters), is polled until
//! it answers, and is killed on drop (and when the test process dies).

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tempfile::TempDir;

use crate::ports;
use crate::server_process::{ServerProcess, StartAttempts};

const ZONE_TEMPLATE: &str = include_str!("../bind/zone.db.in");
/// Readiness: at most this long for all servers.
const READY_DEADLINE: Duration = Duration::from_secs(20);

/// One zone to serve.
#[derive(Debug, Clone)]
pub struct BindZone {
    /// Zone name without trailing dot, e.g. `example.test`.
    pub name: String,
    /// Extra zone-file lines (relative owner names allowed), e.g.
    /// `_acme-challenge.www IN CNAME _acme-challenge.www.validation.test.`.
    pub records: Vec<String>,
    /// `update-policy { … };` rules; default: every key may change TXT records anywhere in
    /// the zone (`grant KEY zonesub TXT;`).
    pub update_policy: Option<String>,
}

impl BindZone {
    pub fn new(name: &str) -> BindZone {
        BindZone {
            name: name.to_owned(),
            records: Vec::new(),
            update_policy: None,
        }
    }

    pub fn record(mut self, line: &str) -> BindZone {
        self.records.push(line.to_owned());
        self
    }

    pub fn update_policy(mut self, rules: &str) -> BindZone {
        self.update_policy = Some(rules.to_owned());
        self
    }
}

/// How the secondary follows the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondaryMode {
    /// NOTIFY at once after every change (the normal case).
    Notified,
    /// No NOTIFY and a one-hour refresh: it keeps the zone as first transferred.
    Lagging,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct BindOptions {
    pub zones: Vec<BindZone>,
    /// TSIG keys `(name, algorithm)` made with `tsig-keygen -a ALGORITHM NAME`.
    pub keys: Vec<(String, String)>,
    pub secondary: Option<SecondaryMode>,
    /// Also start a recursive resolver forwarding the zones to the primary.
    pub resolver: bool,
    /// Keep files here instead of a temporary directory removed on drop.
    pub work_dir: Option<PathBuf>,
}

impl Default for BindOptions {
    /// `example.test` and `validation.test`, one hmac-sha256 key `acme-key`, primary only.
    fn default() -> Self {
        BindOptions {
            zones: vec![
                BindZone::new("example.test"),
                BindZone::new("validation.test"),
            ],
            keys: vec![("acme-key".to_owned(), "hmac-sha256".to_owned())],
            secondary: None,
            resolver: false,
            work_dir: None,
        }
    }
}

/// What a GSS-TSIG test adds to the primary: options (`tkey-gssapi-keytab …;`) and the
/// environment of `named` (KRB5_CONFIG of the test's realm).
#[derive(Debug, Clone, Default)]
pub struct BindExtra {
    pub primary_options: String,
    pub env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
}

/// UPDATE and QUERY messages a server received, from its statistics channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BindStats {
    pub updates: u64,
    pub queries: u64,
    /// TKEY queries (GSS-TSIG negotiation rounds), from the incoming query types.
    pub tkey_queries: u64,
}

#[derive(Debug)]
struct Named {
    role: &'static str,
    addr: SocketAddr,
    stats_port: u16,
    process: ServerProcess,
}

#[derive(Debug)]
enum Dir {
    Temp(TempDir),
    Kept(PathBuf),
}

/// Running BIND servers; killed on drop.
#[derive(Debug)]
pub struct Bind {
    servers: Vec<Named>,
    zones: Vec<String>,
    keys: Vec<(String, PathBuf)>,
    dir: Dir,
    extra: BindExtra,
}

impl Bind {
    /// Writes keys, zones and configurations, starts the servers and waits until each one
    /// serves every zone (bounded; errors carry the log tails).
    pub async fn start(options: BindOptions) -> Result<Bind> {
        Bind::start_with(options, BindExtra::default()).await
    }

    /// [`Bind::start`] with extra primary options and environment (GSS-TSIG tests).
    pub async fn start_with(options: BindOptions, extra: BindExtra) -> Result<Bind> {
        let dir = match &options.work_dir {
            Some(p) => {
                fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
                Dir::Kept(p.clone())
            }
            None => Dir::Temp(
                tempfile::Builder::new()
                    .prefix("certfleet-bind-")
                    .tempdir()
                    .context("creating a directory for named")?,
            ),
        };
        let root = match &dir {
            Dir::Temp(t) => t.path().to_owned(),
            Dir::Kept(p) => p.clone(),
        };
        let mut keys = Vec::new();
        for (name, alg) in &options.keys {
            let out = crate::run_output(Command::new("tsig-keygen").args(["-a", alg, name]))
                .with_context(|| format!("tsig-keygen -a {alg} {name}"))?;
            let path = root.join(format!("{name}.key"));
            fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
            keys.push((name.clone(), path));
        }
        let mut bind = Bind {
            servers: Vec::new(),
            zones: options.zones.iter().map(|z| z.name.clone()).collect(),
            keys,
            dir,
            extra,
        };
        let mut attempts = StartAttempts::default();
        while attempts.another() {
            bind.servers.clear();
            match bind.launch(&options, &root).await {
                Ok(()) => return Ok(bind),
                Err(e) => attempts.failed(e),
            }
        }
        bind.servers.clear();
        Err(attempts.into_error("named"))
    }

    async fn launch(&mut self, o: &BindOptions, root: &Path) -> Result<()> {
        let primary = SocketAddr::from(([127, 0, 0, 1], ports::free_tcp_udp_port()?));
        let secondary = match o.secondary {
            Some(_) => Some(SocketAddr::from((
                [127, 0, 0, 1],
                ports::free_tcp_udp_port()?,
            ))),
            None => None,
        };
        let includes: String = self
            .keys
            .iter()
            .map(|(_, p)| format!("include \"{}\";\n", p.display()))
            .collect();
        let lagging = o.secondary == Some(SecondaryMode::Lagging);

        // Primary.
        let pdir = root.join("primary");
        fs::create_dir_all(&pdir)?;
        let notify = match secondary {
            Some(s) if !lagging => format!(
                "notify explicit; notify-delay 0; also-notify {{ {} port {}; }};",
                s.ip(),
                s.port()
            ),
            _ => "notify no;".to_owned(),
        };
        let mut zones = String::new();
        for z in &o.zones {
            let file = pdir.join(format!("{}.db", z.name));
            let ns2 = if secondary.is_some() {
                format!("        IN NS   ns2.{}.", z.name)
            } else {
                String::new()
            };
            let text = ZONE_TEMPLATE
                .replace("@ZONE@", &z.name)
                .replace("@REFRESH@", if lagging { "3600" } else { "60" })
                .replace("@NS2@", &ns2)
                .replace("@EXTRA@", &z.records.join("\n"));
            fs::write(&file, text)?;
            let policy = z.update_policy.clone().unwrap_or_else(|| {
                self.keys
                    .iter()
                    .map(|(k, _)| format!("grant {k}. zonesub TXT;"))
                    .collect::<Vec<_>>()
                    .join(" ")
            });
            zones.push_str(&format!(
                "zone \"{}\" {{ type primary; file \"{}\"; update-policy {{ {policy} }}; {notify} }};\n",
                z.name,
                file.display()
            ));
        }
        let opts = format!(
            "recursion no; allow-transfer {{ 127.0.0.1; }}; {}",
            self.extra.primary_options
        );
        self.spawn("primary", &pdir, primary, &includes, &opts, &zones)?;

        // Secondary.
        if let Some(s) = secondary {
            let sdir = root.join("secondary");
            fs::create_dir_all(&sdir)?;
            let zones: String = o
                .zones
                .iter()
                .map(|z| {
                    format!(
                        "zone \"{}\" {{ type secondary; file \"{}\"; primaries {{ {} port {}; }}; }};\n",
                        z.name,
                        sdir.join(format!("{}.db", z.name)).display(),
                        primary.ip(),
                        primary.port()
                    )
                })
                .collect();
            let opts = "recursion no; notify no; min-refresh-time 60; max-refresh-time 3600;";
            self.spawn("secondary", &sdir, s, &includes, opts, &zones)?;
        }

        // Recursive resolver.
        if o.resolver {
            let rdir = root.join("resolver");
            fs::create_dir_all(&rdir)?;
            let addr = SocketAddr::from(([127, 0, 0, 1], ports::free_tcp_udp_port()?));
            let zones: String = o
                .zones
                .iter()
                .map(|z| {
                    format!(
                        "zone \"{}\" {{ type forward; forward only; forwarders {{ {} port {}; }}; }};\n",
                        z.name,
                        primary.ip(),
                        primary.port()
                    )
                })
                .collect();
            let opts =
                "recursion yes; allow-recursion { 127.0.0.1; }; max-ncache-ttl 1; max-cache-ttl 1;";
            self.spawn("resolver", &rdir, addr, "", opts, &zones)?;
        }
        self.wait_ready().await
    }

    fn spawn(
        &mut self,
        role: &'static str,
        dir: &Path,
        addr: SocketAddr,
        includes: &str,
        options: &str,
        zones: &str,
    ) -> Result<()> {
        let stats_port = ports::free_tcp_port()?;
        let conf = dir.join("named.conf");
        let text = format!(
            "{includes}options {{\n  directory \"{d}\";\n  pid-file none;\n  session-keyfile none;\n  \
             managed-keys-directory \"{d}\";\n  listen-on port {port} {{ {ip}; }};\n  listen-on-v6 {{ none; }};\n  \
             allow-query {{ any; }};\n  dnssec-validation no;\n  {options}\n}};\ncontrols {{ }};\n\
             statistics-channels {{ inet 127.0.0.1 port {stats_port} allow {{ 127.0.0.1; }}; }};\n{zones}",
            d = dir.display(),
            port = addr.port(),
            ip = addr.ip(),
        );
        fs::write(&conf, text).with_context(|| format!("writing {}", conf.display()))?;
        crate::run_output(Command::new("named-checkconf").arg(&conf))
            .with_context(|| format!("named-checkconf {}", conf.display()))?;
        let mut cmd = Command::new("named");
        cmd.envs(self.extra.env.iter().map(|(k, v)| (k, v)));
        cmd.arg("-g").arg("-4").arg("-c").arg(&conf);
        let process =
            ServerProcess::spawn(&format!("named ({role})"), cmd, &dir.join("named.log"))?;
        self.servers.push(Named {
            role,
            addr,
            stats_port,
            process,
        });
        Ok(())
    }

    /// Every server serves every zone (one deadline for all of them).
    async fn wait_ready(&self) -> Result<()> {
        let started = Instant::now();
        for s in &self.servers {
            let zones = self.zones.iter().map(String::as_str);
            let recursion = s.role == "resolver";
            crate::dig::wait_serving(
                &s.process,
                s.addr,
                zones,
                recursion,
                started,
                READY_DEADLINE,
            )
            .await?;
        }
        Ok(())
    }

    fn server(&self, role: &str) -> Option<&Named> {
        self.servers.iter().find(|s| s.role == role)
    }

    /// The primary's address (`127.0.0.1:PORT`): send updates here; Pebble's `-dnsserver`.
    pub fn primary(&self) -> SocketAddr {
        self.servers[0].addr
    }

    pub fn secondary(&self) -> Option<SocketAddr> {
        self.server("secondary").map(|s| s.addr)
    }

    /// The recursive resolver's address, when started.
    pub fn resolver(&self) -> Option<SocketAddr> {
        self.server("resolver").map(|s| s.addr)
    }

    /// For the propagation checker's test override: each zone's `ns1.` → primary and
    /// `ns2.` → secondary.
    pub fn nameserver_addresses(&self) -> Vec<(String, SocketAddr)> {
        let mut out = Vec::new();
        for z in &self.zones {
            out.push((format!("ns1.{z}."), self.primary()));
            if let Some(s) = self.secondary() {
                out.push((format!("ns2.{z}."), s));
            }
        }
        out
    }

    /// The BIND key file `tsig-keygen` wrote for key `name`.
    pub fn key_file(&self, name: &str) -> Result<&Path> {
        self.keys
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p.as_path())
            .with_context(|| format!("no TSIG key {name:?} was made"))
    }

    /// The base64 secret of key `name`.
    pub fn key_secret(&self, name: &str) -> Result<String> {
        let text = fs::read_to_string(self.key_file(name)?)?;
        text.split('"')
            .nth(3)
            .map(str::to_owned)
            .context("no secret in the key file")
    }

    /// The TXT values `server` answers for `name` (recursion off).
    pub fn txt(&self, server: SocketAddr, name: &str) -> Result<Vec<String>> {
        crate::dig::txt(server, name)
    }

    /// UPDATE and QUERY messages `server` received so far.
    pub async fn stats(&self, server: SocketAddr) -> Result<BindStats> {
        let named = self
            .servers
            .iter()
            .find(|s| s.addr == server)
            .with_context(|| format!("no named on {server}"))?;
        let url = format!("http://127.0.0.1:{}/json/v1/server", named.stats_port);
        crate::install_crypto_provider();
        let body: serde_json::Value = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()?
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?
            .json()
            .await
            .with_context(|| format!("parsing {url}"))?;
        let op = |k: &str| body["opcodes"][k].as_u64().unwrap_or(0);
        Ok(BindStats {
            updates: op("UPDATE"),
            queries: op("QUERY"),
            tkey_queries: body["qtypes"]["TKEY"].as_u64().unwrap_or(0),
        })
    }

    /// Last lines of every server's log.
    pub fn log_tails(&self, lines: usize) -> String {
        self.servers
            .iter()
            .map(|s| {
                format!(
                    "--- named ({}) {}:\n{}",
                    s.role,
                    s.addr,
                    s.process.log_tail(lines)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn work_dir(&self) -> &Path {
        match &self.dir {
            Dir::Temp(t) => t.path(),
            Dir::Kept(p) => p,
        }
    }
}
