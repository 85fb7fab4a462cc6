//! A private PostgreSQL cluster for tests, xtask and benchmarks.
//!
//! [`Postgres::start`] runs `initdb` into a temporary directory (password authentication,
//! scram-sha-256, for one superuser), then runs `postgres` itself as a [`ServerProcess`] on
//! 127.0.0.1 at a port picked at run time (Unix sockets only inside the temporary directory;
//! fresh ports after a clash), ready once `pg_isready` says it accepts connections (a
//! readiness check, not a sleep), killed when dropped. PostgreSQL refuses to run as root: as
//! root, every server command runs as the `postgres` user, which then owns the temporary
//! directory.
//!
//! Debian's binaries (`/usr/lib/postgresql/<version>/bin`) are preferred over whatever
//! `initdb` is on `PATH`.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::server_process::{ServerProcess, StartAttempts};

/// The superuser made by `initdb`.
pub const PG_USER: &str = "certfleet";
/// Its password (a test cluster on loopback only; never reused elsewhere).
pub const PG_PASSWORD: &str = "pg-test-secret-7f3a";
/// How long the server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Where `initdb`, `postgres`, `pg_isready` and `psql` are: Debian's newest version first,
/// then `PATH`.
pub fn postgres_bin_dir() -> Option<PathBuf> {
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").is_file() && bin.join("postgres").is_file())
        .collect();
    debian.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    if let Some(newest) = debian.pop() {
        return Some(newest);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .find(|d| d.join("initdb").is_file() && d.join("postgres").is_file())
}

/// Whether PostgreSQL's server binaries are installed; like [`crate::require_tool`], a
/// missing install skips locally (with a message) and fails under CI.
pub fn require_postgres() -> bool {
    if postgres_bin_dir().is_some() {
        return true;
    }
    if crate::in_ci() {
        panic!(
            "PostgreSQL (initdb, postgres) is not installed (CI is set, so this test may not \
             skip); install it with: apt-get install -y postgresql"
        );
    }
    eprintln!(
        "SKIPPED: PostgreSQL (initdb, postgres) is not installed; install it with: apt-get \
         install -y postgresql"
    );
    false
}

mod client_certs;
pub use client_certs::{ClientCa, untrusted_client_cert};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// The `postgres` user's uid and gid (the server's when we are root).
fn postgres_user() -> Result<(u32, u32)> {
    // SAFETY: getpwnam with a NUL-terminated name; the record is read before any other
    // getpw* call could overwrite it.
    let pw = unsafe { libc::getpwnam(c"postgres".as_ptr()) };
    if pw.is_null() {
        bail!("no postgres user to run PostgreSQL as (apt-get install -y postgresql)");
    }
    // SAFETY: non-null, points at libc's static passwd record.
    let pw = unsafe { &*pw };
    Ok((pw.pw_uid, pw.pw_gid))
}

/// A running private cluster; stopped and removed when dropped.
#[derive(Debug)]
pub struct Postgres {
    // Dropped first: the server goes before its directory.
    server: Option<ServerProcess>,
    dir: TempDir,
    bin: PathBuf,
    port: u16,
}

impl Postgres {
    /// Creates and starts a cluster (blocking; a few seconds).
    pub fn start() -> Result<Postgres> {
        let bin = postgres_bin_dir()
            .context("PostgreSQL is not installed (apt-get install -y postgresql)")?;
        let dir = tempfile::Builder::new()
            .prefix("certfleet-pg-")
            .tempdir()
            .context("creating the PostgreSQL directory")?;
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, PG_PASSWORD).context("writing the password file")?;
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .context("running chown")?;
            if !status.success() {
                bail!(
                    "chown of {} to the postgres user failed",
                    dir.path().display()
                );
            }
        }
        let mut pg = Postgres {
            server: None,
            dir,
            bin,
            port: 0,
        };
        let data = pg.data_dir();
        let mut initdb = pg.server_command("initdb");
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "--auth=scram-sha-256",
                "--username",
                PG_USER,
                "--encoding=UTF8",
            ])
            .arg("--no-locale")
            .arg(format!("--pwfile={}", pwfile.display()));
        crate::run_output(&mut initdb).context("initdb")?;
        let _ = std::fs::remove_file(&pwfile);
        let mut attempts = StartAttempts::default();
        while attempts.another() {
            pg.port = crate::free_tcp_port()?;
            match pg.launch() {
                Ok(server) => {
                    pg.server = Some(server);
                    return Ok(pg);
                }
                Err(e) => attempts.failed(e),
            }
        }
        Err(attempts.into_error("PostgreSQL"))
    }

    /// Runs `postgres` on `self.port` and waits until it accepts connections.
    fn launch(&self) -> Result<ServerProcess> {
        let mut cmd = Command::new(self.bin.join("postgres"));
        cmd.arg("-D")
            .arg(self.data_dir())
            .args(["-p", &self.port.to_string(), "-h", "127.0.0.1", "-k"])
            .arg(self.dir.path())
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=300"])
            .args(["-c", "shared_buffers=64MB"])
            .current_dir(self.dir.path());
        if is_root() {
            let (uid, gid) = postgres_user()?;
            cmd.uid(uid).gid(gid);
        }
        let server = ServerProcess::spawn("PostgreSQL", cmd, &self.log_path())?;
        let mut isready = Command::new(self.bin.join("pg_isready"));
        isready
            .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", PG_USER, "-d", "postgres", "-t", "2"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        server.wait_ready_blocking(
            &format!("accept connections on port {}", self.port),
            READY_TIMEOUT,
            || isready.status().is_ok_and(|s| s.success()),
        )?;
        Ok(server)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A server tool (`initdb`) run as the `postgres` user when we are root.
    fn server_command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        cmd.stdin(Stdio::null()).current_dir(self.dir.path());
        cmd
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://certfleet:…@127.0.0.1:PORT/DB?sslmode=disable`.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{}/{database}?sslmode=disable",
            self.port
        )
    }

    /// The same URL without the password (it then comes from `PGPASSWORD` or a file).
    pub fn url_without_password(&self, database: &str) -> String {
        format!(
            "postgres://{PG_USER}@127.0.0.1:{}/{database}?sslmode=disable",
            self.port
        )
    }

    /// Runs SQL with `psql` as the superuser on `database`; returns its output.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String> {
        let mut psql = Command::new(self.bin.join("psql"));
        psql.args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1"])
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                PG_USER,
            ])
            .args(["-d", database, "-c", sql])
            .env("PGPASSWORD", PG_PASSWORD);
        crate::run_output(&mut psql).map(|out| out.trim().to_owned())
    }

    /// Creates an empty database.
    pub fn create_database(&self, name: &str) -> Result<()> {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""))
            .map(drop)
    }

    /// The data directory's parent (kept for the cluster's life).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Postgres {
    /// Turns TLS on (`ssl = on`, reloaded) with a server certificate for `names` (DNS names
    /// or IP addresses) signed by a fresh CA; returns the CA's PEM path (the `sslrootcert`).
    pub fn enable_tls(&self, names: &[&str]) -> Result<PathBuf> {
        let (ca_pem, issuer) = new_ca("certfleet test PostgreSQL CA")?;
        let key = rcgen::KeyPair::generate().context("server key")?;
        let mut params = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            names.first().copied().unwrap_or("db"),
        );
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &issuer)?;
        let data = self.data_dir();
        let (crt, kf) = (data.join("server.crt"), data.join("server.key"));
        std::fs::write(&crt, cert.pem())?;
        std::fs::write(&kf, key.serialize_pem())?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&kf, std::fs::Permissions::from_mode(0o600))?;
        if is_root() {
            let ok = Command::new("chown")
                .arg("postgres:postgres")
                .arg(&crt)
                .arg(&kf)
                .status()
                .context("chown")?
                .success();
            if !ok {
                bail!("chown of the server certificate failed");
            }
        }
        let root = self.dir.path().join("pg-tls-root.pem");
        std::fs::write(&root, ca_pem)?;
        self.psql("postgres", "ALTER SYSTEM SET ssl = on")?;
        self.psql("postgres", "SELECT pg_reload_conf()")?;
        // Bounded: the postmaster reloads within moments.
        for _ in 0..100 {
            if self.psql("postgres", "SHOW ssl")? == "on" {
                return Ok(root);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        bail!(
            "PostgreSQL did not turn TLS on; log:\n{}",
            std::fs::read_to_string(self.log_path()).unwrap_or_default()
        )
    }
}

/// A fresh CA: its PEM and the issuer that signs with it.
pub fn new_ca(name: &str) -> Result<(String, rcgen::Issuer<'static, rcgen::KeyPair>)> {
    let key = rcgen::KeyPair::generate().context("CA key")?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), rcgen::Issuer::new(params, key)))
}
