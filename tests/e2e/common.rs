//! Shared pieces of the end-to-end tests: a Pebble plus a private state directory, and
//! running the `certfleet` binary against them with a time limit.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use certfleet_testenv::{CertInfo, Pebble, PebbleOptions, certfleet_command, require_tool};
use serde_json::Value;
use tempfile::TempDir;

/// No single certfleet invocation may take longer than this.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Checks the tools every Pebble test needs; `false` means skip (never under CI).
pub fn tools_present() -> bool {
    require_tool("pebble", "pebble")
        && require_tool("pebble-challtestsrv", "pebble")
        && require_tool("openssl", "openssl")
}

/// What a finished certfleet run produced.
#[derive(Debug)]
pub struct Run {
    pub args: Vec<String>,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Panics with the full output unless the run exited 0.
    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        assert!(self.status.success(), "expected success:\n{self}");
        self
    }

    /// Panics with the full output unless the run exited 1.
    #[track_caller]
    pub fn assert_exit_1(&self) -> &Self {
        assert_eq!(self.code(), Some(1), "expected exit code 1:\n{self}");
        self
    }

    /// The last non-empty stdout line, trimmed.
    pub fn last_line(&self) -> String {
        self.stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_owned()
    }

    /// stdout parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self}"))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "$ certfleet {}", self.args.join(" "))?;
        writeln!(f, "exit: {} after {:?}", self.status, self.elapsed)?;
        writeln!(f, "--- stdout\n{}", self.stdout)?;
        write!(f, "--- stderr\n{}", self.stderr)
    }
}

/// Runs the certfleet binary with `args`, killing it after [`COMMAND_TIMEOUT`].
pub async fn certfleet<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    certfleet_within(args, COMMAND_TIMEOUT).await
}

/// Runs the certfleet binary with `args`, killing it after `limit`.
pub async fn certfleet_within<I, S>(args: I, limit: Duration) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let shown: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut cmd = tokio::process::Command::from(certfleet_command());
    cmd.args(&args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let started = Instant::now();
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run certfleet: {e}"));
    let pid = child.id();
    let out = match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(out) => out.unwrap_or_else(|e| panic!("cannot run certfleet: {e}")),
        Err(_) => {
            // Dropping the future killed the child (kill_on_drop); say what it was doing.
            panic!(
                "certfleet {} (pid {pid:?}) did not finish within {limit:?}",
                shown.join(" ")
            )
        }
    };
    Run {
        args: shown,
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: started.elapsed(),
    }
}

/// A Pebble and a private directory for state, keys and outputs.
#[derive(Debug)]
pub struct Env {
    pub pebble: Pebble,
    pub tmp: TempDir,
}

impl Env {
    /// Starts Pebble with `options`; `None` when the tools are missing outside CI.
    pub async fn start(options: PebbleOptions) -> Option<Env> {
        if !tools_present() {
            return None;
        }
        let pebble = Pebble::start(options).await.expect("pebble starts");
        let tmp = tempfile::Builder::new()
            .prefix("certfleet-e2e-")
            .tempdir()
            .expect("tempdir");
        Some(Env { pebble, tmp })
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path("state")
    }

    /// Runs certfleet with the global flags for this Pebble and state directory.
    pub async fn run(&self, args: &[&str]) -> Run {
        self.run_at(&self.pebble.directory_url(), args, COMMAND_TIMEOUT)
            .await
    }

    /// Runs certfleet against `directory` (Pebble's, or a proxy's in front of it) with this
    /// state directory and Pebble's TLS root, killing it after `limit`.
    pub async fn run_at(&self, directory: &str, args: &[&str], limit: Duration) -> Run {
        let mut full: Vec<std::ffi::OsString> = vec![
            "--state-dir".into(),
            self.state_dir().into(),
            "--directory".into(),
            directory.into(),
            "--ca-root".into(),
            self.pebble.tls_root_pem_path().into(),
        ];
        full.extend(args.iter().map(Into::into));
        let run = certfleet_within(full, limit).await;
        if !run.status.success() {
            eprintln!(
                "(certfleet failed; pebble log tail:)\n{}",
                self.pebble.pebble_log_tail(20)
            );
        }
        run
    }

    /// `key generate --alg ALG --out <tmp>/<file>`; returns the printed key reference.
    pub async fn generate_key(&self, file: &str, alg: &str) -> String {
        let out = self.path(file);
        let out_s = out.to_string_lossy().into_owned();
        let run = self
            .run(&["key", "generate", "--alg", alg, "--out", &out_s])
            .await;
        run.assert_ok();
        assert!(
            out.is_file(),
            "key generate wrote no {}:\n{run}",
            out.display()
        );
        let key_ref = run.last_line();
        assert!(
            !key_ref.is_empty(),
            "key generate printed no key reference:\n{run}"
        );
        key_ref
    }

    /// Generates an es256 account key as `key_file` and registers it, terms agreed, at the
    /// CA behind `directory_url` (a CA double in front of Pebble); returns the key reference.
    pub async fn register_at(&self, directory_url: &str, key_file: &str) -> String {
        let key = self.generate_key(key_file, "es256").await;
        self.run_at(
            directory_url,
            &["account", "register", "--key", &key, "--agree-tos"],
            COMMAND_TIMEOUT,
        )
        .await
        .assert_ok();
        key
    }

    /// Generates an es256 account key and registers it; returns the key reference.
    pub async fn register_account(&self) -> String {
        let key = self.generate_key("account.pem", "es256").await;
        self.run(&[
            "account",
            "register",
            "--key",
            &key,
            "--contact",
            "mailto:ops@certfleet.test",
            "--agree-tos",
        ])
        .await
        .assert_ok();
        key
    }

