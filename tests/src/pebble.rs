//! Pebble 2.4 + pebble-challtestsrv on loopback, one private instance per [`Pebble`] value.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::server_process::{ServerProcess, StartAttempts};
use crate::state::{PebbleState, ProcessRecord};
use crate::{install_crypto_provider, ports, tail_file};

/// Readiness polling ([`ServerProcess::wait_all_ready`]) never takes longer than this.
const READY_DEADLINE: Duration = Duration::from_secs(20);
/// Upper bound on `/roots/<n>` fetched by [`Pebble::issuing_roots`].
const MAX_ROOTS: usize = 32;

/// How to run Pebble. `Default` is the deterministic test setup: no nonce rejection, no
/// authorization reuse, real validation, no EAB, files in a temporary directory.
#[derive(Debug, Clone, Default)]
pub struct PebbleOptions {
    /// `PEBBLE_WFE_NONCEREJECT`: percentage of valid nonces rejected with badNonce (Pebble's
    /// own default is 5; the harness default is 0).
    pub nonce_reject: u32,
    /// `PEBBLE_AUTHZREUSE`: percentage of authorizations reused (harness default 0).
    pub authz_reuse: u32,
    /// `PEBBLE_ALTERNATE_ROOTS`: number of extra chains offered via `Link: rel="alternate"`.
    pub alternate_roots: Option<u32>,
    /// `PEBBLE_VA_ALWAYS_VALID=1`: accept every challenge without validating.
    pub always_valid: bool,
    /// `PEBBLE_CHAIN_LENGTH`.
    pub chain_length: Option<u32>,
    /// `externalAccountBindingRequired` in the config.
    pub eab_required: bool,
    /// `externalAccountMACKeys`: key id → base64url HMAC key.
    pub eab_mac_keys: BTreeMap<String, String>,
    /// Keep configuration, certificates and logs in this directory (created if missing, never
    /// deleted) instead of a temporary directory removed on drop.
    pub work_dir: Option<PathBuf>,
    /// Start the processes in their own process group and without the parent-death signal,
    /// so they outlive this process (for `cargo xtask pebble up`; see [`Pebble::detach`]).
    pub detached: bool,
    /// `-dnsserver` for Pebble instead of challtestsrv's DNS (e.g. a BIND on loopback).
    pub dns_server: Option<String>,
}

impl PebbleOptions {
    /// Sets `PEBBLE_WFE_NONCEREJECT` (percentage; 5 is Pebble's own default).
    pub fn nonce_reject(mut self, percent: u32) -> Self {
        self.nonce_reject = percent;
        self
    }

    /// Sets `PEBBLE_AUTHZREUSE` (percentage).
    pub fn authz_reuse(mut self, percent: u32) -> Self {
        self.authz_reuse = percent;
        self
    }

    /// Sets `PEBBLE_ALTERNATE_ROOTS`.
    pub fn alternate_roots(mut self, n: u32) -> Self {
        self.alternate_roots = Some(n);
        self
    }

    /// Sets `PEBBLE_VA_ALWAYS_VALID=1`.
    pub fn always_valid(mut self, on: bool) -> Self {
        self.always_valid = on;
        self
    }

    /// Sets `PEBBLE_CHAIN_LENGTH`.
    pub fn chain_length(mut self, n: u32) -> Self {
        self.chain_length = Some(n);
        self
    }

    /// Requires external account binding and registers one MAC key (base64url).
    pub fn external_account_binding(mut self, kid: &str, hmac_key_b64url: &str) -> Self {
        self.eab_required = true;
        self.eab_mac_keys
            .insert(kid.to_owned(), hmac_key_b64url.to_owned());
        self
    }

    /// Keeps files in `dir` instead of a temporary directory.
    pub fn work_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.work_dir = Some(dir.into());
        self
    }

    /// See [`PebbleOptions::detached`].
    pub fn detached(mut self, on: bool) -> Self {
        self.detached = on;
        self
    }

    /// See [`PebbleOptions::dns_server`].
    pub fn dns_server(mut self, addr: impl Into<String>) -> Self {
        self.dns_server = Some(addr.into());
        self
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("PEBBLE_VA_NOSLEEP", "1".to_owned()),
            ("PEBBLE_WFE_NONCEREJECT", self.nonce_reject.to_string()),
            ("PEBBLE_AUTHZREUSE", self.authz_reuse.to_string()),
        ];
        if let Some(n) = self.alternate_roots {
            env.push(("PEBBLE_ALTERNATE_ROOTS", n.to_string()));
        }
        if self.always_valid {
            env.push(("PEBBLE_VA_ALWAYS_VALID", "1".to_owned()));
        }
        if let Some(n) = self.chain_length {
            env.push(("PEBBLE_CHAIN_LENGTH", n.to_string()));
        }
        env
    }
}

