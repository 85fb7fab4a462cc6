//! Tokens beyond certfleet's own: keys made by each token's own tools (pkcs11-tool,
//! p11tool, tpm2_ptool, tpm2_create), URIs pasted as `p11tool` prints them, against the real
//! `certfleet` binary and Pebble. For each set-up: register with one token key, issue with a
//! second token key as the certificate key, check that the leaf certifies that key, revoke
//! with the certificate key; where a TPM is behind it, nothing of ours stays loaded after
//! any command.

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use certfleet_testenv::{
    OPENCRYPTOKI_MODULE, OpenCryptoki, P11KIT_PROXY_MODULE, PebbleOptions, SoftHsm, Swtpm,
    TPM2_PKCS11_MODULE, ToolTarget, Tpm2Pkcs11, admin_persistent_key, p11tool_keypair,
    p11tool_private_key_urls, pkcs11_tool_keypair, read_cert, spki_matches_jwk, tpm_handles_in_use,
};

use crate::common::{Env, Run, check_issued, mode};
use crate::hsm::run_in;

const PIN: &str = "24681357";
const SO_PIN: &str = "13572468";

/// Where certfleet runs for one set-up, and what it must leave behind.
struct Target<'a> {
    env: &'a Env,
    /// `nsenter …` when the token lives in a private mount namespace.
    prefix: Vec<String>,
    vars: Vec<(OsString, OsString)>,
    /// Checked after every command: no transient object or session of ours in the TPM.
    tpm: Option<&'a dyn Fn() -> (usize, usize, usize)>,
}

impl Target<'_> {
    async fn run(&self, args: &[&str]) -> Run {
        let run = run_in(&self.prefix, self.env, args, &self.vars).await;
        if let Some(handles) = self.tpm {
            assert_eq!(
                handles(),
                (0, 0, 0),
                "transient objects, loaded and saved sessions left in the TPM after {args:?}:\n{run}"
            );
        }
        run
    }
}

/// Register, issue with the certificate key, leaf == token key, revoke by certificate key.
/// Returns how many certfleet commands ran.
async fn round_trip(t: &Target<'_>, account: &str, cert_key: &str, name: &str) -> usize {
    t.run(&["account", "register", "--key", account, "--agree-tos"])
        .await
        .assert_ok();
    let out_name = format!("out-{name}");
    let out = t.env.path(&out_name);
    let mut issue = t.env.issue_standalone_args(&[name], &out_name);
    issue.extend(["--key".to_owned(), cert_key.to_owned()]);
    t.run(&issue.iter().map(String::as_str).collect::<Vec<_>>())
        .await
        .assert_ok();
    let root = t.env.issuing_root_file(0).await;
    let (leaf, meta) = check_issued(&out, &[name], &root);
    assert!(
        meta["key_ref"]
            .as_str()
            .is_some_and(|r| r.starts_with("pkcs11:") || r.starts_with("tpm:")),
        "{meta}"
    );
    assert_eq!(
        mode(&out.join("meta.json")),
        0o600,
        "meta.json names a token key"
    );
    assert_eq!(
        mode(&out.join("key.ref")),
        0o600,
        "key.ref names a token key"
    );
    let shown = t.run(&["key", "show", cert_key]).await;
    shown.assert_ok();
    assert!(
        spki_matches_jwk(&leaf.spki_der, &shown.json()["jwk"]).expect("compare"),
        "leaf key != token key {cert_key}"
    );
    let cert = out.join("cert.pem").to_string_lossy().into_owned();
    t.run(&["revoke", "--cert", &cert, "--cert-key", cert_key])
        .await
        .assert_ok();
    let serial = read_cert(&out.join("cert.pem")).expect("cert").serial_hex;
    let status = t.env.pebble.cert_status(&serial).await.expect("status");
    assert_eq!(status["Status"], "Revoked", "{status}");
    4
}

