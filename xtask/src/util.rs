//! Paths, commands and Debian packages shared by the tasks.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// What the tests and the demo need, with the Debian package providing it: a binary on
/// PATH, `pkg-config:NAME` (a library pkg-config knows, for building) or `lib:FILE` (a
/// shared library the dynamic linker finds, for run time).
pub const REQUIRED_TOOLS: &[(&str, &str)] = &[
    ("pebble", "pebble"),
    ("pebble-challtestsrv", "pebble"),
    ("openssl", "openssl"),
    ("named", "bind9"),
    ("tsig-keygen", "bind9"),
    ("named-checkconf", "bind9-utils"),
    ("dig", "bind9-dnsutils"),
    ("nsupdate", "bind9-dnsutils"),
    // Hardware keys: SoftHSM2 and a software TPM for the tests, the TSS headers and
    // pkg-config to build the TPM backend, the swtpm TCTI it loads at run time.
    ("softhsm2-util", "softhsm2"),
    ("swtpm", "swtpm"),
    ("swtpm_ioctl", "swtpm-tools"),
    ("tpm2_getcap", "tpm2-tools"),
    ("pkg-config", "pkg-config"),
    ("pkg-config:tss2-esys", "libtss2-dev"),
    ("lib:libtss2-tcti-swtpm.so.0", "libtss2-tcti-swtpm0"),
    // Tokens set up by their own tools (tests/e2e/tokens.rs, pins.rs): openCryptoki,
    // tpm2-pkcs11 through tpm2-abrmd on a private D-Bus, p11-kit's proxy, OpenSC's
    // pkcs11-tool and pkcs11-spy, GnuTLS's p11tool.
    ("/usr/sbin/pkcsslotd", "opencryptoki"),
    ("tpm2_ptool", "libtpm2-pkcs11-tools"),
    (
        "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so",
        "libtpm2-pkcs11-1",
    ),
    ("tpm2-abrmd", "tpm2-abrmd"),
    ("lib:libtss2-tcti-tabrmd.so.0", "libtss2-tcti-tabrmd0"),
    ("dbus-daemon", "dbus-daemon"),
    (
        "/usr/lib/x86_64-linux-gnu/p11-kit-proxy.so",
        "p11-kit-modules",
    ),
    ("pkcs11-tool", "opensc"),
    (
        "/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so",
        "opensc-pkcs11",
    ),
    ("p11tool", "gnutls-bin"),
    // DNS-01 API plugins: a real PowerDNS (in /usr/sbin, not on every PATH) with the SQLite
    // backend whose schema the harness loads, and python3 for moto's venv (ensure_moto).
    ("/usr/sbin/pdns_server", "pdns-server"),
    (
        "/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql",
        "pdns-backend-sqlite3",
    ),
    ("python3", "python3"),
    // The enterprise DNS lab (issue 11): Knot and PowerDNS as RFC 2136 primaries, run in a
    // network namespace the tests create.
    ("/usr/sbin/knotd", "knot"),
    ("/usr/sbin/keymgr", "knot"),
    ("pdnsutil", "pdns-server"),
    ("unshare", "util-linux"),
    ("ip", "iproute2"),
    // Scale-out: a private PostgreSQL cluster per test (Debian keeps initdb and pg_ctl in
    // /usr/lib/postgresql/<version>/bin, off PATH).
    ("postgres:initdb", "postgresql"),
    // GSS-TSIG (issue 18): MIT Kerberos headers for libgssapi-sys (krb5-gssapi.pc), libclang
    // for its bindgen build step, and a private KDC realm made with kdb5_util/kadmin.local.
    ("pkg-config:krb5-gssapi", "libkrb5-dev"),
    ("lib:libclang-14.so.1", "libclang1-14"),
    ("/usr/lib/llvm-14/lib/libclang.so", "libclang-dev"),
    ("/usr/sbin/krb5kdc", "krb5-kdc"),
    ("/usr/sbin/kdb5_util", "krb5-kdc"),
    ("/usr/sbin/kadmin.local", "krb5-admin-server"),
    ("kinit", "krb5-user"),
];

/// The workspace root (the directory above xtask/).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// `$CARGO_TARGET_DIR` (made absolute) or `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) if !t.is_empty() => {
            let t = PathBuf::from(t);
            if t.is_absolute() {
                t
            } else {
                std::env::current_dir().map(|cwd| cwd.join(&t)).unwrap_or(t)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// The cargo that runs us (`$CARGO`), else `cargo` from PATH.
pub fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root());
    cmd
}

