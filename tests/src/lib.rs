//! Test environment for certfleet: a real Pebble (plus `pebble-challtestsrv`) and BIND on loopback,
//! a tiny static file server for http-01 webroot tests, a private SoftHSM2 token directory
//! ([`SoftHsm`]) and a software TPM ([`Swtpm`]) for hardware-key tests, helpers to find the
//! `certfleet` binary and to inspect the certificates it writes.
//!
//! Everything listens on 127.0.0.1 on ports picked at run time, so any number of
//! environments can run side by side (and beside someone else's Pebble on this machine).
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! use certfleet_testenv::{Pebble, PebbleOptions};
//! let pebble = Pebble::start(PebbleOptions::default()).await?;
//! println!("directory {}", pebble.directory_url());
//! println!("trust {}", pebble.tls_root_pem_path().display());
//! let roots = pebble.issuing_roots().await?;
//! assert!(!roots.is_empty());
//! # Ok(()) }
//! ```
//!
//! Processes are killed when the [`Pebble`] value is dropped.

pub mod a2c;
mod bind;
mod ca_proxy;
pub mod cloudflare_fake;
mod dig;
pub mod dns_lab;
pub mod kdc;
pub mod loopback_http;
pub mod moto;
mod mount_ns;
mod opencryptoki;
pub mod pdns;
mod pebble;
mod ports;
pub mod postgres;
pub mod server_process;
mod softhsm;
mod state;
mod static_server;
mod swtpm;
mod token_tools;
mod tpm2_pkcs11;
mod tpm_admin;
mod user_http;
mod x509;

use std::env;
use std::path::PathBuf;
use std::process::Command;

pub use a2c::{A2c, A2cOptions, require_a2c};
pub use bind::{Bind, BindExtra, BindOptions, BindStats, BindZone, SecondaryMode};
pub use ca_proxy::{
    CaProxy, CaProxyOptions, JwsPeek, LimitSpec, ProxyLimits, ProxyStats, Refusal, go_duration,
    peek_jws,
};
pub use mount_ns::{PrivateMounts, require_mount_namespaces};
pub use opencryptoki::{
    OPENCRYPTOKI_MODULE, OpenCryptoki, P11KIT_PROXY_MODULE, SOFT_SLOT, require_opencryptoki,
};
pub use pebble::{Pebble, PebbleOptions, Spawned};
pub use ports::{free_tcp_port, free_tcp_udp_port};
pub use softhsm::{SOFTHSM_SO_PIN, SoftHsm, require_softhsm, softhsm_module};
pub use state::{PebbleState, ProcessRecord};
pub use static_server::{ServedRequest, StaticServer};
pub use swtpm::{Swtpm, require_swtpm};
pub use token_tools::{
    PKCS11_SPY_MODULE, SpyLog, ToolTarget, p11tool_keypair, p11tool_private_key_urls,
    pkcs11_tool_keypair,
};
pub use tpm_admin::{admin_persistent_key, tpm_handles_in_use, tpm2_tools};
pub use tpm2_pkcs11::{TPM2_PKCS11_MODULE, Tpm2Pkcs11, require_tpm2_pkcs11};
pub use user_http::UserHttpServer;
pub use x509::{
    CertInfo, openssl_verify, private_key_spki_der, read_cert, read_certs, spki_matches_jwk,
};

/// Installs ring as the process-wide rustls crypto provider (needed before any reqwest
/// client is built). Calling it again is harmless.
pub fn install_crypto_provider() {
    // Err only means a provider is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// True when running under CI (`CI` set to anything but empty, `0` or `false`).
pub fn in_ci() -> bool {
    match env::var("CI") {
        Ok(v) => !(v.is_empty() || v == "0" || v.eq_ignore_ascii_case("false")),
        Err(_) => false,
    }
}

/// True if `name` is an executable found on `PATH` (or an existing path when it has a `/`).
pub fn tool_exists(name: &str) -> bool {
    if name.contains('/') {
        return std::path::Path::new(name).is_file();
    }
    let Some(path) = env::var_os("PATH") else {
        return false;
    };
    env::split_paths(&path).any(|dir| {
        let candidate = dir.join(name);
        candidate
            .metadata()
            .map(|m| {
                use std::os::unix::fs::PermissionsExt;
                m.is_file() && m.permissions().mode() & 0o111 != 0
            })
            .unwrap_or(false)
    })
}

/// Checks that a binary a test needs is installed.
///
/// Returns `true` if it is. If it is missing, returns `false` after printing why the test is
/// skipped — unless `CI` is set, where a missing tool is a failure: it panics with the
/// `apt-get install -y PACKAGE` line that fixes it.
///
/// ```no_run
/// if !certfleet_testenv::require_tool("pebble", "pebble") {
///     return;
/// }
/// ```
pub fn require_tool(name: &str, debian_package: &str) -> bool {
    if tool_exists(name) {
        return true;
    }
    if in_ci() {
        panic!(
            "required tool `{name}` is not installed (CI is set, so this test may not skip); \
             install it with: apt-get install -y {debian_package}"
        );
    }
    eprintln!(
        "SKIPPED: `{name}` is not installed; install it with: apt-get install -y {debian_package}"
    );
    false
}

/// The directory that holds the binaries of the current cargo profile
/// (`…/target[/<triple>]/<profile>`), derived from the running executable.
///
/// Test executables live in `<profile>/deps/`, binaries such as xtask in `<profile>/`.
pub fn profile_dir() -> Option<PathBuf> {
    let exe = env::current_exe().ok()?;
    let mut dir = exe.parent()?.to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent()?.to_path_buf();
    }
    Some(dir)
}