/// `URL` as printed plus the query certfleet needs.
fn with_query(url: &str, module: &Path, pin_file: &Path) -> String {
    format!(
        "{url}?module-path={}&pin-source=file:{}",
        module.display(),
        pin_file.display()
    )
}

/// The URL p11tool printed for `label`.
fn url_for<'a>(urls: &'a [(String, String)], label: &str) -> &'a str {
    urls.iter()
        .find(|(_, l)| l == label)
        .map(|(u, _)| u.as_str())
        .unwrap_or_else(|| panic!("p11tool did not list {label}: {urls:?}"))
}

fn plain(program: &str) -> Command {
    Command::new(program)
}

#[tokio::test]
async fn tokens_softhsm_keys_from_pkcs11_tool_and_p11tool_with_urls_as_p11tool_prints_them() {
    if !certfleet_testenv::require_softhsm()
        || !certfleet_testenv::require_tool("pkcs11-tool", "opensc")
        || !certfleet_testenv::require_tool("p11tool", "gnutls-bin")
    {
        return;
    }
    let Some(env) = Env::start(PebbleOptions::default()).await else {
        return;
    };
    let hsm = SoftHsm::new().expect("softhsm");
    hsm.init_token("admin made", PIN).expect("token");
    let pin_file = hsm.pin_file("pin", PIN).expect("pin file");
    let envs = vec![hsm.env()];
    let tools = ToolTarget {
        make: &plain,
        envs: &envs,
        module: hsm.module_path(),
        token: "admin made",
        pin: PIN,
    };
    pkcs11_tool_keypair(&tools, "EC:prime256v1", "acct", "a1").expect("pkcs11-tool");
    p11tool_keypair(&tools, "ECDSA", "web").expect("p11tool");
    let urls = p11tool_private_key_urls(&tools, false).expect("urls");
    let detailed = p11tool_private_key_urls(&tools, true).expect("detailed urls");
    assert!(
        url_for(&detailed, "web").contains("library-description="),
        "{detailed:?}"
    );
    let t = Target {
        env: &env,
        prefix: Vec::new(),
        vars: envs.clone(),
        tpm: None,
    };
    let account = with_query(url_for(&urls, "acct"), hsm.module_path(), &pin_file);
    let cert_key = with_query(url_for(&detailed, "web"), hsm.module_path(), &pin_file);
    round_trip(&t, &account, &cert_key, "softhsm.certfleet.test").await;
}

