use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

fn response(token: &str) -> Http01Response {
    Http01Response {
        token: token.to_owned(),
        key_authorization: format!("{token}.thumbprint"),
    }
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}

#[tokio::test]
async fn standalone_serves_present_tokens_until_cleanup() {
    let server = StandaloneServer::bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind");
    let addr = server.local_addr();
    let r = response("tok_en-1");
    server
        .present(std::slice::from_ref(&r))
        .await
        .expect("present");

    let got = http_get(addr, "/.well-known/acme-challenge/tok_en-1").await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(got.ends_with("tok_en-1.thumbprint"), "{got}");

    let other = http_get(addr, "/.well-known/acme-challenge/unknown").await;
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");

    server.cleanup(&[r]).await.expect("cleanup");
    let gone = http_get(addr, "/.well-known/acme-challenge/tok_en-1").await;
    assert!(gone.starts_with("HTTP/1.1 404"), "{gone}");
}

#[tokio::test]
async fn standalone_reports_port_in_use() {
    let first = StandaloneServer::bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind");
    let err = StandaloneServer::bind(first.local_addr())
        .await
        .expect_err("second bind must fail");
    let msg = err.to_string();
    assert!(msg.contains(&first.local_addr().to_string()), "{msg}");
    assert!(msg.contains("--webroot"), "{msg}");
}

#[tokio::test]
async fn webroot_writes_and_removes_only_its_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let webroot = Webroot::new(dir.path()).expect("webroot");
    let challenge_dir = dir.path().join(".well-known/acme-challenge");
    std::fs::create_dir_all(&challenge_dir).expect("mkdir");
    std::fs::write(challenge_dir.join("someone-else"), b"keep").expect("write");

    let rs = [response("a1"), response("b2")];
    webroot.present(&rs).await.expect("present");
    assert_eq!(
        std::fs::read_to_string(challenge_dir.join("a1")).expect("read"),
        "a1.thumbprint"
    );
    webroot.cleanup(&rs).await.expect("cleanup");
    assert!(!challenge_dir.join("a1").exists());
    assert!(!challenge_dir.join("b2").exists());
    assert!(challenge_dir.join("someone-else").exists());
    // A second cleanup of the same tokens is not an error.
    webroot.cleanup(&rs).await.expect("idempotent cleanup");
}

#[tokio::test]
async fn tokens_that_could_escape_the_directory_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let webroot = Webroot::new(dir.path()).expect("webroot");
    for bad in ["../etc/passwd", "a/b", "", "a.b"] {
        let err = webroot
            .present(&[response(bad)])
            .await
            .expect_err("must refuse");
        assert!(
            matches!(err, Http01Error::InvalidToken { .. }),
            "{bad}: {err}"
        );
    }
}

#[test]
fn missing_webroot_is_an_error_naming_it() {
    let err = Webroot::new("/nonexistent/certfleet-webroot").expect_err("missing dir");
    assert!(err.to_string().contains("/nonexistent/certfleet-webroot"));
}

#[tokio::test]
async fn webroot_refuses_a_symlinked_challenge_directory_and_replaces_planted_token_links() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("www");
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(root.join(".well-known")).expect("mkdir");
    std::fs::create_dir(&elsewhere).expect("mkdir");
    let challenge_dir = root.join(".well-known/acme-challenge");
    std::os::unix::fs::symlink(&elsewhere, &challenge_dir).expect("symlink");
    let webroot = Webroot::new(&root).expect("webroot");

    let err = webroot
        .present(&[response("tok")])
        .await
        .expect_err("symlinked acme-challenge");
    let msg = err.to_string();
    assert!(msg.contains("symbolic link"), "{msg}");
    assert!(msg.contains("acme-challenge"), "{msg}");
    assert_eq!(std::fs::read_dir(&elsewhere).expect("ls").count(), 0);

    std::fs::remove_file(&challenge_dir).expect("rm link");
    std::fs::create_dir(&challenge_dir).expect("mkdir");
    let victim = elsewhere.join("victim");
    std::fs::write(&victim, b"precious").expect("write");
    std::os::unix::fs::symlink(&victim, challenge_dir.join("tok")).expect("symlink");
    webroot.present(&[response("tok")]).await.expect("present");
    assert_eq!(std::fs::read(&victim).expect("read"), b"precious");
    let served = challenge_dir.join("tok");
    assert!(std::fs::symlink_metadata(&served).expect("stat").is_file());
    assert_eq!(
        std::fs::read_to_string(&served).expect("read"),
        "tok.thumbprint"
    );
}

