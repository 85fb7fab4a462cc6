//! acme2certifier (PyPI, pinned [`A2C_VERSION`]): an independent ACMEv2 server, used in
//! front of enterprise CAs. `cargo xtask ci` installs it into a venv at
//! `~/.cache/certfleet-a2c-venv` when missing. One private server per [`A2c`]: its WSGI app
//! (`a2c/serve.py`) behind TLS on a free loopback port, its openssl CA handler with a root +
//! intermediate made at start, SQLite, its resolver pointed at a test DNS server; polled
//! until the directory answers, killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::ports;
use crate::server_process::{ServerProcess, StartAttempts};

/// The version `cargo xtask ci` installs (xtask/src/util.rs `ensure_a2c` pins the same).
pub const A2C_VERSION: &str = "0.46.3";
const READY_DEADLINE: Duration = Duration::from_secs(40);
const SERVE_PY: &str = include_str!("a2c/serve.py");

/// The venv `cargo xtask ci` installs acme2certifier into.
pub fn a2c_venv() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/certfleet-a2c-venv"))
}

fn a2c_python() -> Option<PathBuf> {
    let v = a2c_venv()?;
    let py = v.join("bin/python");
    let pkg = v.join("lib");
    (py.is_file() && pkg.is_dir()).then_some(py)
}

