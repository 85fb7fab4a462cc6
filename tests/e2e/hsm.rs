//! Keys on a PKCS#11 token (SoftHSM2): account and certificate keys generated on the token
//! and used by the real `certfleet` binary against Pebble; rollover from a file key;
//! non-extractable keys; 16 concurrent issuances on one token account key; bad input; PINs
//! never shown.
//!
//! SoftHSM reads `SOFTHSM2_CONF` once per process, so checks that talk to the token from
//! the test itself (attributes, flags, in-process issuance) run in a child process of this
//! test binary with its own environment ([`run_child`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use certfleet_testenv::{PebbleOptions, SoftHsm, certfleet_command, read_cert, spki_matches_jwk};
use serde_json::{Value, json};

use crate::common::{Env, Run, check_issued};

const PIN: &str = "4711";
const TOKEN: &str = "certfleet";
/// Set in a child process: which child check to run and its parameters (JSON).
const CHILD_ENV: &str = "CERTFLEET_E2E_HSM_CHILD";

/// A Pebble, a SoftHSM directory with one initialized token, and a PIN file.
pub struct HsmEnv {
    pub env: Env,
    pub hsm: SoftHsm,
    pub pin_file: PathBuf,
}

impl HsmEnv {
    pub async fn start() -> Option<HsmEnv> {
        if !certfleet_testenv::require_softhsm() {
            return None;
        }
        let env = Env::start(PebbleOptions::default()).await?;
        let hsm = SoftHsm::new().expect("softhsm dir");
        hsm.init_token(TOKEN, PIN).expect("init token");
        let pin_file = hsm.pin_file("pin", PIN).expect("pin file");
        Some(HsmEnv { env, hsm, pin_file })
    }

    /// Runs certfleet against this Pebble and state dir, seeing this SoftHSM's tokens.
    pub async fn run(&self, args: &[&str]) -> Run {
        run_with_env(&self.env, args, &[self.hsm.env()]).await
    }

    /// `key generate --backend pkcs11` on the token; returns the printed reference.
    pub async fn generate(&self, label: &str, alg: &str) -> String {
        let module = self.hsm.module_path().to_string_lossy().into_owned();
        let pin = format!("file:{}", self.pin_file.display());
        let run = self
            .run(&[
                "key",
                "generate",
                "--backend",
                "pkcs11",
                "--alg",
                alg,
                "--module",
                &module,
                "--token",
                TOKEN,
                "--label",
                label,
                "--pin-source",
                &pin,
            ])
            .await;
        run.assert_ok();
        let key_ref = run.last_line();
        assert!(
            key_ref.starts_with("pkcs11:token=certfleet;object="),
            "{run}"
        );
        key_ref
    }

    /// A reference to `object` on the token with a literal PIN (`pin-value`).
    pub fn uri_with_pin_value(&self, object: &str, pin: &str) -> String {
        format!(
            "pkcs11:token={TOKEN};object={object}?module-path={}&pin-value={pin}",
            self.hsm.module_path().display()
        )
    }
}

/// Runs certfleet with the global flags for `env` and extra environment variables.
pub async fn run_with_env(
    env: &Env,
    args: &[&str],
    vars: &[(std::ffi::OsString, std::ffi::OsString)],
) -> Run {
    run_in(&[], env, args, vars).await
}

