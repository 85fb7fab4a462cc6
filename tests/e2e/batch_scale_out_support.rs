//! Scaffolding of the scale-out tests (issue 7): Pebble behind the CA proxy, one account,
//! a private PostgreSQL cluster, and `certfleet batch run --store postgres://…` nodes, each
//! with a state directory of its own (a copy holding the shared account, as separate hosts
//! would have) and its log in a file.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use certfleet_testenv::postgres::{Postgres, require_postgres};
use certfleet_testenv::{CaProxy, CaProxyOptions, PebbleOptions, certfleet_command};

use crate::batch::write_config;
use crate::common::{COMMAND_TIMEOUT, Env, Run};

/// The shared database's name.
pub const DB: &str = "fleet";

pub struct Fleet {
    pub env: Env,
    pub proxy: CaProxy,
    pub pg: Postgres,
    pub url: String,
    pub config: String,
}

impl Fleet {
    /// `None` (skipped with a message) when Pebble or PostgreSQL is missing outside CI.
    pub async fn start(options: CaProxyOptions, extra_config: &str) -> Option<Fleet> {
        if !require_postgres() {
            return None;
        }
        let env = Env::start(PebbleOptions::default().nonce_reject(0).always_valid(true)).await?;
        let proxy = CaProxy::start(&env.pebble, options).await.expect("proxy");
        env.register_at(&proxy.directory_url(), "account.pem").await;
        let pg = tokio::task::spawn_blocking(Postgres::start)
            .await
            .expect("join")
            .expect("PostgreSQL starts");
        pg.create_database(DB).expect("create database");
        let url = pg.url(DB);
        // The fleet's key-encryption key, held by every node (issue 14).
        let kek = env.path("fleet.kek");
        certfleet_keys_write_kek(&kek);
        let extra = extra_config.replacen(
            "[batch]\n",
            &format!("[batch]\nkey_encryption_key_file = \"{}\"\n", kek.display()),
            1,
        );
        assert_ne!(extra, extra_config, "the fleet config has a [batch] table");
        let config = write_config(&env, &extra);
        Some(Fleet {
            env,
            proxy,
            pg,
            url,
            config,
        })
    }

