//! Bad input is refused early with an error naming the culprit. No Pebble needed: the
//! directory URL points at a closed loopback port.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use certfleet_testenv::free_tcp_port;
use tempfile::TempDir;

use crate::common::{Run, certfleet};

/// Words that betray a network attempt in an error message.
const NETWORK_WORDS: [&str; 5] = [
    "connect",
    "refused",
    "error sending request",
    "tcp",
    "dns error",
];

struct Offline {
    tmp: TempDir,
    directory: String,
}

impl Offline {
    fn new() -> Offline {
        let port = free_tcp_port().expect("free port");
        Offline {
            tmp: tempfile::Builder::new()
                .prefix("certfleet-e2e-offline-")
                .tempdir()
                .expect("tempdir"),
            directory: format!("https://127.0.0.1:{port}/dir"),
        }
    }

    fn path(&self, rel: &str) -> std::path::PathBuf {
        self.tmp.path().join(rel)
    }

    async fn run(&self, args: &[&str]) -> Run {
        let mut full: Vec<std::ffi::OsString> = vec![
            "--state-dir".into(),
            self.path("state").into(),
            "--directory".into(),
            self.directory.clone().into(),
        ];
        full.extend(args.iter().map(Into::into));
        certfleet(full).await
    }

    /// Writes `contents` to `<tmp>/<name>` with `mode`; returns the path.
    fn write(&self, name: &str, contents: &[u8], mode: u32) -> std::path::PathBuf {
        let p = self.path(name);
        std::fs::write(&p, contents).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        p
    }
}

#[track_caller]
fn assert_no_network_words(run: &Run) {
    let lower = run.stderr.to_lowercase();
    for w in NETWORK_WORDS {
        assert!(
            !lower.contains(w),
            "error must come before any network call (found `{w}`):\n{run}"
        );
    }
}

#[tokio::test]
async fn issue_rejects_invalid_names_naming_the_value_before_any_network_call() {
    let env = Offline::new();
    let listen = format!("127.0.0.1:{}", free_tcp_port().expect("port"));
    let long_name = format!(
        "{}.{}.{}.{}",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(62)
    );
    assert_eq!(long_name.len(), 254);
    let bad = [
        "exa mple.com",
        "-a.com",
        "a..b",
        long_name.as_str(),
        "*.*.x",
        "192.0.2.1",
    ];
    for name in bad {
        let name_arg = format!("--name={name}");
        let run = env
            .run(&[
                "issue",
                "--name=ok.certfleet.test",
                &name_arg,
                "--challenge",
                "http-01",
                "--http-listen",
                &listen,
            ])
            .await;
        run.assert_exit_1();
        assert!(
            run.stderr.contains(name),
            "stderr should name the invalid value {name:?}:\n{run}"
        );
        assert!(
            run.stderr.contains("error"),
            "expected an `error: …` line:\n{run}"
        );
        assert_no_network_words(&run);
        assert!(
            run.elapsed < Duration::from_secs(5),
            "name validation should fail fast, took {:?}",
            run.elapsed
        );
    }
}

#[tokio::test]
async fn key_show_rejects_garbled_key_file_naming_the_path() {
    let env = Offline::new();
    let garbage = env.write(
        "garbled.pem",
        b"-----BEGIN PRIVATE KEY-----\nthis is not base64 !!!\n-----END PRIVATE KEY-----\n",
        0o600,
    );
    let random = env.write("random.pem", &[0x30, 0x82, 0xff, 0x00, 0x13, 0x37], 0o600);
    for p in [garbage, random] {
        let key_ref = format!("file:{}", p.display());
        let run = env.run(&["key", "show", &key_ref]).await;
        run.assert_exit_1();
        assert_names_path(&run, &p);
    }
}

