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

/// root → intermediate → leaf made with rcgen, written as PEM files into `dir`.
fn make_chain(dir: &std::path::Path, tag: &str) -> [std::path::PathBuf; 3] {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca = |cn: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p
    };
    let root_key = KeyPair::generate().expect("key");
    let root_params = ca(&format!("{tag} root"));
    let root = root_params.self_signed(&root_key).expect("root");
    let root_issuer = Issuer::new(root_params, root_key);
    let inter_key = KeyPair::generate().expect("key");
    let inter_params = ca(&format!("{tag} intermediate"));
    let inter = inter_params
        .signed_by(&inter_key, &root_issuer)
        .expect("intermediate");
    let inter_issuer = Issuer::new(inter_params, inter_key);
    let leaf_key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["b.test".to_owned(), "a.test".to_owned()])
        .expect("params")
        .signed_by(&leaf_key, &inter_issuer)
        .expect("leaf");
    let paths = [
        dir.join(format!("{tag}-root.pem")),
        dir.join(format!("{tag}-chain.pem")),
        dir.join(format!("{tag}-leaf.pem")),
    ];
    for (p, pem) in paths.iter().zip([root.pem(), inter.pem(), leaf.pem()]) {
        std::fs::write(p, pem).expect("write");
    }
    paths
}

#[test]
fn harness_cert_helpers_agree_with_openssl_and_verify_rejects_wrong_root() {
    if !require_tool("openssl", "openssl") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let [root, chain, leaf] = make_chain(dir.path(), "one");
    let [other_root, _, _] = make_chain(dir.path(), "two");

    certfleet_testenv::openssl_verify(&root, &chain, &leaf).expect("right root verifies");
    assert!(
        certfleet_testenv::openssl_verify(&other_root, &chain, &leaf).is_err(),
        "a foreign root must not verify"
    );

    let info = certfleet_testenv::read_cert(&leaf).expect("leaf parses");
    assert_eq!(info.dns_names, ["b.test", "a.test"]);
    assert_eq!(info.sorted_dns_names(), ["a.test", "b.test"]);
    assert_eq!(info.issuer_cn.as_deref(), Some("one intermediate"));
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(&leaf)
        .output()
        .expect("openssl x509");
    let openssl_serial = String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase();
    // Both print whole bytes: a serial whose first byte is below 0x10 starts with "0" in
    // each (one time in sixteen with a random serial), so compare without leading zeros.
    assert_eq!(
        openssl_serial.trim_start_matches('0'),
        info.serial_hex.trim_start_matches('0'),
        "serial hex as openssl prints it (minus leading zeros)"
    );
}
