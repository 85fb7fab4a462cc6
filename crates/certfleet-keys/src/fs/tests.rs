use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use super::*;

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn writes_new_file_with_exact_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cert.pem");
    write_atomic(&path, b"hello", 0o644).expect("write");
    assert_eq!(std::fs::read(&path).expect("read"), b"hello");
    assert_eq!(mode_of(&path), 0o644);
    let key = dir.path().join("key.pem");
    write_atomic(&key, b"secret", 0o600).expect("write");
    assert_eq!(mode_of(&key), 0o600);
    assert_eq!(entries(dir.path()), ["cert.pem", "key.pem"]);
}

#[test]
fn replaces_existing_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cert.pem");
    std::fs::write(&path, b"old content").expect("seed");
    write_atomic(&path, b"new", 0o644).expect("write");
    assert_eq!(std::fs::read(&path).expect("read"), b"new");
    assert_eq!(entries(dir.path()), ["cert.pem"]);
}

#[test]
fn write_new_refuses_existing_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("key.pem");
    std::fs::write(&path, b"old").expect("seed");
    let err = write_atomic_new(&path, b"new", 0o600).expect_err("must refuse");
    assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    assert_eq!(std::fs::read(&path).expect("read"), b"old");
    assert_eq!(entries(dir.path()), ["key.pem"]);

    let fresh = dir.path().join("fresh.pem");
    write_atomic_new(&fresh, b"k", 0o600).expect("write");
    assert_eq!(std::fs::read(&fresh).expect("read"), b"k");
    assert_eq!(entries(dir.path()), ["fresh.pem", "key.pem"]);
}

#[test]
fn failed_write_leaves_old_target_and_no_temp_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cert.pem");
    std::fs::write(&path, b"old complete content").expect("seed");
    for replace in [Replace::Yes, Replace::No] {
        let err = write_with(&path, 0o644, replace, |f| {
            f.write_all(b"half of the new")?;
            Err(io::Error::other("disk full (injected)"))
        })
        .expect_err("must fail");
        if replace == Replace::Yes {
            assert_eq!(err.to_string(), "disk full (injected)");
        }
        assert_eq!(std::fs::read(&path).expect("read"), b"old complete content");
        assert_eq!(entries(dir.path()), ["cert.pem"]);
    }
    // Also when there was no target before: nothing at all is left behind.
    let fresh = dir.path().join("new.pem");
    write_with(&fresh, 0o600, Replace::No, |_| {
        Err(io::Error::other("injected"))
    })
    .expect_err("must fail");
    assert!(!fresh.exists());
    assert_eq!(entries(dir.path()), ["cert.pem"]);
}

#[test]
fn failed_rename_removes_temp_file() {
    // Renaming a file over a non-empty directory fails after the content was written.
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("occupied");
    std::fs::create_dir(&target).expect("mkdir");
    std::fs::write(target.join("inside"), b"x").expect("seed");
    write_atomic(&target, b"data", 0o644).expect_err("rename over a directory must fail");
    assert_eq!(entries(dir.path()), ["occupied"]);
    assert_eq!(entries(&target), ["inside"]);
}

#[test]
fn rejects_path_without_file_name() {
    let err = write_atomic(Path::new("/"), b"x", 0o600).expect_err("no file name");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn creates_private_directories() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nested = dir.path().join("a/b/c");
    create_dir_all(&nested, 0o700).expect("mkdir");
    for d in ["a", "a/b", "a/b/c"] {
        assert_eq!(mode_of(&dir.path().join(d)), 0o700, "{d}");
    }
    // Existing directories are fine.
    create_dir_all(&nested, 0o700).expect("mkdir again");
}