    /// Node `i`'s state directory: a copy of the registered one (same account).
    pub fn node_dir(&self, i: usize) -> PathBuf {
        let dir = self.env.path(&format!("node{i}"));
        if !dir.exists() {
            let ok = std::process::Command::new("cp")
                .arg("-a")
                .arg(self.env.state_dir())
                .arg(&dir)
                .status()
                .expect("cp")
                .success();
            assert!(ok, "copying the state directory");
        }
        dir
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        self.env.path(&format!("node{i}.log"))
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log_path(i)).unwrap_or_default()
    }

    /// Starts node `i` as a separate host: in a mount namespace of its own where its state
    /// directory is bind-mounted over the one path every node uses (`<env>/host`), so the
    /// paths other nodes store lead nowhere here — as on separate machines. The pid is
    /// certfleet's (`unshare` and `sh` exec it).
    pub fn spawn_host(&self, i: usize, args: &[&str]) -> tokio::process::Child {
        let host = self.host_path();
        std::fs::create_dir_all(&host).expect("host mount point");
        let node = self.node_dir(i);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .expect("log file");
        let inner = certfleet_command();
        let mut cmd = tokio::process::Command::new("unshare");
        cmd.args(["-m", "--propagation", "private", "sh", "-c"])
            .arg("mount --bind \"$1\" \"$2\" && shift 2 && exec \"$@\"")
            .arg("sh")
            .arg(&node)
            .arg(&host)
            .arg(inner.get_program())
            .arg("--state-dir")
            .arg(&host)
            .args(["--directory", &self.proxy.directory_url(), "--ca-root"])
            .arg(self.env.pebble.tls_root_pem_path())
            .args(["--config", &self.config])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true);
        for (k, v) in inner.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd.spawn().expect("certfleet starts")
    }

    /// The one state-directory path every host uses (each sees its own directory there).
    pub fn host_path(&self) -> PathBuf {
        self.env.path("host")
    }

    /// Starts node `i` on `file` (killed if dropped).
    pub fn spawn_node(&self, i: usize, file: &str, extra: &[&str]) -> tokio::process::Child {
        let log = std::fs::File::create(self.log_path(i)).expect("log file");
        let mut cmd = tokio::process::Command::from(certfleet_command());
        cmd.arg("--state-dir")
            .arg(self.node_dir(i))
            .args(["--directory", &self.proxy.directory_url(), "--ca-root"])
            .arg(self.env.pebble.tls_root_pem_path())
            .args(["--config", &self.config, "batch", "run", file])
            .args(["--store", &self.url])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.try_clone().expect("log"))
            .kill_on_drop(true);
        cmd.spawn().expect("certfleet starts")
    }

    /// A certfleet command with node 0's state directory (e.g. `batch status`).
    pub async fn run(&self, args: &[&str]) -> Run {
        let mut full: Vec<String> = vec![
            "--state-dir".into(),
            self.node_dir(0).display().to_string(),
            "--directory".into(),
            self.proxy.directory_url(),
            "--config".into(),
            self.config.clone(),
        ];
        full.extend(args.iter().map(|s| (*s).to_owned()));
        crate::common::certfleet_within(full, COMMAND_TIMEOUT).await
    }

    /// One value from the shared database.
    pub fn sql(&self, query: &str) -> String {
        self.pg.psql(DB, query).expect("psql")
    }

    /// [`Fleet::sql`], `None` on an error (e.g. before the first node created the schema).
    pub fn try_sql(&self, query: &str) -> Option<String> {
        self.pg.psql(DB, query).ok()
    }

    /// Certificates in node `i`'s output directory.
    pub fn certs_of(&self, i: usize) -> usize {
        std::fs::read_dir(self.node_dir(i).join("certs")).map_or(0, |d| {
            // Bundle links only, not their versioned directories.
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| !e.file_name().to_string_lossy().starts_with('.'))
            })
            .count()
        })
    }

    /// Asserts every name set was finalized exactly once at the CA.
    #[track_caller]
    pub fn assert_finalized_once(&self, n: usize) {
        self.proxy.stats().assert_finalized_once(n, 0);
    }

    /// The count of jobs leased by the node with process id `pid`.
    pub fn held_by(pid: u32) -> String {
        format!("SELECT count(*) FROM jobs WHERE lease_node LIKE '%/{pid}/%'")
    }

    /// Waits until the node `pid` holds leases and 10 name sets are finalized (the schema
    /// may not exist for a moment).
    pub async fn wait_going(&self, pid: u32) {
        let held = Fleet::held_by(pid);
        assert!(
            wait_until(Duration::from_secs(90), || {
                self.try_sql(&held).is_some_and(|c| c != "0")
                    && self.proxy.stats().finalizations.len() >= 10
            })
            .await,
            "the run got going"
        );
    }

    /// SIGKILLs `killed` and SIGSTOPs `paused` past its lease, until every job it held is
    /// taken over by the others (asserted), then resumes it.
    pub async fn kill_one_and_pause_one(
        &self,
        killed: &mut tokio::process::Child,
        paused: &tokio::process::Child,
    ) {
        let held = Fleet::held_by(paused.id().expect("pid"));
        killed.start_kill().expect("SIGKILL");
        signal(paused, libc::SIGSTOP);
        let taken_over = wait_until(Duration::from_secs(90), || self.sql(&held) == "0").await;
        signal(paused, libc::SIGCONT);
        assert!(taken_over, "the paused node's jobs were taken over");
    }
}

/// Waits for a node to exit; returns its exit code.
pub async fn wait_exit(child: &mut tokio::process::Child, limit: Duration) -> Option<i32> {
    tokio::time::timeout(limit, child.wait())
        .await
        .expect("node finishes in time")
        .expect("status")
        .code()
}

/// Polls `cond` every 50 ms until it holds or `limit` passes; returns whether it held.
pub async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

/// Sends `signal` to a child process.
pub fn signal(child: &tokio::process::Child, signal: libc::c_int) {
    let pid = child.id().expect("running") as libc::pid_t;
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal})");
}

/// Writes a fresh key-encryption key file with mode 0600.
fn certfleet_keys_write_kek(path: &std::path::Path) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut bytes = [0u8; 32];
    getrandom_fill(&mut bytes);
    let line: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .expect("kek file");
    writeln!(f, "{line}").expect("write kek");
}

fn getrandom_fill(buf: &mut [u8]) {
    use std::io::Read as _;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .expect("/dev/urandom");
}
