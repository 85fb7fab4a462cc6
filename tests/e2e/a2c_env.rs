//! An acme2certifier (the second, independent ACME server) with a BIND primary for
//! `corp.test` as its resolver, and a certfleet state directory per account.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use certfleet_testenv::{A2c, A2cOptions, Bind, BindOptions, BindZone, require_a2c, require_tool};
use tempfile::TempDir;

use crate::common::{COMMAND_TIMEOUT, Run, certfleet_within};

pub struct A2cEnv {
    pub a2c: A2c,
    pub bind: Bind,
    pub dir: TempDir,
    /// Where acme2certifier fetches http-01 responses.
    pub http01_port: u16,
}

impl A2cEnv {
    /// `None` means skip (the tools are missing and CI is not set).
    pub async fn start(configure: impl FnOnce(&mut A2cOptions)) -> Option<A2cEnv> {
        if !(require_a2c()
            && require_tool("named", "bind9")
            && require_tool("nsupdate", "bind9-dnsutils")
            && require_tool("openssl", "openssl"))
        {
            return None;
        }
        let bind = Bind::start(BindOptions {
            zones: vec![BindZone::new("corp.test").record("* IN A 127.0.0.1")],
            ..BindOptions::default()
        })
        .await
        .expect("BIND starts");
        let http01 = certfleet_testenv::free_tcp_port().expect("port");
        let mut options = A2cOptions::new(bind.primary().port(), http01);
        configure(&mut options);
        let a2c = A2c::start(options).await.expect("acme2certifier starts");
        let dir = tempfile::tempdir().expect("tempdir");
        Some(A2cEnv {
            a2c,
            bind,
            dir,
            http01_port: http01,
        })
    }

    /// A config file: the rfc2136 plugin and the propagation checker on this BIND.
    pub fn config(&self) -> String {
        let primary = self.bind.primary();
        let text = format!(
            "[dns01]\nplugin_dirs = [\"{}\"]\n[dns01.propagation]\ncheck = true\ntimeout_secs = 30\n\
         interval_millis = 200\nquery_timeout_millis = 1000\ndiscovery_resolvers = [\"{primary}\"]\n\
         nameserver_addresses = {{ {} }}\n\
         [plugins.rfc2136]\nserver = \"{primary}\"\nkey_file = \"{}\"\n",
            certfleet_testenv::plugin_dir().display(),
            self.bind
                .nameserver_addresses()
                .into_iter()
                .map(|(host, addr)| format!("\"{host}\" = [\"{addr}\"]"))
                .collect::<Vec<_>>()
                .join(", "),
            self.bind.key_file("acme-key").expect("key").display(),
        );
        let path = self.path("certfleet.toml");
        std::fs::write(&path, text).expect("config");
        path.to_string_lossy().into_owned()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Runs certfleet with the state directory `state` (one per account).
    pub async fn run(&self, state: &str, args: &[&str]) -> Run {
        self.run_env(state, args, &[]).await
    }

    /// [`Self::run`] with extra environment variables (e.g. a SoftHSM's configuration).
    pub async fn run_env(&self, state: &str, args: &[&str], vars: &[(OsString, OsString)]) -> Run {
        let mut full: Vec<std::ffi::OsString> = vec![
            "--state-dir".into(),
            self.path(state).into(),
            "--directory".into(),
            self.a2c.directory_url().into(),
            "--ca-root".into(),
            self.a2c.tls_root_pem_path().into(),
        ];
        full.extend(args.iter().map(Into::into));
        let run = if vars.is_empty() {
            certfleet_within(full, COMMAND_TIMEOUT).await
        } else {
            certfleet_with_env(full, vars).await
        };
        if !run.status.success() {
            eprintln!(
                "(certfleet failed; acme2certifier log tail:)\n{}",
                self.a2c.log_tail(30)
            );
        }
        run
    }

    /// Generates an account key and registers it; returns the key reference.
    pub async fn register(&self, state: &str, alg: &str) -> String {
        let key = self.path(&format!("{state}-account-{alg}.pem"));
        let key_s = key.to_string_lossy().into_owned();
        let run = self
            .run(state, &["key", "generate", "--alg", alg, "--out", &key_s])
            .await;
        run.assert_ok();
        let key_ref = run.last_line();
        self.run(
            state,
            &["account", "register", "--key", &key_ref, "--agree-tos"],
        )
        .await
        .assert_ok();
        key_ref
    }

    /// Publishes TXT records in `corp.test` with nsupdate (TSIG key `acme-key`).
    pub fn publish(&self, records: &[(String, String)]) {
        let primary = self.bind.primary();
        let mut script = format!(
            "server {} {}\nzone corp.test\n",
            primary.ip(),
            primary.port()
        );
        for (name, value) in records {
            script.push_str(&format!("update add {name}. 300 IN TXT \"{value}\"\n"));
        }
        script.push_str("send\n");
        let key = self.bind.key_file("acme-key").expect("key file");
        nsupdate(key, &script);
    }
}

fn nsupdate(key: &Path, script: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("nsupdate")
        .arg("-k")
        .arg(key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("nsupdate");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("nsupdate");
    assert!(
        out.status.success(),
        "nsupdate failed: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn certfleet_with_env(args: Vec<OsString>, vars: &[(OsString, OsString)]) -> Run {
    let mut cmd = tokio::process::Command::from(certfleet_testenv::certfleet_command());
    cmd.args(&args)
        .envs(vars.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let started = std::time::Instant::now();
    let out = tokio::time::timeout(COMMAND_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("certfleet {args:?} timed out"))
        .expect("run certfleet");
    Run {
        args: args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: started.elapsed(),
    }
}
