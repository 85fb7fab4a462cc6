//! Issue 16 at the command line: secrets stay out of `--help`, a plain http:// directory
//! needs the explicit opt-in, and 2,000 idle connections to the http-01 server do not stop
//! an order (the last against a real Pebble, with the server in a child process whose
//! descriptor limit is what a default shell gives). And a CA that hands out an
//! authorization for a name its order does not name gets nothing presented for it.

use std::io::{BufRead, BufReader, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use certfleet_testenv::{CaProxy, CaProxyOptions, PebbleOptions, certfleet_command, free_tcp_port};
use serde_json::{Value, json};

use crate::common::{COMMAND_TIMEOUT, Env, certfleet, files_under};

const CHILD_ENV: &str = "CERTFLEET_E2E_IDLE_CHILD";
const IDLE_CONNECTIONS: usize = 2000;
/// What a default shell gives a process (`ulimit -n`), far below the idle connections.
const CHILD_NOFILE: u64 = 1024;

fn output_of(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = certfleet_command();
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run certfleet");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn help_never_shows_secret_environment_values() {
    let store = "postgres://fleet:Pg-Secret-4711@db.example/certs";
    let eab = "eab-Secret-0815";
    let env = [
        ("CERTFLEET_BATCH_STORE", store),
        ("CERTFLEET_EAB_HMAC_KEY", eab),
    ];
    for args in [
        &["batch", "run", "--help"][..],
        &["account", "register", "--help"][..],
    ] {
        let help = output_of(args, &env);
        assert!(
            help.contains("CERTFLEET_"),
            "{args:?}: no env names in help:\n{help}"
        );
        assert!(
            !help.contains("Pg-Secret-4711"),
            "{args:?} shows the store password:\n{help}"
        );
        assert!(
            !help.contains("eab-Secret-0815"),
            "{args:?} shows the EAB key:\n{help}"
        );
    }
}

#[tokio::test]
async fn a_plain_http_directory_needs_the_explicit_flag() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let port = free_tcp_port().expect("port");
    let dir = format!("http://127.0.0.1:{port}/dir");
    let state = tmp.path().join("state");
    let key = tmp.path().join("acct.pem");
    let base = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec![
            "--state-dir".into(),
            state.display().to_string(),
            "--directory".into(),
            dir.clone(),
        ];
        v.extend(extra.iter().map(|s| (*s).to_owned()));
        v.extend(
            ["account", "register", "--agree-tos", "--key"]
                .iter()
                .map(|s| (*s).to_owned()),
        );
        v.push(key.display().to_string());
        v
    };
    certfleet([
        "key",
        "generate",
        "--alg",
        "es256",
        "--out",
        &key.display().to_string(),
    ])
    .await
    .assert_ok();
    let refused = certfleet(base(&[])).await;
    refused.assert_exit_1();
    assert!(
        refused.stderr.contains("--insecure-http-directory"),
        "{refused}"
    );
    assert!(
        !refused.stderr.contains("refused"),
        "tried to connect:\n{refused}"
    );
    // With the flag it goes on (and fails only because nothing listens there).
    let allowed = certfleet(base(&["--insecure-http-directory"])).await;
    allowed.assert_exit_1();
    assert!(!allowed.stderr.contains("is plain http://"), "{allowed}");
    assert!(
        allowed.stderr.contains("unencrypted") || allowed.stderr.contains("warn"),
        "no warning:\n{allowed}"
    );
}

#[tokio::test]
async fn two_thousand_idle_connections_do_not_stop_an_order() {
    let Some(env) = Env::start(PebbleOptions::default()).await else {
        return;
    };
    let key = env.register_account().await;
    let params = json!({
        "directory": env.pebble.directory_url(),
        "ca_root": env.pebble.tls_root_pem_path(),
        "account_key": key.trim_start_matches("file:"),
        "account_url": env.account_url().await,
        "http01_port": env.pebble.http01_port(),
        "tmp": env.path(""),
    });
    let port = env.pebble.http01_port();
    let result = tokio::task::spawn_blocking(move || run_idle_child(&params, port))
        .await
        .expect("child runner");
    assert_eq!(result["issued"], true, "{result}");
    let open = result["open_connections"].as_u64().expect("count");
    assert!(open <= 256, "{open} connections held open");
}

