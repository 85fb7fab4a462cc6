//! A hostile CA on loopback: a 50 MB directory, a 10 MB certificate chain and 1,000
//! alternate chains. Each is refused (or cut) with a clear error, and the client's peak
//! memory stays bounded: the client runs in a child process (this test binary, re-run
//! with a filter) whose peak RSS (`VmHWM`) is checked, while the server runs here.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use certfleet_acme::{AcmeClient, ClientConfig, MAX_ALTERNATE_CHAINS};
use certfleet_keys::SigningKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CHILD_ENV: &str = "CERTFLEET_HOSTILE_CA_CHILD";
const DEFAULT_CHAIN: &str = include_str!("../testdata/chains/default.pem");
const MIB: usize = 1 << 20;
/// The acceptance bound on the client's peak resident memory.
const MAX_PEAK_RSS_KB: u64 = 100 * 1024;

/// Reads one request (head, then a body of Content-Length bytes); returns method and path.
async fn read_request(s: &mut TcpStream) -> Option<(String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut have = buf.len() - head_end;
    while have < length {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        have += n;
    }
    let mut first = head.lines().next()?.split_whitespace();
    Some((first.next()?.to_owned(), first.next()?.to_owned()))
}

/// Streams `total` bytes of `unit` repeated, never holding more than one unit.
async fn stream_body(s: &mut TcpStream, unit: &[u8], total: usize) {
    let mut sent = 0;
    while sent < total {
        if s.write_all(unit).await.is_err() {
            return; // the client gave up: what we want
        }
        sent += unit.len();
    }
}

async fn serve(mut s: TcpStream, base: String, alt_fetches: Arc<AtomicUsize>) {
    let Some((method, path)) = read_request(&mut s).await else {
        return;
    };
    let head = |status: &str, ctype: &str, extra: &str| {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nReplay-Nonce: n{}\r\n{extra}Connection: close\r\n\r\n",
            alt_fetches.load(Ordering::Relaxed)
        )
    };
    let json = "application/json";
    let pem = "application/pem-certificate-chain";
    match (method.as_str(), path.as_str()) {
        ("GET", "/big-directory") => {
            let _ = s.write_all(head("200 OK", json, "").as_bytes()).await;
            let _ = s.write_all(b"{\"pad\":\"").await;
            stream_body(&mut s, &[b'x'; 64 * 1024], 50 * MIB).await;
        }
        ("GET", "/dir") => {
            let dir = format!(
                "{{\"newNonce\":\"{base}/nonce\",\"newAccount\":\"{base}/acct\",\"newOrder\":\"{base}/order\",\"revokeCert\":\"{base}/revoke\",\"keyChange\":\"{base}/key\"}}"
            );
            let _ = s
                .write_all(format!("{}{dir}", head("200 OK", json, "")).as_bytes())
                .await;
        }
        ("HEAD", "/nonce") => {
            let _ = s.write_all(head("200 OK", json, "").as_bytes()).await;
        }
        ("POST", "/cert/big") => {
            let _ = s.write_all(head("200 OK", pem, "").as_bytes()).await;
            let _ = s.write_all(DEFAULT_CHAIN.as_bytes()).await;
            stream_body(&mut s, &[b'A'; 64 * 1024], 10 * MIB).await;
        }
        ("POST", "/cert/many") => {
            let links: Vec<String> = (0..1000)
                .map(|i| format!("<{base}/cert/alt/{i}>;rel=\"alternate\""))
                .collect();
            let extra = format!("Link: {}\r\n", links.join(", "));
            let _ = s
                .write_all(format!("{}{DEFAULT_CHAIN}", head("200 OK", pem, &extra)).as_bytes())
                .await;
        }
        ("POST", p) if p.starts_with("/cert/alt/") => {
            alt_fetches.fetch_add(1, Ordering::Relaxed);
            let _ = s
                .write_all(format!("{}{DEFAULT_CHAIN}", head("200 OK", pem, "")).as_bytes())
                .await;
        }
        _ => {
            let _ = s
                .write_all(head("404 Not Found", json, "").as_bytes())
                .await;
        }
    }
}

#[tokio::test]
async fn hostile_ca_answers_are_refused_within_bounded_memory() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let alt_fetches = Arc::new(AtomicUsize::new(0));
    let (b, a) = (base.clone(), alt_fetches.clone());
    let server = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(serve(s, b.clone(), a.clone()));
        }
    });
    let exe = std::env::current_exe().expect("exe");
    let child = tokio::process::Command::new(exe)
        .args(["client_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &base)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), child)
        .await
        .expect("child finished within 120 s")
        .expect("child ran");
    server.abort();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |name: &str| -> String {
        stdout
            .lines()
            .find_map(|l| {
                l.split_once(&format!("{name}: "))
                    .map(|(_, v)| v.to_owned())
            })
            .unwrap_or_else(|| panic!("child printed no {name}:\n{stdout}"))
    };
    let dir = field("DIRECTORY");
    assert!(
        dir.contains("larger than") && dir.contains("/big-directory"),
        "{dir}"
    );
    let chain = field("CHAIN");
    assert!(
        chain.contains("larger than") && chain.contains("certificate chain"),
        "{chain}"
    );
    assert_eq!(
        field("ALTERNATES"),
        format!("announced 1000, fetched {MAX_ALTERNATE_CHAINS}")
    );
    assert_eq!(alt_fetches.load(Ordering::Relaxed), MAX_ALTERNATE_CHAINS);
    let peak: u64 = field("PEAK_RSS_KB").parse().expect("number");
    eprintln!("client peak RSS: {peak} KiB\n{stdout}");
    assert!(peak < MAX_PEAK_RSS_KB, "client peak RSS {peak} KiB");
}

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(u64::MAX)
}

/// Child: the client side, printing one line per case and its peak RSS.
#[test]
fn client_child() {
    let Ok(base) = std::env::var(CHILD_ENV) else {
        return;
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let config = || ClientConfig {
            allow_http: true,
            connect_retries: 0,
            ..ClientConfig::default()
        };
        let err = AcmeClient::connect(&format!("{base}/big-directory"), config())
            .await
            .expect_err("50 MB directory");
        say(&format!("DIRECTORY: {err}"));

        let client = AcmeClient::connect(&format!("{base}/dir"), config())
            .await
            .expect("small directory");
        let tmp = tempfile::tempdir().expect("tempdir");
        let key = certfleet_keys::file::FileKey::generate(
            certfleet_keys::KeyAlgorithm::EcP256,
            &tmp.path().join("acct.pem"),
        )
        .expect("key");
        let account = client.account_from_parts(
            Arc::new(key) as Arc<dyn SigningKey>,
            format!("{base}/acct/1"),
        );
        let err = account
            .download_certificate(&format!("{base}/cert/big"))
            .await
            .expect_err("10 MB chain");
        say(&format!("CHAIN: {err}"));

        let dl = account
            .download_certificate(&format!("{base}/cert/many"))
            .await
            .expect("chain with 1000 alternates");
        let alts = account
            .download_alternate_chains(&dl)
            .await
            .expect("alternates");
        say(&format!(
            "ALTERNATES: announced {}, fetched {}",
            dl.alternates.len(),
            alts.len()
        ));
    });
    say(&format!("PEAK_RSS_KB: {}", peak_rss_kb()));
}

fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").expect("stdout");
    out.flush().expect("stdout");
}
