//! Keys shared by the unit tests: one key per algorithm, generated through
//! [`FileKey::generate`] on first use and kept in memory as PEM (RSA 4096 generation takes
//! a while, so each key is made once per test binary). Nothing is left in the temp dir.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::OnceLock;

use crate::KeyAlgorithm;
use crate::file::FileKey;

static PEMS: [OnceLock<String>; 6] = [const { OnceLock::new() }; 6];

/// The PKCS#8 PEM of the shared key of `alg`.
pub(crate) fn key_pem(alg: KeyAlgorithm) -> String {
    let index = KeyAlgorithm::ALL
        .iter()
        .position(|a| *a == alg)
        .expect("listed algorithm");
    PEMS[index]
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join(format!("{alg}.pem"));
            FileKey::generate(alg, &path).expect("generate");
            let mode = std::fs::metadata(&path)
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "generated {alg} key mode");
            std::fs::read_to_string(&path).expect("read key")
        })
        .clone()
}

/// The shared key of `alg` in its own temporary file (mode 0600); keep the directory alive
/// while the path is used.
pub(crate) fn key_file(alg: KeyAlgorithm) -> (tempfile::TempDir, PathBuf) {
    write_temp(&format!("{alg}.pem"), key_pem(alg).as_bytes())
}

/// The shared key of `alg`, loaded from a file that is gone by the time this returns.
pub(crate) fn key(alg: KeyAlgorithm) -> FileKey {
    let (_dir, path) = key_file(alg);
    FileKey::load(&path).expect("load generated key")
}

/// Writes `contents` to `name` in a new temporary directory with mode 0600.
pub(crate) fn write_temp(name: &str, contents: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    crate::fs::write_atomic(&path, contents, 0o600).expect("write");
    (dir, path)
}

/// Runs a future that must complete on its first poll, without any async runtime.
pub(crate) fn poll_once<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(value) => value,
        std::task::Poll::Pending => panic!("future did not complete without a runtime"),
    }
}

/// Whether `openssl` is on PATH. Missing is fine locally (a note is printed and the caller
/// skips its cross-check) but fails when `CI` is set, so CI never silently skips.
pub(crate) fn openssl_available() -> bool {
    static FOUND: OnceLock<bool> = OnceLock::new();
    *FOUND.get_or_init(|| {
        let found = std::process::Command::new("openssl")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            assert!(
                std::env::var_os("CI").is_none(),
                "openssl is required on PATH when CI is set"
            );
            eprintln!("note: openssl not found on PATH; skipping the openssl cross-check");
        }
        found
    })
}
