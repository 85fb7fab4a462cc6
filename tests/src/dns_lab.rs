//! The enterprise DNS lab: a delegated validation zone on a primary + secondary, each on
//! port 53 of its own address, and a recursive resolver for the CA — inside a network
//! namespace the test creates, so NS records need no port overrides.
//!
//! ```text
//!   127.0.0.1:53  resolver (BIND, recursion, static-stub corp.test -> .2 and .3; rndc on :953)
//!   127.0.0.2:53  ns1.corp.test  primary: BIND, Knot or PowerDNS  (corp.test, acme.corp.test)
//!   127.0.0.3:53  ns2.corp.test  secondary: BIND (NOTIFY + 1 s refresh, or lagging)
//! ```
//! `corp.test` holds `_acme-challenge.corp.test` itself and delegates `acme.corp.test` (NS
//! records in the parent); `_acme-challenge.www.corp.test` is a CNAME to
//! `www.acme.corp.test`. Both zones let the ACME key change any TXT record (`zonesub TXT`),
//! so a record written into the wrong zone is accepted silently, as on real servers.
//!
//! [`in_namespace`] re-runs one test of the current test binary under `unshare --net`; the
//! copy inside brings `lo` up with the lab's addresses ([`enter`]) and starts everything.
//! Every process is killed on drop and when the test process dies.

use std::fs::{self, File};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::server_process::{READY_INTERVAL, ServerProcess};

/// Set in the copy of the test binary that runs inside the namespace.
pub const INSIDE_ENV: &str = "CERTFLEET_DNS_LAB_INSIDE";
pub const RESOLVER: SocketAddr = lab_addr(1);
pub const PRIMARY: SocketAddr = lab_addr(2);
pub const SECONDARY: SocketAddr = lab_addr(3);
/// A split-horizon "internal view" of `corp.test` that lacks the `acme` delegation (only
/// with [`DnsLab::start_stale_view`]).
pub const STALE_VIEW: SocketAddr = lab_addr(4);
pub const KEY_NAME: &str = "acme-key";
/// The TXT owners the wildcard pair `www.corp.test` + `*.corp.test` writes: the apex
/// challenge in `corp.test` and the CNAME target in `acme.corp.test`.
pub const CHALLENGE_OWNERS: [&str; 2] = ["_acme-challenge.corp.test.", "www.acme.corp.test."];
/// The resolver's control channel (`rndc`), inside the namespace.
const RNDC_PORT: u16 = 953;
/// Readiness: at most this long.
const READY_DEADLINE: Duration = Duration::from_secs(30);

const fn lab_addr(last: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)), 53)
}

/// Which server is the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabPrimary {
    Bind,
    Knot,
    PowerDns,
}

/// How the secondary follows the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabSecondary {
    /// NOTIFY from the primary and a 1 s refresh (PowerDNS may NOTIFY late).
    Current,
    /// No NOTIFY and a one-hour refresh: keeps the zones as first transferred.
    Lagging,
}

/// Whether the lab can run here: root (for `unshare --net` and port 53) and the tools.
pub fn lab_tools_present(primary: LabPrimary) -> bool {
    let mut ok = crate::require_tool("unshare", "util-linux")
        && crate::require_tool("ip", "iproute2")
        && crate::require_tool("named", "bind9")
        && crate::require_tool("tsig-keygen", "bind9")
        && crate::require_tool("dig", "bind9-dnsutils");
    ok &= match primary {
        LabPrimary::Bind => true,
        LabPrimary::Knot => {
            crate::require_tool("knotd", "knot") && crate::require_tool("keymgr", "knot")
        }
        LabPrimary::PowerDns => crate::pdns::require_pdns(),
    };
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        let msg = "the DNS lab needs root (network namespace, port 53)";
        if crate::in_ci() {
            panic!("{msg} (CI is set, so this test may not skip)");
        }
        eprintln!("SKIPPED: {msg}");
    }
    ok && root
}