#[tokio::test]
async fn tokens_opencryptoki_rsa_directly_and_behind_p11kit_proxy_next_to_softhsm() {
    if !certfleet_testenv::require_opencryptoki()
        || !certfleet_testenv::require_softhsm()
        || !certfleet_testenv::require_tool(P11KIT_PROXY_MODULE, "p11-kit-modules")
        || !certfleet_testenv::require_tool("p11tool", "gnutls-bin")
    {
        return;
    }
    let Some(env) = Env::start(PebbleOptions::default()).await else {
        return;
    };
    let hsm = SoftHsm::new().expect("softhsm");
    hsm.init_token("soft", PIN).expect("softhsm token");
    let softhsm_module = hsm.module_path().to_owned();
    // p11-kit sees exactly these two modules (as Fedora/RHEL register openCryptoki).
    let ock = OpenCryptoki::start_with_p11kit(&[
        ("opencryptoki", Path::new(OPENCRYPTOKI_MODULE)),
        ("softhsm2", &softhsm_module),
    ])
    .expect("openCryptoki");
    ock.init_token("ock", SO_PIN, PIN)
        .expect("init openCryptoki token");
    let pin_file = hsm.pin_file("pin", PIN).expect("pin file");
    let in_ns = |program: &str| ock.command(program);
    let envs = vec![hsm.env()];
    let ock_tools = ToolTarget {
        make: &in_ns,
        envs: &envs,
        module: Path::new(OPENCRYPTOKI_MODULE),
        token: "ock",
        pin: PIN,
    };
    pkcs11_tool_keypair(&ock_tools, "rsa:2048", "acct", "01").expect("ock acct");
    pkcs11_tool_keypair(&ock_tools, "rsa:2048", "web", "02").expect("ock web");
    let urls = p11tool_private_key_urls(&ock_tools, true).expect("ock urls");
    let t = Target {
        env: &env,
        prefix: ock.namespace().prefix(),
        vars: envs.clone(),
        tpm: None,
    };
    let module = Path::new(OPENCRYPTOKI_MODULE);
    let account = with_query(url_for(&urls, "acct"), module, &pin_file);
    let cert_key = with_query(url_for(&urls, "web"), module, &pin_file);
    round_trip(&t, &account, &cert_key, "ock.certfleet.test").await;
    conformance_in_child(&t, &[&account]);

    // Through p11-kit's proxy: the openCryptoki account key and a SoftHSM certificate key,
    // one module path for both, openCryptoki's odd clock in the same slot list.
    let soft_tools = ToolTarget {
        make: &in_ns,
        envs: &envs,
        module: &softhsm_module,
        token: "soft",
        pin: PIN,
    };
    p11tool_keypair(&soft_tools, "ECDSA", "proxied").expect("softhsm key");
    let soft_urls = p11tool_private_key_urls(&soft_tools, false).expect("softhsm urls");
    let proxy = Path::new(P11KIT_PROXY_MODULE);
    let account = with_query(url_for(&urls, "acct"), proxy, &pin_file)
        // The proxy reports its own library info: keep only the token attributes.
        .replace(&library_attributes(url_for(&urls, "acct")), "");
    let cert_key = with_query(url_for(&soft_urls, "proxied"), proxy, &pin_file);
    let env2 = Env::start(PebbleOptions::default())
        .await
        .expect("second pebble");
    let t2 = Target { env: &env2, ..t };
    round_trip(&t2, &account, &cert_key, "proxy.certfleet.test").await;
    conformance_in_child(&t2, &[&account, &cert_key]);
}

/// The `library-…=…;` attributes of a detailed URL (they describe the module, which the
/// proxy replaces by itself).
fn library_attributes(url: &str) -> String {
    url.trim_start_matches("pkcs11:")
        .split(';')
        .filter(|a| a.starts_with("library-"))
        .map(|a| format!("{a};"))
        .collect()
}