/// Runs the child test, opens the idle connections once its server is bound, lets it
/// order, and returns what it printed as its result.
fn run_idle_child(params: &Value, port: u16) -> Value {
    let exe = std::env::current_exe().expect("current exe");
    let mut child = std::process::Command::new(exe)
        .args([
            "hardening::http01_child_issue_behind_idle_connections",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, params.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = String::new();
    // The child prints BOUND once its server listens (bounded: the child's own steps
    // time out, and a closed stdout ends the loop).
    loop {
        match lines.next() {
            // libtest may print `test NAME ... ` on the same line first.
            Some(Ok(line)) if line.trim_end().ends_with("BOUND") => break,
            Some(Ok(line)) => seen.push_str(&format!("{line}\n")),
            _ => panic!("the child never bound its server:\n{seen}"),
        }
    }
    eprintln!("child bound its server; connecting {IDLE_CONNECTIONS} idle clients");
    let started = Instant::now();
    let mut idle = Vec::with_capacity(IDLE_CONNECTIONS);
    for _ in 0..IDLE_CONNECTIONS {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        if let Ok(s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            idle.push(s);
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "connecting took too long"
        );
    }
    assert!(
        idle.len() >= IDLE_CONNECTIONS / 2,
        "only {} connected",
        idle.len()
    );
    eprintln!(
        "{} idle clients connected in {:?}",
        idle.len(),
        started.elapsed()
    );
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"go\n").expect("signal the child");
    drop(stdin);
    let mut result = None;
    for line in lines {
        let line = line.expect("child output");
        if let Some((_, r)) = line.split_once("CHILD-RESULT: ") {
            result = Some(serde_json::from_str(r).expect("child result is JSON"));
        }
        seen.push_str(&format!("{line}\n"));
    }
    let status = child.wait().expect("child exit");
    drop(idle);
    assert!(status.success(), "child failed ({status}):\n{seen}");
    result.unwrap_or_else(|| panic!("child printed no result:\n{seen}"))
}

/// Child: the http-01 server and one order, in a process limited to 1,024 descriptors.
#[test]
fn http01_child_issue_behind_idle_connections() {
    let Ok(text) = std::env::var(CHILD_ENV) else {
        return;
    };
    let p: Value = serde_json::from_str(&text).expect("child parameters");
    let limit = libc::rlimit {
        rlim_cur: CHILD_NOFILE,
        rlim_max: CHILD_NOFILE,
    };
    // SAFETY: a valid rlimit for this process.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    certfleet_testenv::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let result = rt.block_on(async move {
        use certfleet_acme::{AcmeClient, ClientConfig, PollPolicy};
        use certfleet_issue::{CertificateRequest, ChallengeSolvers, Issuer};
        use certfleet_keys::SigningKey;
        let text = |k: &str| p[k].as_str().unwrap_or_else(|| panic!("{k}")).to_owned();
        let key = certfleet_keys::file::FileKey::load(std::path::Path::new(&text("account_key")))
            .expect("account key");
        let root = std::fs::read(text("ca_root")).expect("root pem");
        let config = ClientConfig {
            extra_roots_pem: vec![root],
            only_extra_roots: true,
            ..ClientConfig::default()
        };
        let client = AcmeClient::connect(&text("directory"), config)
            .await
            .expect("connect");
        let account =
            client.account_from_parts(Arc::new(key) as Arc<dyn SigningKey>, text("account_url"));
        let port = u16::try_from(p["http01_port"].as_u64().expect("port")).expect("port");
        let server = Arc::new(
            certfleet_http01::StandaloneServer::bind(([127, 0, 0, 1], port).into())
                .await
                .expect("bind"),
        );
        // Straight to the descriptor: the test harness may capture println!.
        say("BOUND");
        let mut go = String::new();
        std::io::stdin()
            .read_line(&mut go)
            .expect("wait for the parent");
        let issuer = Issuer::new(
            account,
            ChallengeSolvers::http01(server.clone()),
            PollPolicy::default(),
        );
        let cert_key = certfleet_keys::file::FileKey::generate(
            certfleet_keys::KeyAlgorithm::EcP256,
            &std::path::Path::new(&text("tmp")).join("idle-cert.pem"),
        )
        .expect("cert key");
        let request = CertificateRequest {
            names: vec!["idle.certfleet.test".to_owned()],
            profile: None,
            replaces: None,
            preferred_chain: None,
        };
        let mut key = certfleet_issue::ExistingKey(Arc::new(cert_key));
        let issued = issuer.issue(&request, &mut key).await;
        json!({
            "issued": issued.is_ok(),
            "error": issued.err().map(|e| e.to_string()),
            "open_connections": server.open_connections(),
        })
    });
    say(&format!("CHILD-RESULT: {result}"));
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").expect("stdout");
    out.flush().expect("stdout");
}