/// Outside the namespace: re-runs test `test_path` (e.g. `dns01_lab::bind_wildcard`) of this
/// test binary inside a new network namespace and returns its combined output; errors when
/// it fails or outlives `limit`.
pub fn in_namespace(test_path: &str, limit: Duration) -> Result<String> {
    let exe = std::env::current_exe().context("finding the test binary")?;
    let out_path = std::env::temp_dir().join(format!(
        "certfleet-dns-lab-{}-{}.log",
        std::process::id(),
        test_path.replace("::", "-")
    ));
    let out = File::create(&out_path)?;
    let mut child = Command::new("unshare")
        .arg("--net")
        .arg("--")
        .arg(&exe)
        .args([test_path, "--exact", "--nocapture", "--test-threads", "1"])
        .env(INSIDE_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone()?))
        .stderr(Stdio::from(out))
        .spawn()
        .context("running unshare --net")?;
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if started.elapsed() > limit {
            // Errors mean it is gone already.
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = fs::read_to_string(&out_path).unwrap_or_default();
    // Best effort: the log is only for this report.
    let _ = fs::remove_file(&out_path);
    match status {
        Some(s) if s.success() && text.contains("1 passed") => Ok(text),
        Some(s) => bail!("{test_path} in the namespace failed ({s}):\n{text}"),
        None => bail!("{test_path} in the namespace did not finish within {limit:?}:\n{text}"),
    }
}

/// Inside the namespace: `lo` up with 127.0.0.2 to .4 beside 127.0.0.1.
pub fn enter() -> Result<()> {
    if std::env::var_os(INSIDE_ENV).is_none() {
        bail!("not inside the lab namespace (run the test through dns_lab::in_namespace)");
    }
    crate::run_output(Command::new("ip").args(["link", "set", "lo", "up"]))?;
    for a in [PRIMARY, SECONDARY, STALE_VIEW] {
        crate::run_output(Command::new("ip").args([
            "addr",
            "add",
            &format!("{}/8", a.ip()),
            "dev",
            "lo",
        ]))?;
    }
    Ok(())
}

/// The running lab; every server is killed on drop.
#[derive(Debug)]
pub struct DnsLab {
    primary: LabPrimary,
    /// Every zone the servers hold: [`ZONES`], then the extra validation zones.
    zones: Vec<String>,
    procs: Vec<ServerProcess>,
    key_file: PathBuf,
    secret_file: PathBuf,
    dir: TempDir,
}

mod zones;

use zones::{CORP_ZONE, zone_files};
pub use zones::{VALIDATION_ZONE_PREFIX, ZONES};

impl DnsLab {
    /// Writes keys, zones and configurations (inside the namespace, after [`enter`]) and
    /// starts the primary, the secondary and the resolver, each polled until it serves both
    /// zones.
    pub async fn start(primary: LabPrimary, secondary: LabSecondary) -> Result<DnsLab> {
        DnsLab::start_with_zones(primary, secondary, 0).await
    }