#[tokio::test]
async fn tokens_tpm2_pkcs11_through_a_resource_manager_then_straight_to_the_tpm() {
    if !certfleet_testenv::require_tpm2_pkcs11()
        || !certfleet_testenv::require_tool("p11tool", "gnutls-bin")
    {
        return;
    }
    let Some(env) = Env::start(PebbleOptions::default()).await else {
        return;
    };
    let mut tpm = Tpm2Pkcs11::start().expect("tpm2-pkcs11");
    tpm.add_token("tpm tok", PIN, SO_PIN).expect("token");
    tpm.add_key("tpm tok", "ecc256", "acct", PIN).expect("acct");
    tpm.add_key("tpm tok", "ecc256", "web", PIN).expect("web");
    tpm.add_key("tpm tok", "rsa2048", "rsa", PIN).expect("rsa");
    let pin_file = env.path("tpm.pin");
    std::fs::write(&pin_file, PIN).expect("pin file");
    let module = Path::new(TPM2_PKCS11_MODULE);
    let envs = tpm.env_abrmd();
    let tools = ToolTarget {
        make: &plain,
        envs: &envs,
        module,
        token: "tpm tok",
        pin: PIN,
    };
    let urls = p11tool_private_key_urls(&tools, true).expect("urls");
    let account = with_query(url_for(&urls, "acct"), module, &pin_file);
    let cert_key = with_query(url_for(&urls, "web"), module, &pin_file);
    let through_rm = Target {
        env: &env,
        prefix: Vec::new(),
        vars: envs.clone(),
        tpm: None,
    };
    round_trip(&through_rm, &account, &cert_key, "abrmd.certfleet.test").await;
    let rsa = with_query(url_for(&urls, "rsa"), module, &pin_file);
    conformance_in_child(&through_rm, &[&account, &rsa]);

    // No resource manager: whatever a run leaves in the TPM stays there, and swtpm has
    // three object slots. Five runs and more in a row must all work.
    tpm.stop_abrmd();
    let handles = || tpm.handles_in_use().expect("tpm2_getcap");
    assert_eq!(
        handles(),
        (0, 0, 0),
        "left by the runs through the resource manager"
    );
    let direct = Target {
        env: &env,
        prefix: Vec::new(),
        vars: tpm.env_direct(),
        tpm: Some(&handles),
    };
    let mut runs = round_trip(&direct, &account, &cert_key, "direct.certfleet.test").await;
    conformance_in_child(&direct, &[&cert_key, &rsa]);
    for _ in 0..2 {
        let shown = direct.run(&["key", "show", &account]).await;
        shown.assert_ok();
        // One C_GetMechanismList: tpm2-pkcs11 logs no error about unknown mechanisms.
        assert!(!shown.stderr.contains("ERROR"), "{shown}");
        runs += 1;
    }
    // An error path releases the token too, and the error says what the token has (its
    // label matches, its serial does not).
    let wrong_serial = account.replace("serial=0000000000000000", "serial=42");
    let failed = direct.run(&["key", "show", &wrong_serial]).await;
    failed.assert_exit_1();
    assert!(
        failed
            .stderr
            .contains(r#"token "tpm tok": serial is "0000000000000000", the URI says "42""#),
        "{failed}"
    );
    assert!(runs >= 5, "{runs} runs");

    // A wrong PIN file on a TPM token: every wrong PIN counts towards the TPM's
    // dictionary-attack lockout, so three cron runs make one C_Login in total.
    let spy = certfleet_testenv::SpyLog::new(module, &env.path("tpm-spy.log"));
    let wrong_pin = env.path("tpm-wrong.pin");
    std::fs::write(&wrong_pin, "999999\n").expect("pin file");
    let spied = Target {
        env: &env,
        prefix: Vec::new(),
        vars: [tpm.env_direct(), spy.env()].concat(),
        tpm: Some(&handles),
    };
    let wrong = with_query(url_for(&urls, "acct"), &spy.module(), &wrong_pin);
    for run in 1..=3 {
        let failed = spied.run(&["key", "show", &wrong]).await;
        failed.assert_exit_1();
        assert!(failed.stderr.contains("rejected"), "run {run}: {failed}");
        assert_eq!(
            spy.calls("C_Login"),
            1,
            "run {run}: one login attempt in total"
        );
    }

    // SIGTERM while the key is loaded and logged in: the token is still released.
    let status = terminated_while_waiting_for_the_ca(&env, &direct.vars, &account).await;
    assert_eq!(status.code(), Some(143), "exit status after SIGTERM");
    assert_eq!(handles(), (0, 0, 0), "left in the TPM after SIGTERM");
    direct.run(&["key", "show", &account]).await.assert_ok();
}

/// Runs `account register` against a CA that accepts connections and never answers,
/// sends SIGTERM once the key is loaded, and returns the exit status.
async fn terminated_while_waiting_for_the_ca(
    env: &Env,
    vars: &[(OsString, OsString)],
    key: &str,
) -> std::process::ExitStatus {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/dir", silent.local_addr().expect("addr"));
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        // Bounded: the child connects a few times at most before it is terminated.
        for _ in 0..8 {
            match silent.accept().await {
                Ok((conn, _)) => held.push(conn),
                Err(_) => break,
            }
        }
        held.len()
    });
    let mut child = tokio::process::Command::from(certfleet_testenv::certfleet_command())
        .arg("-v")
        .arg("--state-dir")
        .arg(env.path("sigterm-state"))
        .arg("--directory")
        .arg(&url)
        // A plain-HTTP stand-in CA that never answers: allowed explicitly.
        .arg("--insecure-http-directory")
        .args(["account", "register", "--key", key, "--agree-tos"])
        .envs(vars.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run certfleet");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let loaded = tokio::time::timeout(crate::common::COMMAND_TIMEOUT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("PKCS#11 key loaded") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(loaded, Ok(true), "certfleet never loaded the key");
    crate::batch_scale_out_support::signal(&child, libc::SIGTERM);
    let status = tokio::time::timeout(crate::common::COMMAND_TIMEOUT, child.wait())
        .await
        .expect("certfleet ended after SIGTERM")
        .expect("wait");
    holder.abort();
    status
}