/// [`run_with_env`] behind a command prefix (e.g. `nsenter -t PID -m --`, to see a token
/// that lives in a private mount namespace).
pub async fn run_in(
    prefix: &[String],
    env: &Env,
    args: &[&str],
    vars: &[(std::ffi::OsString, std::ffi::OsString)],
) -> Run {
    let base = certfleet_command();
    let mut cmd = match prefix.split_first() {
        None => tokio::process::Command::from(base),
        Some((program, rest)) => {
            let mut cmd = tokio::process::Command::new(program);
            cmd.args(rest).arg(base.get_program());
            for (k, v) in base.get_envs() {
                match v {
                    Some(v) => cmd.env(k, v),
                    None => cmd.env_remove(k),
                };
            }
            cmd
        }
    };
    cmd.arg("--state-dir")
        .arg(env.state_dir())
        .arg("--directory")
        .arg(env.pebble.directory_url())
        .arg("--ca-root")
        .arg(env.pebble.tls_root_pem_path())
        .args(args)
        .envs(vars.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let started = std::time::Instant::now();
    let out = tokio::time::timeout(crate::common::COMMAND_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("certfleet {} timed out", args.join(" ")))
        .expect("run certfleet");
    Run {
        args: args.iter().map(|a| a.to_string()).collect(),
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: started.elapsed(),
    }
}

/// Asserts that no file under `dirs` holds private key material: no PEM private key and no
/// key file other than those named (certificates, JSON state and key references only).
pub fn assert_no_private_keys(dirs: &[&Path]) {
    for path in dirs.iter().flat_map(|d| crate::common::files_under(d)) {
        let bytes = std::fs::read(&path).expect("read");
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("PRIVATE KEY"),
            "{} holds a private key",
            path.display()
        );
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        assert!(
            name.ends_with(".json")
                || name.ends_with(".pem")
                || name == "key.ref"
                // Per-certificate writer locks: the holder's pid, host and command.
                || name.ends_with(".lock"),
            "unexpected file {} in the state",
            path.display()
        );
    }
}