fn tight_limits() -> ServerLimits {
    ServerLimits {
        header_read_timeout: std::time::Duration::from_millis(300),
        connection_lifetime: std::time::Duration::from_secs(5),
        max_connections: 4,
        max_request_head_bytes: 8192,
    }
}

/// Reads until the server closes the connection (bounded); returns what was read.
async fn read_until_closed(s: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(20), s.read_to_end(&mut out));
    match read.await {
        Ok(_) => out,
        Err(_) => panic!("the server kept the connection open for 20 s"),
    }
}

#[tokio::test]
async fn half_sent_requests_are_closed_at_the_header_read_timeout() {
    let server = StandaloneServer::bind_with("127.0.0.1:0".parse().expect("addr"), tight_limits())
        .await
        .expect("bind");
    let mut s = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    s.write_all(b"GET /.well-known/acme-challenge/x HTTP/1.1\r\nHost: a")
        .await
        .expect("write");
    let started = std::time::Instant::now();
    let got = read_until_closed(&mut s).await;
    assert!(!String::from_utf8_lossy(&got).contains("200"), "{got:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[tokio::test]
async fn idle_connections_beyond_the_cap_cannot_lock_out_a_real_request() {
    let server = StandaloneServer::bind_with("127.0.0.1:0".parse().expect("addr"), tight_limits())
        .await
        .expect("bind");
    let addr = server.local_addr();
    server.present(&[response("tok")]).await.expect("present");
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    let got = http_get(addr, "/.well-known/acme-challenge/tok").await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(
        server.open_connections() <= 4,
        "{} connections open",
        server.open_connections()
    );
}

#[tokio::test]
async fn oversized_request_heads_are_refused() {
    let server = StandaloneServer::bind_with("127.0.0.1:0".parse().expect("addr"), tight_limits())
        .await
        .expect("bind");
    server.present(&[response("tok")]).await.expect("present");
    let mut s = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    let big = format!(
        "GET /.well-known/acme-challenge/tok HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    // The server may close while we are still writing.
    let _ = s.write_all(big.as_bytes()).await;
    let got = String::from_utf8_lossy(&read_until_closed(&mut s).await).into_owned();
    assert!(!got.contains("tok.thumbprint"), "{got}");
}

#[tokio::test]
async fn on_demand_server_is_bound_only_while_tokens_are_served() {
    // A free port: bind, note it, release.
    let probe = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("probe");
    let addr = probe.local_addr().expect("addr");
    drop(probe);
    let server = OnDemandServer::new(addr, ServerLimits::default())
        .await
        .expect("port is free");
    assert!(!server.is_bound().await);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "bound before use"
    );

    let (a, b) = (response("tok-a"), response("tok-b"));
    server
        .present(&[a.clone(), b.clone()])
        .await
        .expect("present");
    assert!(server.is_bound().await);
    let got = http_get(addr, "/.well-known/acme-challenge/tok-a").await;
    assert!(got.ends_with("tok-a.thumbprint"), "{got}");

    server.cleanup(&[a]).await.expect("cleanup a");
    assert!(server.is_bound().await, "tok-b is still served");
    server.cleanup(&[b]).await.expect("cleanup b");
    assert!(!server.is_bound().await);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still listening"
    );
}
