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