/// Path of the built `certfleet` binary.
///
/// Looks in `$CERTFLEET_BIN` if set, else next to the running executable's cargo profile
/// directory (which follows `CARGO_TARGET_DIR` and `--target` layouts), else in
/// `$CARGO_TARGET_DIR/debug`.
///
/// # Panics
/// If the binary does not exist: "build it first: cargo build -p certfleet-cli".
pub fn certfleet_bin() -> PathBuf {
    if let Some(p) = env::var_os("CERTFLEET_BIN") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "CERTFLEET_BIN={} does not exist; build it first: cargo build -p certfleet-cli",
            p.display()
        );
        return p;
    }
    let mut tried = Vec::new();
    if let Some(dir) = profile_dir() {
        tried.push(dir.join("certfleet"));
    }
    if let Some(t) = env::var_os("CARGO_TARGET_DIR") {
        tried.push(PathBuf::from(t).join("debug").join("certfleet"));
    }
    for p in &tried {
        if p.is_file() {
            return p.clone();
        }
    }
    panic!(
        "certfleet binary not found (looked at {}); build it first: cargo build -p certfleet-cli",
        tried
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// A `Command` for the built `certfleet` binary with a clean, predictable environment:
/// every inherited `CERTFLEET_*` variable is removed so the caller's flags decide, and so
/// are proxy settings (everything the tests talk to is on loopback).
pub fn certfleet_command() -> Command {
    let mut cmd = Command::new(certfleet_bin());
    for (k, _) in env::vars_os() {
        let name = k.to_string_lossy().to_ascii_uppercase();
        if name.starts_with("CERTFLEET_")
            || matches!(
                name.as_str(),
                "HTTP_PROXY" | "HTTPS_PROXY" | "ALL_PROXY" | "NO_PROXY"
            )
        {
            cmd.env_remove(&k);
        }
    }
    cmd
}

/// Sends `req` (`method` `url`, for the error); its body as text, an error unless 2xx.
pub(crate) async fn send_checked(
    req: reqwest::RequestBuilder,
    method: &str,
    url: &str,
) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let resp = req
        .send()
        .await
        .with_context(|| format!("{method} {url}"))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!("{method} {url}: HTTP {status}: {text}");
    }
    Ok(text)
}

/// Runs `cmd` and returns its stdout; a failure carries the exit status and stderr.
pub fn run_output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run {:?}: {e}", cmd.get_program()))?;
    if !out.status.success() {
        anyhow::bail!(
            "{:?} failed ({}): {}{}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Directory holding the DNS-01 plugin libraries (`libcertfleet_plugin_*.so`) of the current
/// cargo profile: `cargo build --workspace` puts them beside the `certfleet` binary.
pub fn plugin_dir() -> PathBuf {
    certfleet_bin()
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default()
}

/// Path of the built plugin `name` (`rfc2136`, `test-panics`, …).
///
/// # Panics
/// If it was not built: "build it first: cargo build --workspace".
pub fn plugin_path(name: &str) -> PathBuf {
    let p = plugin_dir().join(format!("libcertfleet_plugin_{}.so", name.replace('-', "_")));
    assert!(
        p.is_file(),
        "plugin {} not found; build it first: cargo build --workspace",
        p.display()
    );
    p
}

/// Last `max_lines` lines of a text file (lossy), for error messages.
pub fn tail_file(path: &std::path::Path, max_lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(max_lines);
            lines[start..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Writes `text` to `path` with mode 0600 (created that way, never widened).
pub fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}