    /// [`DnsLab::start`] with `validation_zones` more delegated zones
    /// (`v0.corp.test`, `v1.corp.test`, …; [`DnsLab::validation_zones`]) on the primary and
    /// the secondary, for batches spread over many zones.
    pub async fn start_with_zones(
        primary: LabPrimary,
        secondary: LabSecondary,
        validation_zones: usize,
    ) -> Result<DnsLab> {
        let dir = tempfile::Builder::new()
            .prefix("certfleet-dns-lab-")
            .tempdir()?;
        let root = dir.path().to_owned();
        let lagging = secondary == LabSecondary::Lagging;
        let refresh = if lagging { "3600" } else { "1" };
        let files = zone_files(validation_zones, refresh);
        for (zone, text) in &files {
            fs::write(root.join(format!("{zone}.zone")), text)?;
        }
        let mut lab = DnsLab {
            primary,
            zones: files.into_iter().map(|(z, _)| z).collect(),
            procs: Vec::new(),
            key_file: root.join("acme-key.conf"),
            secret_file: root.join("acme-key.secret"),
            dir,
        };
        match primary {
            LabPrimary::Bind => lab.start_bind_primary(lagging)?,
            LabPrimary::Knot => lab.start_knot_primary(lagging)?,
            LabPrimary::PowerDns => lab.start_pdns_primary()?,
        }
        lab.wait_serving(0, PRIMARY, false).await?;
        lab.start_bind_secondary(lagging)?;
        lab.wait_serving(1, SECONDARY, false).await?;
        lab.start_resolver()?;
        lab.wait_serving(2, RESOLVER, true).await?;
        Ok(lab)
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The admin's key file as their own tool wrote it: `tsig-keygen -a hmac-sha512`
    /// (BIND, PowerDNS) or `keymgr -t NAME hmac-sha512` (Knot). For PowerDNS the bare base64
    /// secret is also written to a 0600 file (`secret_file`).
    pub fn key_file(&self) -> &Path {
        &self.key_file
    }

    /// The bare base64 secret, mode 0600 (PowerDNS lab only).
    pub fn secret_file(&self) -> &Path {
        &self.secret_file
    }

    pub fn primary_kind(&self) -> LabPrimary {
        self.primary
    }

    /// The extra delegated validation zones (apexes without a trailing dot).
    pub fn validation_zones(&self) -> Vec<&str> {
        self.zones
            .iter()
            .filter(|z| z.starts_with(VALIDATION_ZONE_PREFIX))
            .map(String::as_str)
            .collect()
    }

    fn spawn(&mut self, role: &'static str, cmd: Command) -> Result<()> {
        let log = self.root().join(format!("{role}.log"));
        self.procs.push(ServerProcess::spawn(role, cmd, &log)?);
        Ok(())
    }

    fn named(&mut self, role: &'static str, listen: SocketAddr, body: &str) -> Result<()> {
        let d = self.root().join(role);
        fs::create_dir_all(&d)?;
        let conf = d.join("named.conf");
        fs::write(
            &conf,
            format!(
                "options {{\n directory \"{d}\";\n pid-file none;\n session-keyfile none;\n \
                 managed-keys-directory \"{d}\";\n listen-on port 53 {{ {ip}; }};\n \
                 listen-on-v6 {{ none; }};\n allow-query {{ any; }};\n dnssec-validation no;\n\
                 {body}",
                d = d.display(),
                ip = listen.ip()
            ),
        )?;
        crate::run_output(Command::new("named-checkconf").arg(&conf))
            .with_context(|| format!("named-checkconf {}", conf.display()))?;
        let mut cmd = Command::new("named");
        cmd.args(["-g", "-4", "-c"]).arg(&conf);
        self.spawn(role, cmd)
    }

    fn start_bind_primary(&mut self, lagging: bool) -> Result<()> {
        let key =
            crate::run_output(Command::new("tsig-keygen").args(["-a", "hmac-sha512", KEY_NAME]))?;
        fs::write(&self.key_file, key)?;
        let notify = if lagging {
            "notify no;".to_owned()
        } else {
            format!(
                "notify explicit; notify-delay 0; also-notify {{ {}; }};",
                SECONDARY.ip()
            )
        };
        let zones: String = self
            .zones
            .iter()
            .map(|z| {
                format!(
                    "zone \"{z}\" {{ type primary; file \"{}\"; update-policy {{ grant {KEY_NAME}. zonesub TXT; }}; }};\n",
                    self.root().join(format!("{z}.zone")).display()
                )
            })
            .collect();
        let body = format!(
            " recursion no;\n allow-transfer {{ 127.0.0.0/8; }};\n {notify}\n}};\ncontrols {{ }};\n\
             include \"{}\";\n{zones}",
            self.key_file.display()
        );
        self.named("primary", PRIMARY, &body)
    }

    fn start_knot_primary(&mut self, lagging: bool) -> Result<()> {
        let key = crate::run_output(Command::new("keymgr").args(["-t", KEY_NAME, "hmac-sha512"]))?;
        fs::write(&self.key_file, key)?;
        let d = self.root().join("primary");
        // Knot does not create its database directory (DDNS then fails "not exists").
        fs::create_dir_all(d.join("run"))?;
        fs::create_dir_all(d.join("db"))?;
        let notify = if lagging {
            ""
        } else {
            "\n    notify: secondary"
        };
        let zones: String = self
            .zones
            .iter()
            .map(|z| {
                format!(
                    "  - domain: {z}\n    file: \"{}\"\n    acl: [acme_update, transfer]{notify}\n",
                    self.root().join(format!("{z}.zone")).display()
                )
            })
            .collect();
        let conf = format!(
            "server:\n    rundir: \"{run}\"\n    listen: {ip}@53\n\
             database:\n    storage: \"{db}\"\n\
             include: \"{key}\"\n\
             remote:\n  - id: secondary\n    address: {sec}@53\n    via: {ip}\n\
             acl:\n  - id: acme_update\n    key: {KEY_NAME}\n    action: update\n\
             \x20 - id: transfer\n    address: 127.0.0.0/8\n    action: transfer\n\
             template:\n  - id: default\n    storage: \"{d}\"\n    zonefile-sync: -1\n\
             \x20   journal-content: changes\n    serial-policy: increment\n\
             log:\n  - target: stderr\n    any: info\n\
             zone:\n{zones}",
            run = d.join("run").display(),
            ip = PRIMARY.ip(),
            db = d.join("db").display(),
            key = self.key_file.display(),
            sec = SECONDARY.ip(),
            d = d.display(),
        );
        let path = d.join("knot.conf");
        fs::write(&path, conf)?;
        let mut cmd = Command::new("knotd");
        cmd.arg("-c").arg(&path);
        self.spawn("primary", cmd)
    }

    fn start_pdns_primary(&mut self) -> Result<()> {
        let d = self.root().join("primary");
        fs::create_dir_all(&d)?;
        let db = d.join("pdns.sqlite3");
        let schema = crate::pdns::sqlite_schema().context("the pdns sqlite3 schema")?;
        rusqlite::Connection::open(&db)
            .and_then(|c| c.execute_batch(&schema))
            .with_context(|| format!("creating {}", db.display()))?;
        // Caches off so an update is served at once. NOTIFY must leave from the primary's
        // address (`query-local-address`): from 127.0.0.1 the secondary refuses it ("refused
        // notify from non-primary") and follows only at its refresh, serving the previous
        // run's records meanwhile. PowerDNS may still NOTIFY late; the 1 s refresh covers it.
        let conf = format!(
            "launch=gsqlite3\ngsqlite3-database={db}\nlocal-address={ip}\nlocal-port=53\n\
             guardian=no\ndaemon=no\ndisable-syslog=yes\nsocket-dir={d}\nsecurity-poll-suffix=\n\
             cache-ttl=0\nquery-cache-ttl=0\nnegquery-cache-ttl=0\nloglevel=6\nlog-dns-details=yes\n\
             query-local-address={ip}\nprimary=yes\ndnsupdate=yes\nallow-dnsupdate-from=127.0.0.0/8\n\
             allow-axfr-ips=127.0.0.0/8\nonly-notify=127.0.0.0/8\n",
            db = db.display(),
            ip = PRIMARY.ip(),
            d = d.display(),
        );
        fs::write(d.join("pdns.conf"), conf)?;
        let pdnsutil = |args: &[&str]| -> Result<String> {
            crate::run_output(
                Command::new("pdnsutil")
                    .arg(format!("--config-dir={}", d.display()))
                    .args(args),
            )
            .with_context(|| format!("pdnsutil {}", args.join(" ")))
        };
        for z in self.zones.clone() {
            let z = z.as_str();
            let file = self.root().join(format!("{z}.zone"));
            pdnsutil(&["load-zone", z, &file.to_string_lossy()])?;
            pdnsutil(&["set-kind", z, "primary"])?;
            pdnsutil(&["set-meta", z, "TSIG-ALLOW-DNSUPDATE", KEY_NAME])?;
            pdnsutil(&["set-meta", z, "SOA-EDIT-DNSUPDATE", "INCREASE"])?;
        }
        // The admin's way: PowerDNS makes the key; its secret goes into a 0600 file.
        let listed = pdnsutil(&["generate-tsig-key", KEY_NAME, "hmac-sha512"])?;
        let secret = listed
            .split_whitespace()
            .last()
            .context("generate-tsig-key printed no secret")?;
        crate::write_private(&self.secret_file, secret)?;
        let bin = crate::pdns::pdns_binary().context("pdns_server")?;
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config-dir={}", d.display()));
        self.spawn("primary", cmd)
    }

    fn start_bind_secondary(&mut self, lagging: bool) -> Result<()> {
        let refresh = if lagging {
            "min-refresh-time 3600; max-refresh-time 3600;"
        } else {
            "min-refresh-time 1; max-refresh-time 1; min-retry-time 1; max-retry-time 1;"
        };
        let d = self.root().join("secondary");
        let zones: String = self
            .zones
            .iter()
            .map(|z| {
                format!(
                    "zone \"{z}\" {{ type secondary; file \"{}\"; primaries {{ {}; }}; }};\n",
                    d.join(format!("{z}.db")).display(),
                    PRIMARY.ip()
                )
            })
            .collect();
        let body = format!(
            " recursion no;\n notify no;\n {refresh}\n transfer-source {};\n}};\ncontrols {{ }};\n{zones}",
            SECONDARY.ip()
        );
        self.named("secondary", SECONDARY, &body)
    }

    fn rndc_key(&self) -> PathBuf {
        self.root().join("rndc.key")
    }

    /// The CA's resolver, with a control channel so the lab can empty its cache between runs
    /// ([`DnsLab::forget_previous_run`]).
    fn start_resolver(&mut self) -> Result<()> {
        let key =
            crate::run_output(Command::new("tsig-keygen").args(["-a", "hmac-sha256", "rndc-key"]))?;
        fs::write(self.rndc_key(), key)?;
        let body = format!(
            " recursion yes;\n allow-recursion {{ any; }};\n max-cache-ttl 1;\n max-ncache-ttl 1;\n \
             qname-minimization off;\n}};\ninclude \"{key}\";\n\
             controls {{ inet {ip} port {RNDC_PORT} allow {{ {ip}; }} keys {{ rndc-key; }}; }};\n\
             zone \"corp.test\" {{ type static-stub; server-addresses {{ {}; {}; }}; }};\n",
            PRIMARY.ip(),
            SECONDARY.ip(),
            key = self.rndc_key().display(),
            ip = RESOLVER.ip(),
        );
        self.named("resolver", RESOLVER, &body)
    }

    /// Starts [`STALE_VIEW`]: `corp.test` as the primary has it but without the `acme`
    /// delegation, as a split-horizon view that was never updated. Zone discovery there puts
    /// `www.acme.corp.test` into `corp.test`.
    pub async fn start_stale_view(&mut self) -> Result<()> {
        let text: String = CORP_ZONE
            .replace("$REFRESH$", "3600")
            .lines()
            .filter(|l| !l.starts_with("acme "))
            .map(|l| format!("{l}\n"))
            .collect();
        let file = self.root().join("stale-corp.test.zone");
        fs::write(&file, text)?;
        let body = format!(
            " recursion no;\n}};\ncontrols {{ }};\nzone \"corp.test\" {{ type primary; file \"{}\"; }};\n",
            file.display()
        );
        self.named("stale-view", STALE_VIEW, &body)?;
        let index = self.procs.len() - 1;
        self.procs[index]
            .wait_ready(
                &format!("serve corp.test on {STALE_VIEW}"),
                READY_DEADLINE,
                || async {
                    crate::dig::dig(STALE_VIEW, "corp.test", "SOA", false)
                        .is_ok_and(|a| !a.is_empty())
                },
            )
            .await
    }

    /// Server `index` serves both zones (one deadline for both).
    async fn wait_serving(&self, index: usize, addr: SocketAddr, recursion: bool) -> Result<()> {
        let process = &self.procs[index];
        let zones = self.zones.iter().map(String::as_str);
        crate::dig::wait_serving(
            process,
            addr,
            zones,
            recursion,
            Instant::now(),
            READY_DEADLINE,
        )
        .await
    }

    /// TXT values `server` itself serves for `name` (recursion off).
    pub fn txt(&self, server: SocketAddr, name: &str) -> Result<Vec<String>> {
        crate::dig::txt(server, name)
    }

    /// Between two orders: waits (bounded) until neither authoritative server serves a TXT at
    /// [`CHALLENGE_OWNERS`] any more, then empties the CA resolver's cache (`rndc flush`).
    ///
    /// Both are needed. The resolver asks either server; a secondary that has not yet
    /// followed the cleanup hands it the previous run's value, which it keeps for up to its
    /// `max-cache-ttl` and gives to the CA in the next order ("Correct value not found").
    /// The cache cannot be inspected by querying: the resolver answers non-recursive queries
    /// for the static-stub zone with REFUSED, so only flushing is a deterministic "forget".
    pub async fn forget_previous_run(&self) -> Result<()> {
        let started = Instant::now();
        loop {
            let mut left = Vec::new();
            for server in [PRIMARY, SECONDARY] {
                for owner in CHALLENGE_OWNERS {
                    let v = self.txt(server, owner)?;
                    if !v.is_empty() {
                        left.push(format!("{owner} {v:?} on {server}"));
                    }
                }
            }
            if left.is_empty() {
                break;
            }
            if started.elapsed() > READY_DEADLINE {
                bail!(
                    "the previous run's records are still served after {READY_DEADLINE:?}: {}\n{}",
                    left.join("; "),
                    self.log_tails(20)
                );
            }
            tokio::time::sleep(READY_INTERVAL).await;
        }
        crate::run_output(
            Command::new("rndc")
                .args([
                    "-s",
                    &RESOLVER.ip().to_string(),
                    "-p",
                    &RNDC_PORT.to_string(),
                    "-k",
                ])
                .arg(self.rndc_key())
                .arg("flush"),
        )
        .context("rndc flush (the CA resolver's cache)")?;
        Ok(())
    }

    /// Every TXT record in `zone` on `server`, by zone transfer (owner, value): shows what
    /// is hidden below a zone cut, which queries never reveal.
    pub fn zone_txt(&self, server: SocketAddr, zone: &str) -> Result<Vec<(String, String)>> {
        let out = crate::run_output(
            Command::new("dig")
                .arg(format!("@{}", server.ip()))
                .args(["+noall", "+answer", "+time=2", "+tries=1", "AXFR", zone]),
        )?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 5 && f[3] == "TXT").then(|| {
                    (
                        f[0].to_owned(),
                        f[4..].join(" ").trim_matches('"').to_owned(),
                    )
                })
            })
            .collect())
    }

    /// The primary's log (BIND logs every UPDATE with its zone: `updating zone 'Z/IN':
    /// adding an RR at 'NAME' TXT`).
    pub fn primary_log(&self) -> String {
        fs::read_to_string(self.procs[0].log()).unwrap_or_default()
    }

    /// Last lines of every server's log.
    pub fn log_tails(&self, lines: usize) -> String {
        self.procs
            .iter()
            .map(|p| format!("--- {}:\n{}", p.name(), p.log_tail(lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
