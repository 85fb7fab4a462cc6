//! The test environment itself: Pebble comes up, answers, and goes away.

use certfleet_testenv::{Pebble, PebbleOptions, StaticServer, require_tool};

#[tokio::test]
async fn harness_pebble_serves_directory_and_issuing_roots() {
    if !require_tool("pebble", "pebble") {
        return;
    }
    let pebble = Pebble::start(PebbleOptions::default().alternate_roots(2))
        .await
        .expect("pebble starts");
    let dir: serde_json::Value = pebble
        .client()
        .get(pebble.directory_url())
        .send()
        .await
        .expect("directory answers")
        .json()
        .await
        .expect("directory is JSON");
    for field in [
        "newNonce",
        "newAccount",
        "newOrder",
        "revokeCert",
        "keyChange",
    ] {
        assert!(dir.get(field).is_some(), "directory lacks {field}: {dir}");
    }
    let roots = pebble.issuing_roots().await.expect("roots");
    assert_eq!(roots.len(), 3, "1 root + 2 alternates");
    let cns: Vec<_> = roots
        .iter()
        .map(|pem| {
            certfleet_testenv::CertInfo::from_pem(pem)
                .expect("root parses")
                .subject_cn
                .expect("root has a CN")
        })
        .collect();
    eprintln!("{cns:?}");
    let pid = pebble.processes()[1].pid;
    drop(pebble);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "pebble process {pid} still exists after drop"
    );
}

#[test]
fn harness_static_server_serves_files_and_refuses_escapes() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join(".well-known/acme-challenge")).expect("mkdir");
    std::fs::write(
        dir.path().join(".well-known/acme-challenge/tok"),
        "tok.thumb",
    )
    .expect("write");
    let server = StaticServer::start(dir.path(), 0).expect("server starts");
    let get = |path: &str| -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(server.addr()).expect("connect");
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    };
    let ok = get("/.well-known/acme-challenge/tok");
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.ends_with("\r\n\r\ntok.thumb"), "{ok}");
    assert!(get("/missing").starts_with("HTTP/1.1 404"));
    assert!(get("/../etc/passwd").starts_with("HTTP/1.1 404"));
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[0].path, "/.well-known/acme-challenge/tok");
    assert_eq!(reqs[0].status, 200);
}