/// Runs `check` of this test binary in a child process that sees `hsm`'s tokens, passing
/// `params`; returns the JSON the child printed.
fn run_child(hsm: &SoftHsm, check: &str, params: Value) -> Value {
    let exe = std::env::current_exe().expect("current exe");
    let (k, v) = hsm.env();
    let out = std::process::Command::new(exe)
        .args([
            &format!("hsm::{check}"),
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(k, v)
        .env(CHILD_ENV, params.to_string())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child {check} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("CHILD-RESULT: ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("child {check} printed no result:\n{stdout}"));
    serde_json::from_str(line).expect("child result is JSON")
}

/// The child's parameters, or `None` when this is an ordinary test run.
fn child_params() -> Option<Value> {
    let text = std::env::var(CHILD_ENV).ok()?;
    Some(serde_json::from_str(&text).expect("child parameters"))
}

#[tokio::test]
async fn hsm_account_and_certificate_keys_on_the_token_issue_and_revoke() {
    let Some(h) = HsmEnv::start().await else {
        return;
    };
    let account = h.generate("acct", "es256").await;
    h.run(&["account", "register", "--key", &account, "--agree-tos"])
        .await
        .assert_ok();
    let cert_key = h.generate("web", "es256").await;
    let out = h.env.path("out");
    let listen = format!("127.0.0.1:{}", h.env.pebble.http01_port());
    let out_s = out.to_string_lossy().into_owned();
    let names = ["hsm.certfleet.test", "www.hsm.certfleet.test"];
    h.run(&[
        "issue",
        "--name",
        names[0],
        "--name",
        names[1],
        "--key",
        &cert_key,
        "--challenge",
        "http-01",
        "--http-listen",
        &listen,
        "--out",
        &out_s,
    ])
    .await
    .assert_ok();
    let root = h.env.issuing_root_file(0).await;
    let (leaf, meta) = check_issued(&out, &names, &root);
    assert_eq!(
        meta["key_ref"],
        cert_key.as_str(),
        "meta.json names the token key"
    );
    assert!(
        !out.join("privkey.pem").exists(),
        "no private key file for a token key"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("key.ref"))
            .expect("key.ref")
            .trim(),
        cert_key
    );

    // The leaf certifies exactly the token key.
    let shown = h.run(&["key", "show", &cert_key]).await;
    shown.assert_ok();
    assert!(
        spki_matches_jwk(&leaf.spki_der, &shown.json()["jwk"]).expect("compare"),
        "leaf key != token key"
    );

    // CKA_VALUE of both private keys cannot be read; nothing in the state is a key.
    let probe = run_child(
        &h.hsm,
        "hsm_child_probe_token",
        json!({"module": h.hsm.module_path(), "labels": ["acct", "web"]}),
    );
    for label in ["acct", "web"] {
        let key = &probe["keys"][label];
        assert_eq!(key["value_returned"], false, "{label}: {probe}");
        assert_eq!(key["sensitive"], true, "{label}: {probe}");
        assert_eq!(key["extractable"], false, "{label}: {probe}");
    }
    assert_no_private_keys(&[&h.env.state_dir(), &out]);

    // Revoke, signed by the certificate key on the token.
    let cert = out.join("cert.pem").to_string_lossy().into_owned();
    h.run(&["revoke", "--cert", &cert, "--cert-key", &cert_key])
        .await
        .assert_ok();
    let serial = read_cert(&out.join("cert.pem")).expect("cert").serial_hex;
    let status = h.env.pebble.cert_status(&serial).await.expect("status");
    assert_eq!(status["Status"], "Revoked", "{status}");
}

#[tokio::test]
async fn hsm_rollover_from_a_file_key_to_token_keys_retires_the_old_keys() {
    let Some(h) = HsmEnv::start().await else {
        return;
    };
    let file_key = h.env.generate_key("account.pem", "es256").await;
    h.run(&["account", "register", "--key", &file_key, "--agree-tos"])
        .await
        .assert_ok();
    let url = h.env.account_url().await;
    // File key -> token key (the migration path), then token key -> token key.
    for (label, alg) in [("acct-1", "es256"), ("acct-2", "es384")] {
        let new_key = h.generate(label, alg).await;
        let before = h.run(&["account", "show"]).await;
        before.assert_ok();
        let previous = before.json()["key_ref"]
            .as_str()
            .expect("key_ref")
            .to_owned();
        h.run(&["account", "rollover", "--new-key", &new_key])
            .await
            .assert_ok();
        let shown = h.run(&["account", "show"]).await;
        shown.assert_ok();
        assert_eq!(shown.json()["key_ref"], new_key.as_str());
        assert_eq!(shown.json()["url"], url.as_str(), "same account");
        let refused = h.run(&["account", "find", "--key", &previous]).await;
        refused.assert_exit_1();
        assert!(
            !refused.stdout.contains(&url),
            "old key still finds it:\n{refused}"
        );
        let found = h.run(&["account", "find", "--key", &new_key]).await;
        found.assert_ok();
    }
    assert_no_private_keys(&[&h.env.state_dir()]);
}

#[tokio::test]
async fn hsm_bad_input_names_the_key_and_never_shows_the_pin() {
    let Some(h) = HsmEnv::start().await else {
        return;
    };
    h.generate("present", "es256").await;
    let module = h.hsm.module_path().display().to_string();
    let pin = format!("pin-source=file:{}", h.pin_file.display());
    let cases = [
        (
            format!("pkcs11:token={TOKEN};object=present?{pin}"),
            "no module-path",
        ),
        (
            format!("pkcs11:token={TOKEN};object=present?module-path=/nonexistent/lib.so&{pin}"),
            "cannot load PKCS#11 module /nonexistent/lib.so",
        ),
        (
            format!("pkcs11:token=elsewhere;object=present?module-path={module}&{pin}"),
            "no token in",
        ),
        (
            format!("pkcs11:token={TOKEN};object=absent?module-path={module}&{pin}"),
            "no private key matches",
        ),
    ];
    for (uri, expected) in &cases {
        let run = h.run(&["key", "show", uri]).await;
        run.assert_exit_1();
        assert!(run.stderr.contains(expected), "{uri}: {run}");
        assert!(run.stderr.contains("pkcs11:token="), "names the key: {run}");
    }
    // Wrong key type for the asked algorithm.
    let run = h
        .run(&[
            "key",
            "generate",
            "--backend",
            "pkcs11",
            "--alg",
            "rs256",
            "--module",
            &module,
            "--token",
            TOKEN,
            "--label",
            "present",
            "--pin-source",
            &format!("file:{}", h.pin_file.display()),
        ])
        .await;
    run.assert_exit_1();
    assert!(
        run.stderr
            .contains("wrong key type: the object is an es256 key"),
        "{run}"
    );

    // A wrong PIN: one clear error, never the PIN, even at trace level; the token is not
    // locked and the right PIN still works.
    let secret = "80085-wrong";
    let run = h
        .run(&[
            "-vv",
            "key",
            "show",
            &h.uri_with_pin_value("present", secret),
        ])
        .await;
    run.assert_exit_1();
    assert!(run.stderr.contains("rejected the PIN"), "{run}");
    assert!(
        run.stderr.contains("pin-value=***"),
        "names the key, PIN redacted: {run}"
    );
    assert!(
        !run.stderr.contains(secret) && !run.stdout.contains(secret),
        "PIN leaked: {run}"
    );
    let flags = run_child(
        &h.hsm,
        "hsm_child_probe_token",
        json!({"module": h.hsm.module_path(), "labels": []}),
    );
    assert_eq!(flags["token"]["locked"], false, "{flags}");
    assert_eq!(flags["token"]["final_try"], false, "{flags}");
    let good = h
        .run(&["-vv", "key", "show", &h.uri_with_pin_value("present", PIN)])
        .await;
    good.assert_ok();
    assert!(
        !good.stderr.contains(&format!("pin-value={PIN}")),
        "PIN in the log: {good}"
    );
    assert!(
        good.stderr.contains("pin-value"),
        "warned about pin-value: {good}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsm_16_concurrent_issuances_with_one_token_account_key_use_the_session_pool() {
    let Some(h) = HsmEnv::start().await else {
        return;
    };
    let account = h.generate("busy-acct", "es256").await;
    h.run(&["account", "register", "--key", &account, "--agree-tos"])
        .await
        .assert_ok();
    let shown = h.run(&["account", "show"]).await;
    shown.assert_ok();
    let url = shown.json()["url"].as_str().expect("url").to_owned();
    let result = run_child(
        &h.hsm,
        "hsm_child_concurrent_issuance",
        json!({
            "directory": h.env.pebble.directory_url(),
            "ca_root": h.env.pebble.tls_root_pem_path(),
            "account_url": url,
            "account_key": account,
            "http01_port": h.env.pebble.http01_port(),
            "tmp": h.env.path("child"),
        }),
    );
    eprintln!("16 concurrent issuances: {result}");
    assert_eq!(result["issued"], 16, "{result}");
    let pool = &result["pool"];
    // A session is opened only when every open one is busy: two or more sessions, and two
    // or more signing at the same moment, show that signing did not queue behind one.
    assert!(pool["sessions_opened"].as_u64() >= Some(2), "{result}");
    assert!(pool["peak_busy"].as_u64() >= Some(2), "{result}");
    assert!(
        result["signatures"].as_u64() >= Some(16 * 5 + 64),
        "{result}"
    );
}

/// Child: token flags and the private-key attributes of `labels`.
#[test]
fn hsm_child_probe_token() {
    let Some(params) = child_params() else { return };
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::object::{Attribute, AttributeType, ObjectClass};
    use cryptoki::session::UserType;
    let p = Pkcs11::new(params["module"].as_str().expect("module")).expect("module");
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("init");
    let slot = p
        .get_slots_with_initialized_token()
        .expect("slots")
        .into_iter()
        .find(|s| p.get_token_info(*s).expect("info").label().trim() == TOKEN)
        .expect("token");
    let info = p.get_token_info(slot).expect("info");
    let mut result = json!({"token": {
        "locked": info.user_pin_locked(),
        "final_try": info.user_pin_final_try(),
        "count_low": info.user_pin_count_low(),
    }});
    let session = p.open_rw_session(slot).expect("session");
    session
        .login(UserType::User, Some(&PIN.into()))
        .expect("login");
    for label in params["labels"].as_array().expect("labels") {
        let label = label.as_str().expect("label");
        let handles = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .expect("find");
        assert_eq!(handles.len(), 1, "{label}");
        let attrs = session
            .get_attributes(
                handles[0],
                &[
                    AttributeType::Value,
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                ],
            )
            .expect("attributes");
        let mut key = json!({"value_returned": false});
        for a in attrs {
            match a {
                Attribute::Value(_) => key["value_returned"] = true.into(),
                Attribute::Sensitive(v) => key["sensitive"] = v.into(),
                Attribute::Extractable(v) => key["extractable"] = v.into(),
                _ => {}
            }
        }
        result["keys"][label] = key;
    }
    println!("CHILD-RESULT: {result}");
}

/// Child: 16 orders at once through one account whose key is on the token, in this
/// process, then the token's session-pool counters.
#[test]
fn hsm_child_concurrent_issuance() {
    let Some(p) = child_params() else { return };
    certfleet_testenv::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let result = rt.block_on(async move {
        use certfleet_acme::{AcmeClient, ClientConfig, PollPolicy};
        use certfleet_issue::{CertificateRequest, ChallengeSolvers, ExistingKey, Issuer};
        use certfleet_keys::SigningKey;
        let uri = certfleet_keys_pkcs11::Pkcs11Uri::parse(p["account_key"].as_str().expect("key"))
            .expect("uri");
        let key = certfleet_keys_pkcs11::Pkcs11Backend::new()
            .load_uri(&uri)
            .await
            .expect("load");
        let root = std::fs::read(p["ca_root"].as_str().expect("root")).expect("root pem");
        let config = ClientConfig {
            extra_roots_pem: vec![root],
            only_extra_roots: true,
            ..ClientConfig::default()
        };
        let client = AcmeClient::connect(p["directory"].as_str().expect("dir"), config)
            .await
            .expect("connect");
        let account = client.account_from_parts(
            Arc::clone(&key) as Arc<dyn SigningKey>,
            p["account_url"].as_str().expect("url").to_owned(),
        );
        let port = p["http01_port"].as_u64().expect("port") as u16;
        let server = certfleet_http01::StandaloneServer::bind(([127, 0, 0, 1], port).into())
            .await
            .expect("bind");
        let issuer = Issuer::new(
            account,
            ChallengeSolvers::http01(Arc::new(server)),
            PollPolicy::default(),
        );
        let tmp = PathBuf::from(p["tmp"].as_str().expect("tmp"));
        let before = key.pool_stats();
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let issuer = issuer.clone();
                let path = tmp.join(format!("cert-{i}.pem"));
                tokio::spawn(async move {
                    let cert_key = certfleet_keys::file::FileKey::generate(
                        certfleet_keys::KeyAlgorithm::EcP256,
                        &path,
                    )
                    .expect("cert key");
                    let request = CertificateRequest {
                        names: vec![format!("c{i}.pool.certfleet.test")],
                        profile: None,
                        replaces: None,
                        preferred_chain: None,
                    };
                    issuer
                        .issue(&request, &mut ExistingKey(Arc::new(cert_key)))
                        .await
                })
            })
            .collect();
        let mut issued = 0;
        for t in tasks {
            t.await.expect("task").expect("issued");
            issued += 1;
        }
        // The issuances overlap their signatures only as the network interleaves them; a
        // burst of signatures from many tasks at once shows the pool's parallelism even
        // when those happened to line up one after another.
        let burst: Vec<_> = (0..64)
            .map(|i| {
                let key = Arc::clone(&key);
                tokio::spawn(async move { key.sign(format!("burst {i}").as_bytes()).await })
            })
            .collect();
        for t in burst {
            t.await.expect("task").expect("signature");
        }
        let after = key.pool_stats();
        json!({
            "issued": issued,
            "signatures": after.operations - before.operations,
            "pool": {
                "size": after.size,
                "sessions_opened": after.sessions_opened,
                "peak_in_use": after.peak_in_use,
                "peak_busy": after.peak_busy,
                "waited": after.waited,
            },
        })
    });
    println!("CHILD-RESULT: {result}");
}