/// A process the harness started.
#[derive(Debug)]
pub struct Spawned {
    /// `pebble` or `challtestsrv`.
    pub name: &'static str,
    /// Its process id.
    pub pid: u32,
    /// The canonical path of the binary it runs (what `/proc/<pid>/exe` points at).
    pub exe: PathBuf,
    process: Option<ServerProcess>,
}

#[derive(Debug)]
enum WorkDir {
    Temp(TempDir),
    Kept(PathBuf),
}

impl WorkDir {
    fn path(&self) -> &Path {
        match self {
            WorkDir::Temp(t) => t.path(),
            WorkDir::Kept(p) => p,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Ports {
    acme: u16,
    management: u16,
    http01: u16,
    tls_alpn: u16,
    chall_management: u16,
    dns: u16,
}

impl Ports {
    fn pick() -> io::Result<Ports> {
        Ok(Ports {
            acme: ports::free_tcp_port()?,
            management: ports::free_tcp_port()?,
            http01: ports::free_tcp_port()?,
            tls_alpn: ports::free_tcp_port()?,
            chall_management: ports::free_tcp_port()?,
            dns: ports::free_tcp_udp_port()?,
        })
    }
}

/// A running Pebble and pebble-challtestsrv, killed (and waited for) on drop.
#[derive(Debug)]
pub struct Pebble {
    dir: Option<WorkDir>,
    processes: Vec<Spawned>,
    ports: Ports,
    tls_root: PathBuf,
    dns_server: String,
    client: reqwest::Client,
}

impl Pebble {
    /// Generates a TLS CA and a `localhost`/`127.0.0.1` server certificate, writes the
    /// configuration, starts challtestsrv and Pebble on free loopback ports and waits until
    /// both answer (bounded; the error carries the logs' tails).
    pub async fn start(options: PebbleOptions) -> Result<Pebble> {
        install_crypto_provider();
        let pebble_exe = resolve_binary("pebble")?;
        let chall_exe = resolve_binary("pebble-challtestsrv")?;
        let dir = match &options.work_dir {
            Some(p) => {
                fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
                WorkDir::Kept(p.clone())
            }
            None => WorkDir::Temp(
                tempfile::Builder::new()
                    .prefix("certfleet-pebble-")
                    .tempdir()
                    .context("creating a temporary directory for pebble")?,
            ),
        };
        let work = dir.path().to_path_buf();
        let tls_root = write_tls_certs(&work)?;
        let client = http_client(&tls_root)?;

        let mut attempts = StartAttempts::default();
        while attempts.another() {
            let ports = Ports::pick().context("picking free loopback ports")?;
            let dns_server = options
                .dns_server
                .clone()
                .unwrap_or_else(|| format!("127.0.0.1:{}", ports.dns));
            let mut pebble = Pebble {
                dir: None,
                processes: Vec::new(),
                ports,
                tls_root: tls_root.clone(),
                dns_server,
                client: client.clone(),
            };
            match pebble
                .launch(&options, &work, &pebble_exe, &chall_exe)
                .await
            {
                Ok(()) => {
                    pebble.dir = Some(dir);
                    return Ok(pebble);
                }
                Err(e) => {
                    pebble.stop_processes();
                    attempts.failed(e);
                }
            }
        }
        Err(attempts.into_error("pebble"))
    }

    async fn launch(
        &mut self,
        options: &PebbleOptions,
        work: &Path,
        pebble_exe: &Path,
        chall_exe: &Path,
    ) -> Result<()> {
        let p = self.ports;
        let config = json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{}", p.acme),
                "managementListenAddress": format!("127.0.0.1:{}", p.management),
                "certificate": work.join("tls-server-cert.pem"),
                "privateKey": work.join("tls-server-key.pem"),
                "httpPort": p.http01,
                "tlsPort": p.tls_alpn,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": options.eab_required,
                "externalAccountMACKeys": options.eab_mac_keys,
            }
        });
        let config_path = work.join("pebble-config.json");
        fs::write(&config_path, serde_json::to_vec_pretty(&config)?)
            .with_context(|| format!("writing {}", config_path.display()))?;

        let mut chall = Command::new(chall_exe);
        chall
            .arg("-management")
            .arg(format!("127.0.0.1:{}", p.chall_management))
            .arg("-dns01")
            .arg(format!("127.0.0.1:{}", p.dns))
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""]);
        let chall_log = work.join("challtestsrv.log");
        self.spawn("challtestsrv", chall, chall_exe, &chall_log, options)?;

        let mut pebble = Command::new(pebble_exe);
        pebble
            .arg("-config")
            .arg(&config_path)
            .arg("-dnsserver")
            .arg(&self.dns_server)
            .arg("-strict=false");
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("PEBBLE_") {
                pebble.env_remove(k);
            }
        }
        pebble.envs(options.env());
        let pebble_log = work.join("pebble.log");
        self.spawn("pebble", pebble, pebble_exe, &pebble_log, options)?;
        self.wait_ready().await
    }

    fn spawn(
        &mut self,
        name: &'static str,
        cmd: Command,
        exe: &Path,
        log: &Path,
        options: &PebbleOptions,
    ) -> Result<()> {
        let process = if options.detached {
            ServerProcess::spawn_detached(name, cmd, log)
        } else {
            ServerProcess::spawn(name, cmd, log)
        }
        .with_context(|| format!("starting {}", exe.display()))?;
        self.processes.push(Spawned {
            name,
            pid: process.pid().context("just started")?,
            exe: exe.to_path_buf(),
            process: Some(process),
        });
        Ok(())
    }

    /// Until Pebble's directory and roots and challtestsrv's management API answer, every
    /// process watched for an early exit.
    async fn wait_ready(&self) -> Result<()> {
        let dir_url = self.directory_url();
        let roots_url = format!("{}/roots/0", self.management_url());
        let chall_url = self.challtestsrv_url();
        let servers: Vec<&ServerProcess> = self
            .processes
            .iter()
            .filter_map(|p| p.process.as_ref())
            .collect();
        let last = Mutex::new(String::from("no check made"));
        let (this, urls, last_ref) = (self, (&dir_url, &roots_url, &chall_url), &last);
        ServerProcess::wait_all_ready(&servers, "answer", READY_DEADLINE, move || async move {
            match this.all_answer(urls.0, urls.1, urls.2).await {
                Ok(()) => true,
                Err(e) => {
                    *last_ref.lock().unwrap_or_else(PoisonError::into_inner) = format!("{e:#}");
                    false
                }
            }
        })
        .await
        .map_err(|e| {
            let last = last.lock().unwrap_or_else(PoisonError::into_inner);
            e.context(format!("pebble did not become ready (last check: {last})"))
        })
    }

    async fn all_answer(&self, dir_url: &str, roots_url: &str, chall_url: &str) -> Result<()> {
        let short = Duration::from_secs(2);
        let resp = self.client.get(dir_url).timeout(short).send().await?;
        if !resp.status().is_success() {
            bail!("{dir_url}: HTTP {}", resp.status());
        }
        let resp = self.client.get(roots_url).timeout(short).send().await?;
        if !resp.status().is_success() {
            bail!("{roots_url}: HTTP {}", resp.status());
        }
        // Any HTTP answer means the management API listens.
        self.client.get(chall_url).timeout(short).send().await?;
        Ok(())
    }

    fn stop_processes(&mut self) {
        // Pebble first, so it does not log DNS errors while challtestsrv goes away.
        for p in self.processes.iter_mut().rev() {
            p.process.take();
        }
        self.processes.clear();
    }

    /// ACME directory URL, `https://localhost:<port>/dir`.
    pub fn directory_url(&self) -> String {
        format!("https://localhost:{}/dir", self.ports.acme)
    }

    /// PEM file of the CA that signed Pebble's HTTPS certificate: the trust anchor for the
    /// ACME endpoint (`certfleet --ca-root <this>`). Not the root issued certificates chain to.
    pub fn tls_root_pem_path(&self) -> &Path {
        &self.tls_root
    }

    /// The port Pebble connects to for http-01 validation (on 127.0.0.1: challtestsrv's DNS
    /// answers 127.0.0.1 for every name). Nothing listens there until a test does.
    pub fn http01_port(&self) -> u16 {
        self.ports.http01
    }

    /// The port Pebble connects to for tls-alpn-01 validation.
    pub fn tls_alpn01_port(&self) -> u16 {
        self.ports.tls_alpn
    }

    /// Pebble's management API, `https://localhost:<port>` (same TLS root as the ACME API).
    pub fn management_url(&self) -> String {
        format!("https://localhost:{}", self.ports.management)
    }

    /// challtestsrv's management API, `http://127.0.0.1:<port>`.
    pub fn challtestsrv_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.chall_management)
    }

    /// The DNS server Pebble resolves with (`host:port`; challtestsrv's unless overridden).
    pub fn dns_server(&self) -> &str {
        &self.dns_server
    }

    /// The TXT values the DNS server Pebble resolves with answers for `name` (`dig`, no
    /// recursion): what challtestsrv serves, unless the server was overridden.
    pub fn served_txt(&self, name: &str) -> Result<Vec<String>> {
        let server = self
            .dns_server
            .parse()
            .with_context(|| format!("Pebble's DNS server {:?}", self.dns_server))?;
        crate::dig::txt(server, name)
    }

    /// Directory holding the configuration, TLS files and logs (`pebble.log`,
    /// `challtestsrv.log`).
    pub fn work_dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map(WorkDir::path)
            .unwrap_or_else(|| Path::new("/nonexistent"))
    }

    /// A reqwest client trusting [`Pebble::tls_root_pem_path`] only (no proxy).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The processes started (challtestsrv, then pebble).
    pub fn processes(&self) -> &[Spawned] {
        &self.processes
    }

    /// The last `lines` lines of Pebble's log.
    pub fn pebble_log_tail(&self, lines: usize) -> String {
        tail_file(&self.work_dir().join("pebble.log"), lines)
    }

    async fn get_text(&self, url: &str) -> Result<(reqwest::StatusCode, String)> {
        let resp = self
            .client
            .get(url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .with_context(|| format!("reading {url}"))?;
        Ok((status, body))
    }

    /// PEM of every issuing root: `/roots/0`, `/roots/1`, … until 404. Index 0 is the default
    /// chain's root; the others exist with `PEBBLE_ALTERNATE_ROOTS`. New at every start.
    pub async fn issuing_roots(&self) -> Result<Vec<String>> {
        self.numbered_pems("roots").await
    }

    /// PEM of every intermediate: `/intermediates/0`, … until 404.
    pub async fn intermediates(&self) -> Result<Vec<String>> {
        self.numbered_pems("intermediates").await
    }

    async fn numbered_pems(&self, what: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for i in 0..MAX_ROOTS {
            let url = format!("{}/{what}/{i}", self.management_url());
            let (status, body) = self.get_text(&url).await?;
            if status == reqwest::StatusCode::NOT_FOUND {
                return Ok(out);
            }
            if !status.is_success() {
                bail!("GET {url}: HTTP {status}: {body}");
            }
            out.push(body);
        }
        bail!("more than {MAX_ROOTS} {what} served by pebble; giving up")
    }

    /// `/cert-status-by-serial/<hex>` of the management API, e.g.
    /// `{"Status":"Revoked","Serial":"…","Reason":1,"RevokedAt":"…","Certificate":"PEM"}`
    /// (`"Status":"Valid"` before revocation). `serial_hex` without `0x`, any case.
    pub async fn cert_status(&self, serial_hex: &str) -> Result<Value> {
        let url = format!(
            "{}/cert-status-by-serial/{}",
            self.management_url(),
            serial_hex.trim_start_matches("0x")
        );
        let (status, body) = self.get_text(&url).await?;
        if !status.is_success() {
            bail!("GET {url}: HTTP {status}: {body}");
        }
        serde_json::from_str(&body).with_context(|| format!("parsing {url}: {body}"))
    }

    /// POSTs a JSON body to challtestsrv's management API (`path` such as `/add-a`).
    pub async fn challtestsrv(&self, path: &str, body: &Value) -> Result<()> {
        let url = format!("{}{path}", self.challtestsrv_url());
        let resp = self
            .client
            .post(&url)
            .json(body)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            bail!("POST {url}: HTTP {status}: {text}");
        }
        Ok(())
    }

    /// Makes challtestsrv's DNS answer a TXT record (`host` such as
    /// `_acme-challenge.a.test`; the trailing dot is added if missing).
    pub async fn set_txt(&self, host: &str, value: &str) -> Result<()> {
        self.challtestsrv("/set-txt", &json!({"host": fqdn(host), "value": value}))
            .await
    }

    /// Removes the TXT records of `host`.
    pub async fn clear_txt(&self, host: &str) -> Result<()> {
        self.challtestsrv("/clear-txt", &json!({"host": fqdn(host)}))
            .await
    }

    /// Leaves the processes running and the work directory in place, and returns what is
    /// needed to find and stop them later ([`PebbleState::stop`]). Use with
    /// [`PebbleOptions::detached`].
    pub fn detach(mut self) -> PebbleState {
        let processes = self
            .processes
            .iter_mut()
            .map(|p| {
                if let Some(process) = p.process.take() {
                    process.release();
                }
                ProcessRecord {
                    name: p.name.to_owned(),
                    pid: p.pid,
                    exe: p.exe.clone(),
                }
            })
            .collect();
        let work_dir = match self.dir.take() {
            Some(WorkDir::Temp(t)) => t.keep(),
            Some(WorkDir::Kept(p)) => p,
            None => PathBuf::new(),
        };
        PebbleState {
            directory_url: self.directory_url(),
            management_url: self.management_url(),
            challtestsrv_url: self.challtestsrv_url(),
            tls_root_pem: self.tls_root.clone(),
            http01_port: self.ports.http01,
            tls_alpn01_port: self.ports.tls_alpn,
            dns_server: self.dns_server.clone(),
            work_dir,
            processes,
        }
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop_processes();
    }
}