    /// The account URL from `account show`.
    pub async fn account_url(&self) -> String {
        let run = self.run(&["account", "show"]).await;
        run.assert_ok();
        let v = run.json();
        v.get("url")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("account show has no string `url`:\n{run}"))
            .to_owned()
    }

    /// `issue` for `names` by http-01 with the built-in server on Pebble's http-01 port,
    /// into `<tmp>/<out>`, plus `extra` arguments.
    pub async fn issue_standalone(&self, names: &[&str], out: &str, extra: &[&str]) -> Run {
        let mut args = self.issue_standalone_args(names, out);
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&args).await
    }

    /// The arguments of [`Env::issue_standalone`] (for runners of their own).
    pub fn issue_standalone_args(&self, names: &[&str], out: &str) -> Vec<String> {
        let mut args = vec!["issue".to_owned()];
        for n in names {
            args.extend(["--name".to_owned(), n.to_string()]);
        }
        args.extend([
            "--challenge".to_owned(),
            "http-01".to_owned(),
            "--http-listen".to_owned(),
            format!("127.0.0.1:{}", self.pebble.http01_port()),
            "--out".to_owned(),
            self.path(out).to_string_lossy().into_owned(),
        ]);
        args
    }

    /// Pebble's default issuing root (`/roots/0`) written to `<tmp>/pebble-root-<i>.pem`.
    pub async fn issuing_root_file(&self, index: usize) -> PathBuf {
        let roots = self.pebble.issuing_roots().await.expect("issuing roots");
        let pem = roots
            .get(index)
            .unwrap_or_else(|| panic!("pebble has no root {index} (has {})", roots.len()));
        let path = self.path(&format!("pebble-root-{index}.pem"));
        std::fs::write(&path, pem).expect("write root");
        path
    }
}

/// A test's random seed: the environment variable `var` when set (to repeat a failing
/// run), else the clock; printed as `<label> seed N` so a failure names it.
pub fn seed(var: &str, label: &str) -> u64 {
    let seed = std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("{label} seed {seed}");
    seed
}

/// Lowercase hex without leading zeros or separators.
pub fn normalize_serial(s: &str) -> String {
    let hex: String = s
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .collect::<String>()
        .to_ascii_lowercase();
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    // Bounded by the (small) size of a test's directory.
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// File mode bits (permission part).
pub fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Checks an `issue` output directory: cert.pem SANs are `names`, chain.pem + cert.pem verify
/// against `root` with openssl, fullchain.pem = cert.pem + chain.pem, meta.json has its
/// fields. Returns the leaf and meta.json.
#[track_caller]
pub fn check_issued(out: &Path, names: &[&str], root: &Path) -> (CertInfo, Value) {
    let cert_path = out.join("cert.pem");
    let chain_path = out.join("chain.pem");
    let leaf = certfleet_testenv::read_cert(&cert_path).expect("cert.pem parses");
    let mut want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(leaf.sorted_dns_names(), want, "leaf SANs");
    assert!(
        leaf.ip_addresses.is_empty(),
        "unexpected IP SANs {:?}",
        leaf.ip_addresses
    );

    let chain = certfleet_testenv::read_certs(&chain_path).expect("chain.pem parses");
    assert!(!chain.is_empty(), "chain.pem holds no certificate");
    assert_eq!(
        leaf.issuer_cn, chain[0].subject_cn,
        "chain.pem must start with the leaf's issuer"
    );
    let full = certfleet_testenv::read_certs(&out.join("fullchain.pem")).expect("fullchain.pem");
    let full_der: Vec<&[u8]> = full.iter().map(|c| c.der.as_slice()).collect();
    let mut expect_der: Vec<&[u8]> = vec![leaf.der.as_slice()];
    expect_der.extend(chain.iter().map(|c| c.der.as_slice()));
    assert_eq!(full_der, expect_der, "fullchain.pem = cert.pem + chain.pem");

    certfleet_testenv::openssl_verify(root, &chain_path, &cert_path)
        .unwrap_or_else(|e| panic!("{e:#}"));

    let meta_text = std::fs::read_to_string(out.join("meta.json")).expect("meta.json exists");
    let meta: Value = serde_json::from_str(&meta_text).expect("meta.json is JSON");
    for field in [
        "names",
        "serial",
        "not_before",
        "not_after",
        "account_url",
        "order_url",
        "key_ref",
        "ari_cert_id",
        "issuer_cn",
        "directory",
    ] {
        assert!(
            meta.get(field).is_some(),
            "meta.json lacks `{field}`: {meta}"
        );
    }
    let meta_names: Vec<&str> = meta["names"]
        .as_array()
        .expect("meta.names is an array")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(meta_names, names, "meta.names");
    assert_eq!(
        normalize_serial(meta["serial"].as_str().expect("meta.serial is a string")),
        normalize_serial(&leaf.serial_hex),
        "meta.serial is the leaf's serial"
    );
    // docs/cli.md does not say which issuer: accept the leaf's issuer or the chain's top
    // issuer (the root CN, which `--preferred-chain` matches).
    let top_issuer = chain.last().and_then(|c| c.issuer_cn.as_deref());
    let meta_issuer = meta["issuer_cn"].as_str();
    assert!(
        meta_issuer.is_some()
            && (meta_issuer == leaf.issuer_cn.as_deref() || meta_issuer == top_issuer),
        "meta.issuer_cn {meta_issuer:?} is neither the leaf's issuer {:?} nor the chain's top \
         issuer {top_issuer:?}",
        leaf.issuer_cn
    );
    for t in ["not_before", "not_after"] {
        let s = meta[t]
            .as_str()
            .unwrap_or_else(|| panic!("meta.{t} is a string"));
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("meta.{t} = {s:?} is not RFC 3339: {e}"));
    }
    (leaf, meta)
}