/// Runs `cmd` with inherited stdio; error if it fails.
pub fn run_cmd(cmd: &mut Command) -> Result<()> {
    let shown = display(cmd);
    let status = cmd
        .status()
        .with_context(|| format!("cannot run `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// Runs `cmd`, returns its stdout; on failure the error carries stderr.
pub fn output(cmd: &mut Command) -> Result<String> {
    let shown = display(cmd);
    let out = cmd
        .output()
        .with_context(|| format!("cannot run `{shown}`"))?;
    if !out.status.success() {
        bail!(
            "`{shown}` failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The command line as a person would type it (for messages).
pub fn display(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(quote));
    parts.join(" ")
}

fn quote(arg: &OsStr) -> String {
    let s = arg.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Prints `==> name`, runs `f`, prints the duration.
pub fn step<T>(name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    println!("==> {name}");
    let started = Instant::now();
    let result = f();
    let took = fmt_duration(started.elapsed());
    match &result {
        Ok(_) => println!("<== {name}: ok ({took})"),
        Err(_) => println!("<== {name}: FAILED ({took})"),
    }
    result.with_context(|| format!("step `{name}` failed"))
}

pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 60.0 {
        format!("{}m{:04.1}s", (s / 60.0).floor(), s % 60.0)
    } else {
        format!("{s:.1}s")
    }
}

/// `id -u` is 0 (falling back to the owner of `/proc/self` if `id` cannot run).
fn is_root() -> bool {
    match Command::new("id").arg("-u").output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim() == "0",
        _ => std::fs::metadata("/proc/self")
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
            .unwrap_or(false),
    }
}

/// Makes sure the Debian packages providing [`REQUIRED_TOOLS`] are installed: as root,
/// installs what is missing (`apt-get update` once, then a non-interactive install); as
/// anyone else, fails with the exact `sudo apt-get install -y …` line.
pub fn ensure_packages() -> Result<()> {
    ensure_tools(REQUIRED_TOOLS)
}

/// [`ensure_packages`] for any list of `(binary, Debian package)` pairs.
pub fn ensure_tools(tools: &[(&str, &str)]) -> Result<()> {
    let mut missing: Vec<&str> = tools
        .iter()
        .filter(|(bin, _)| !present(bin))
        .map(|(_, pkg)| *pkg)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        println!(
            "all required tools present: {}",
            tools.iter().map(|(b, _)| *b).collect::<Vec<_>>().join(", ")
        );
        return Ok(());
    }
    let list = missing.join(" ");
    if !is_root() {
        bail!(
            "missing Debian packages: {list}; install them with:\n  sudo apt-get install -y {list}"
        );
    }
    println!("installing missing Debian packages: {list}");
    run_cmd(Command::new("apt-get").arg("update"))?;
    run_cmd(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y"])
            .args(&missing),
    )?;
    let still: Vec<&str> = tools
        .iter()
        .filter(|(bin, _)| !present(bin))
        .map(|(bin, _)| *bin)
        .collect();
    if !still.is_empty() {
        bail!("still missing after apt-get install: {}", still.join(", "));
    }
    Ok(())
}

/// Whether one entry of a tool list is there (see [`REQUIRED_TOOLS`] for the forms).
fn present(check: &str) -> bool {
    if let Some(name) = check.strip_prefix("pkg-config:") {
        return Command::new("pkg-config")
            .args(["--exists", name])
            .status()
            .is_ok_and(|s| s.success());
    }
    if check == "postgres:initdb" {
        return certfleet_testenv::postgres::postgres_bin_dir().is_some();
    }
    if let Some(file) = check.strip_prefix("lib:") {
        const LIB_DIRS: &[&str] = &[
            "/usr/lib/x86_64-linux-gnu",
            "/usr/lib/aarch64-linux-gnu",
            "/usr/lib64",
            "/usr/lib",
        ];
        if LIB_DIRS.iter().any(|d| Path::new(d).join(file).exists()) {
            return true;
        }
        return Command::new("ldconfig")
            .arg("-p")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(file));
    }
    certfleet_testenv::tool_exists(check)
}

/// A current-thread tokio runtime for the harness's async API.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building a tokio runtime")
}

/// Where moto (the AWS API emulator the Route 53 tests run against) is installed; the test
/// harness (`certfleet_testenv::moto`) looks here first.
pub fn moto_venv() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    Ok(PathBuf::from(home).join(".cache/certfleet-moto-venv"))
}

/// Installs `moto[server]` from PyPI into [`moto_venv`] unless `moto_server` is there
/// already. A Debian python3 needs `python3-venv` for `python3 -m venv`; it is installed
/// (as root) when the first attempt fails.
pub fn ensure_moto() -> Result<()> {
    let venv = moto_venv()?;
    let server = venv.join("bin/moto_server");
    if server.is_file() {
        println!("moto present: {}", server.display());
        return Ok(());
    }
    make_venv(&venv)?;
    // moto 5: its /moto-api/reset-auth and signature checks are what the tests rely on.
    run_cmd(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "moto[server]>=5.0,<6",
    ]))?;
    if !server.is_file() {
        bail!("pip installed moto but {} is missing", server.display());
    }
    Ok(())
}

/// `python3 -m venv --clear VENV`; a Debian python3 needs `python3-venv`, installed (as
/// root) when the first attempt fails.
fn make_venv(venv: &Path) -> Result<()> {
    let make = || {
        run_cmd(
            Command::new("python3")
                .arg("-m")
                .arg("venv")
                .arg("--clear")
                .arg(venv),
        )
    };
    if make().is_ok() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "cannot create {}; install python3-venv: sudo apt-get install -y python3-venv",
            venv.display()
        );
    }
    run_cmd(Command::new("apt-get").arg("update"))?;
    run_cmd(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "python3-venv"]),
    )?;
    make()
}

/// The acme2certifier version the tests run against (tests/src/a2c.rs `A2C_VERSION`).
pub const A2C_VERSION: &str = "0.46.3";

/// Where acme2certifier (the second ACME server of the tests) is installed; the harness
/// (`certfleet_testenv::a2c`) looks here.
pub fn a2c_venv() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    Ok(PathBuf::from(home).join(".cache/certfleet-a2c-venv"))
}

/// Installs acme2certifier [`A2C_VERSION`] from PyPI into [`a2c_venv`] unless that
/// version is there already.
pub fn ensure_a2c() -> Result<()> {
    let venv = a2c_venv()?;
    let python = venv.join("bin/python");
    let installed = python.is_file()
        && Command::new(&python)
            .args([
                "-c",
                &format!(
                    "import importlib.metadata as m, sys; sys.exit(m.version('acme2certifier') != '{A2C_VERSION}')"
                ),
            ])
            .status()
            .is_ok_and(|s| s.success());
    if installed {
        println!("acme2certifier {A2C_VERSION} present: {}", venv.display());
        return Ok(());
    }
    make_venv(&venv)?;
    run_cmd(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        &format!("acme2certifier=={A2C_VERSION}"),
    ]))
}