fn fqdn(host: &str) -> String {
    if host.ends_with('.') {
        host.to_owned()
    } else {
        format!("{host}.")
    }
}

/// Canonical path of a binary on PATH.
fn resolve_binary(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate
                .canonicalize()
                .with_context(|| format!("resolving {}", candidate.display()));
        }
    }
    bail!("`{name}` not found on PATH; install it with: apt-get install -y pebble")
}

/// reqwest client that trusts only `root_pem`, ignores proxy settings.
fn http_client(root_pem: &Path) -> Result<reqwest::Client> {
    let pem = fs::read(root_pem).with_context(|| format!("reading {}", root_pem.display()))?;
    let root = reqwest::Certificate::from_pem(&pem).context("parsing the test TLS root")?;
    reqwest::Client::builder()
        .tls_certs_only([root])
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .build()
        .context("building an HTTPS client")
}

/// Writes `tls-root.pem` (a fresh CA), `tls-server-cert.pem` and `tls-server-key.pem`
/// (for `localhost` and 127.0.0.1, signed by that CA); returns the root's path.
fn write_tls_certs(dir: &Path) -> Result<PathBuf> {
    let ca_key = KeyPair::generate().context("generating the TLS CA key")?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!("certfleet test TLS root {:08x}", rand_u32()),
    );
    ca_params.distinguished_name = dn;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let srv_key = KeyPair::generate().context("generating the TLS server key")?;
    let mut srv_params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".into()])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "localhost");
    srv_params.distinguished_name = dn;
    srv_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    srv_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let srv_cert = srv_params.signed_by(&srv_key, &issuer)?;

    let root = dir.join("tls-root.pem");
    fs::write(&root, ca_cert.pem())?;
    fs::write(dir.join("tls-server-cert.pem"), srv_cert.pem())?;
    fs::write(dir.join("tls-server-key.pem"), srv_key.serialize_pem())?;
    Ok(root)
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    // ring's SystemRandom via rcgen is not exposed; /dev/urandom is fine for a label.
    if let Ok(mut f) = File::open("/dev/urandom") {
        let _ = io::Read::read_exact(&mut f, &mut b);
    }
    u32::from_le_bytes(b) ^ std::process::id()
}