#[tokio::test]
async fn key_show_rejects_a_certificate_given_as_key_naming_the_path() {
    let env = Offline::new();
    let cert =
        rcgen::generate_simple_self_signed(vec!["cert-not-key.test".to_owned()]).expect("rcgen");
    let p = env.write("cert.pem", cert.cert.pem().as_bytes(), 0o600);
    let key_ref = format!("file:{}", p.display());
    let run = env.run(&["key", "show", &key_ref]).await;
    run.assert_exit_1();
    assert_names_path(&run, &p);
    let lower = run.stderr.to_lowercase();
    assert!(
        lower.contains("certificate") || lower.contains("private key"),
        "the error should say a certificate is not a private key:\n{run}"
    );
}

#[tokio::test]
async fn key_show_rejects_unreadable_and_missing_key_files_naming_the_path() {
    let env = Offline::new();
    // A directory cannot be read as a file, even by root (mode 000 would not stop root).
    let dir_as_key = env.path("dir-as-key.pem");
    std::fs::create_dir(&dir_as_key).expect("mkdir");
    let missing = env.path("missing.pem");
    let mut cases = vec![dir_as_key, missing];
    let is_root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(true);
    if !is_root {
        cases.push(env.write("mode-000.pem", b"irrelevant", 0o000));
    }
    for p in cases {
        let key_ref = format!("file:{}", p.display());
        let run = env.run(&["key", "show", &key_ref]).await;
        run.assert_exit_1();
        assert_names_path(&run, &p);
    }
}

#[tokio::test]
async fn key_file_with_mode_0644_warns_naming_path_and_600_but_proceeds() {
    let env = Offline::new();
    let p = env.path("loose.pem");
    let p_s = p.to_string_lossy().into_owned();
    let generated = env
        .run(&["key", "generate", "--alg", "es256", "--out", &p_s])
        .await;
    generated.assert_ok();
    assert_eq!(
        std::fs::metadata(&p)
            .expect("key written")
            .permissions()
            .mode()
            & 0o777,
        0o600,
        "key generate writes mode 0600"
    );
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");

    let key_ref = generated.last_line();
    let run = env.run(&["key", "show", &key_ref]).await;
    run.assert_ok();
    assert!(
        run.json().get("jwk").is_some(),
        "key show still prints the key:\n{run}"
    );
    assert!(
        run.stderr.contains(&p_s) && run.stderr.contains("600"),
        "expected a warning naming {p_s} and mode 600:\n{run}"
    );
}

#[tokio::test]
async fn config_file_with_unknown_key_is_an_error_naming_the_key() {
    let env = Offline::new();
    let config = env.write(
        "certfleet.toml",
        format!("directory = \"{}\"\nbogus_setting_xyz = 1\n", env.directory).as_bytes(),
        0o600,
    );
    let config_s = config.to_string_lossy().into_owned();
    let run = certfleet([
        "--config",
        config_s.as_str(),
        "--state-dir",
        env.path("state").to_str().expect("utf-8 path"),
        "account",
        "show",
    ])
    .await;
    run.assert_exit_1();
    assert!(
        run.stderr.contains("bogus_setting_xyz"),
        "stderr should name the unknown key:\n{run}"
    );
}

#[tokio::test]
async fn unreachable_directory_fails_within_30s_naming_the_url() {
    let env = Offline::new();
    let key = env.path("account.pem");
    let key_s = key.to_string_lossy().into_owned();
    let generated = env
        .run(&["key", "generate", "--alg", "es256", "--out", &key_s])
        .await;
    generated.assert_ok();
    let key_ref = generated.last_line();

    let run = env
        .run(&["account", "register", "--key", &key_ref, "--agree-tos"])
        .await;
    run.assert_exit_1();
    assert!(
        run.stderr.contains(&env.directory),
        "stderr should name {}:\n{run}",
        env.directory
    );
    assert!(
        run.elapsed < Duration::from_secs(30),
        "retries must be bounded: took {:?}",
        run.elapsed
    );
}

#[track_caller]
fn assert_names_path(run: &Run, path: &Path) {
    let shown = path.display().to_string();
    assert!(
        run.stderr.contains(&shown),
        "stderr should name {shown}:\n{run}"
    );
}