/// `batch run` with http-01 jobs: the standalone server is bound on demand (checked free at
/// start, bound while a job serves its challenge) and every certificate is issued.
#[tokio::test]
async fn batch_serves_http01_through_the_on_demand_server() {
    let Some(env) = Env::start(PebbleOptions::default()).await else {
        return;
    };
    env.register_account().await;
    let config = crate::batch::write_config(&env, "");
    let file = env.path("http01.toml");
    std::fs::write(
        &file,
        "[defaults]\nchallenge = \"http-01\"\n\n[[cert]]\nnames = [\"h1.ondemand.test\"]\n\n\
         [[cert]]\nnames = [\"h2.ondemand.test\", \"www.h2.ondemand.test\"]\n",
    )
    .expect("batch file");
    let listen = format!("127.0.0.1:{}", env.pebble.http01_port());
    let run = crate::batch::batch_run(
        &env,
        &env.pebble.directory_url(),
        &config,
        &file.display().to_string(),
        &["--rate-limits", "none", "--http-listen", &listen],
    )
    .await;
    run.assert_ok();
    let certs = crate::batch::report(&env.path("report.json"));
    assert_eq!(certs.len(), 2, "{certs:?}");
    assert!(certs.iter().all(|c| c["state"] == "issued"), "{certs:?}");
}

/// Through the CA double, every authorization of the order claims another name (Pebble's
/// real order, authorizations and challenges otherwise): `issue` stops before writing a
/// token for it, names both the authorization's name and the order's, and writes no
/// certificate.
#[tokio::test]
async fn an_authorization_for_a_name_the_order_does_not_name_gets_nothing_presented() {
    let Some(env) = Env::start(PebbleOptions::default()).await else {
        return;
    };
    let options = CaProxyOptions {
        authorization_name: Some("victim.elsewhere.test".to_owned()),
        ..CaProxyOptions::default()
    };
    let proxy = CaProxy::start(&env.pebble, options).await.expect("proxy");
    env.register_at(&proxy.directory_url(), "account.pem").await;
    let webroot = env.path("webroot");
    std::fs::create_dir_all(&webroot).expect("webroot");
    let out = env.path("out");
    let (webroot_s, out_s) = (webroot.to_string_lossy(), out.to_string_lossy());
    let run = env
        .run_at(
            &proxy.directory_url(),
            &[
                "issue",
                "--name",
                "mine.names.test",
                "--challenge",
                "http-01",
                "--webroot",
                &webroot_s,
                "--out",
                &out_s,
            ],
            COMMAND_TIMEOUT,
        )
        .await;
    assert!(!run.status.success(), "the order must fail:\n{run}");
    for part in [
        "the authorization is for victim.elsewhere.test",
        "does not name (it names mine.names.test)",
        "nothing was presented for it",
    ] {
        assert!(run.stderr.contains(part), "{part:?} in:\n{run}");
    }
    assert_eq!(
        files_under(&webroot),
        Vec::<std::path::PathBuf>::new(),
        "no token was written for the foreign name"
    );
    assert!(!out.join("cert.pem").exists(), "no certificate:\n{run}");
}