#[tokio::test]
async fn tokens_tpm_backend_with_admin_made_null_scheme_keys() {
    if !certfleet_testenv::require_swtpm()
        || !certfleet_testenv::require_tool("tpm2_create", "tpm2-tools")
    {
        return;
    }
    let Some(env) = Env::start(PebbleOptions::default()).await else {
        return;
    };
    let swtpm = Swtpm::start().expect("swtpm");
    let work = env.path("tpm-admin");
    std::fs::create_dir_all(&work).expect("dir");
    let tcti = swtpm.tcti();
    admin_persistent_key(&tcti, &work, "ecc256", None, "0x81000010").expect("ecc256 key");
    admin_persistent_key(&tcti, &work, "rsa2048", None, "0x81000011").expect("rsa2048 key");
    let handles = || tpm_handles_in_use(&tcti, &work).expect("tpm2_getcap");
    let t = Target {
        env: &env,
        prefix: Vec::new(),
        vars: vec![("TSS2_LOG".into(), "all+none".into())],
        tpm: Some(&handles),
    };
    let account = format!("tpm:handle=0x81000010?tcti={tcti}");
    let cert_key = format!("tpm:handle=0x81000011?tcti={tcti}");
    round_trip(&t, &account, &cert_key, "tpm.certfleet.test").await;
}

/// Set in a child process: the key references to run the conformance suite on (JSON).
const CONFORMANCE_ENV: &str = "CERTFLEET_E2E_TOKEN_CONFORMANCE";

/// Runs the key conformance suite on each of `uris` in a child process of this test
/// binary (module environment variables are read at `C_Initialize`, and the token may live
/// in a namespace), then checks what the child released at its end.
fn conformance_in_child(t: &Target<'_>, uris: &[&str]) {
    let exe = std::env::current_exe().expect("current exe");
    let mut cmd = match t.prefix.split_first() {
        Some((program, rest)) => {
            let mut cmd = Command::new(program);
            cmd.args(rest).arg(exe);
            cmd
        }
        None => Command::new(exe),
    };
    let out = cmd
        .args([
            "tokens::tokens_child_conformance",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .envs(t.vars.iter().map(|(k, v)| (k, v)))
        .env(CONFORMANCE_ENV, serde_json::json!(uris).to_string())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("CHILD-RESULT: conformant"),
        "conformance child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if let Some(handles) = t.tpm {
        assert_eq!(
            handles(),
            (0, 0, 0),
            "left in the TPM by the conformance child"
        );
    }
}

/// Child: the key conformance suite on every reference given, then an orderly shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_child_conformance() {
    let Ok(text) = std::env::var(CONFORMANCE_ENV) else {
        return;
    };
    let uris: Vec<String> = serde_json::from_str(&text).expect("child parameters");
    let backend = certfleet_keys_pkcs11::Pkcs11Backend::new();
    for uri in &uris {
        let parsed = certfleet_keys_pkcs11::Pkcs11Uri::parse(uri).expect("uri");
        let key = backend
            .load_uri(&parsed)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        certfleet_keys::conformance::check_signing_key(&*key)
            .await
            .unwrap_or_else(|e| panic!("{uri}: {e}"));
    }
    let report = certfleet_keys_pkcs11::shutdown();
    assert!(report.modules >= 1 && report.logouts >= 1, "{report:?}");
    println!("CHILD-RESULT: conformant");
}