/// Whether acme2certifier is installed; `false` means skip (never under CI, where it panics).
pub fn require_a2c() -> bool {
    let installed = a2c_python().is_some_and(|py| {
        Command::new(py)
            .args(["-c", "import acme2certifier"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if installed {
        return true;
    }
    let how = format!(
        "cargo xtask ci installs it, or: python3 -m venv ~/.cache/certfleet-a2c-venv && \
         ~/.cache/certfleet-a2c-venv/bin/pip install acme2certifier=={A2C_VERSION}"
    );
    if crate::in_ci() {
        panic!("acme2certifier is not installed (CI is set, so this test may not skip); {how}");
    }
    eprintln!("SKIPPED: acme2certifier is not installed; {how}");
    false
}

/// What to start.
#[derive(Debug, Clone)]
pub struct A2cOptions {
    /// The DNS server its resolver asks (127.0.0.1 on this port).
    pub dns_port: u16,
    /// Where it fetches http-01 responses (port 80 of the name, redirected here).
    pub http01_port: u16,
    /// `[Challenge] dns_persist_01_support` (+ `dns_persist_allow_policy_wildcard`).
    pub dns_persist: bool,
    /// The issuer domain names (`[Directory] caaidentities`).
    pub caa_identities: Vec<String>,
    /// EAB keys `(kid, base64url HMAC key)`; when set, EAB is required.
    pub eab: Vec<(String, String)>,
}

impl A2cOptions {
    pub fn new(dns_port: u16, http01_port: u16) -> A2cOptions {
        A2cOptions {
            dns_port,
            http01_port,
            dns_persist: true,
            caa_identities: vec!["ca.certfleet.test".to_owned()],
            eab: Vec::new(),
        }
    }
}

/// A running acme2certifier; killed on drop.
#[derive(Debug)]
pub struct A2c {
    port: u16,
    process: ServerProcess,
    dir: TempDir,
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("running openssl")?;
    if !out.status.success() {
        bail!(
            "openssl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A root, an intermediate signed by it (the issuing CA) and a TLS certificate for
/// 127.0.0.1 signed by the root (the client trusts the root with `--ca-root`).
fn make_pki(dir: &Path) -> Result<()> {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut root = vec!["req", "-x509"];
    root.extend(ec);
    root.extend([
        "-keyout",
        "root.key",
        "-out",
        "root.pem",
        "-days",
        "30",
        "-subj",
        "/CN=certfleet a2c test root",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &root)?;
    let mut sub = vec!["req"];
    sub.extend(ec);
    sub.extend([
        "-keyout",
        "sub.key",
        "-out",
        "sub.csr",
        "-subj",
        "/CN=certfleet a2c test intermediate",
    ]);
    openssl(dir, &sub)?;
    std::fs::write(
        dir.join("sub.ext"),
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n\
         subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "sub.csr",
            "-CA",
            "root.pem",
            "-CAkey",
            "root.key",
            "-CAcreateserial",
            "-out",
            "sub.pem",
            "-days",
            "30",
            "-extfile",
            "sub.ext",
        ],
    )?;
    let mut tls = vec!["req"];
    tls.extend(ec);
    tls.extend([
        "-keyout",
        "tls.key",
        "-out",
        "tls.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(dir, &tls)?;
    std::fs::write(
        dir.join("tls.ext"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "tls.csr",
            "-CA",
            "root.pem",
            "-CAkey",
            "root.key",
            "-CAcreateserial",
            "-out",
            "tls.pem",
            "-days",
            "30",
            "-extfile",
            "tls.ext",
        ],
    )
}

fn config(dir: &Path, o: &A2cOptions) -> String {
    let d = dir.display();
    let ids = serde_json::to_string(&o.caa_identities).unwrap_or_default();
    let mut cfg = format!(
        "[DEFAULT]\ndebug: True\ndns_server_list: [\"127.0.0.1\"]\n\n\
         [Nonce]\nnonce_check_disable: False\n\n\
         [Account]\ncontact_check_disable: True\n\n\
         [Directory]\ncaaidentities: {ids}\n\n\
         [CAhandler]\nhandler_module: acme2certifier.cahandlers.openssl_ca_handler\n\
         issuing_ca_key: {d}/sub.key\nissuing_ca_cert: {d}/sub.pem\nissuing_ca_crl: {d}/crl.pem\n\
         ca_cert_chain_list: [\"{d}/root.pem\"]\ncert_save_path: {d}/certs\ncert_validity_days: 30\n\n\
         [DBhandler]\nhandler: wsgi\ndbfile: {d}/a2c.db\n\n\
         [Challenge]\ndns_persist_01_support: {p}\ndns_persist_allow_policy_wildcard: {p}\n\n\
         [Order]\ntnauthlist_support: False\n",
        p = if o.dns_persist { "True" } else { "False" },
    );
    if !o.eab.is_empty() {
        cfg.push_str(&format!(
            "\n[EABhandler]\neab_handler_module: acme2certifier.eabhandlers.file_handler\n\
             key_file: {d}/eab.csv\neab_strict_mode: True\n"
        ));
    }
    cfg
}

impl A2c {
    pub async fn start(options: A2cOptions) -> Result<A2c> {
        crate::install_crypto_provider();
        let py = a2c_python().context("acme2certifier is not installed")?;
        let mut attempts = StartAttempts::default();
        while attempts.another() {
            let dir = tempfile::Builder::new()
                .prefix("certfleet-a2c-")
                .tempdir()?;
            make_pki(dir.path())?;
            std::fs::create_dir(dir.path().join("certs"))?;
            if !options.eab.is_empty() {
                let mut csv = String::from("eab_kid,eab_mac\n");
                for (kid, key) in &options.eab {
                    csv.push_str(&format!("{kid},{key}\n"));
                }
                std::fs::write(dir.path().join("eab.csv"), csv)?;
            }
            let cfg = dir.path().join("acme_srv.cfg");
            std::fs::write(&cfg, config(dir.path(), &options))?;
            let serve = dir.path().join("serve.py");
            std::fs::write(&serve, SERVE_PY)?;
            let port = ports::free_tcp_port()?;
            let mut cmd = Command::new(&py);
            cmd.arg(&serve)
                .arg(port.to_string())
                .arg(dir.path().join("tls.pem"))
                .arg(dir.path().join("tls.key"))
                .arg(options.dns_port.to_string())
                .arg(options.http01_port.to_string())
                .env("ACME_SRV_CONFIGFILE", &cfg)
                .current_dir(dir.path());
            let process = ServerProcess::spawn("acme2certifier", cmd, &dir.path().join("a2c.log"))?;
            let a2c = A2c { port, process, dir };
            match a2c.wait_ready().await {
                Ok(()) => return Ok(a2c),
                // The log tail in the error shows a clash ("Address already in use").
                Err(e) => attempts.failed(e),
            }
        }
        Err(attempts.into_error("acme2certifier"))
    }

    async fn wait_ready(&self) -> Result<()> {
        let root = reqwest::Certificate::from_pem(&std::fs::read(self.tls_root_pem_path())?)?;
        let client = reqwest::Client::builder()
            .no_proxy()
            .add_root_certificate(root)
            .timeout(Duration::from_secs(5))
            .build()?;
        let url = self.directory_url();
        let what = format!("answer on port {}", self.port);
        self.process
            .wait_ready(&what, READY_DEADLINE, || {
                let request = client.get(&url).send();
                async move { request.await.is_ok_and(|r| r.status().is_success()) }
            })
            .await
    }

    pub fn directory_url(&self) -> String {
        format!("https://127.0.0.1:{}/directory", self.port)
    }

    /// The root of the server's TLS certificate (pass as `--ca-root`).
    pub fn tls_root_pem_path(&self) -> PathBuf {
        self.dir.path().join("root.pem")
    }

    /// The root the issued certificates chain to.
    pub fn issuing_root_pem_path(&self) -> PathBuf {
        self.dir.path().join("root.pem")
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }

    /// The server's log (debug on: every validation, with the records it read).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.process.log()).unwrap_or_default()
    }
}
