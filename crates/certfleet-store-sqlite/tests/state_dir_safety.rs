//! The SQLite store's state directory: nothing in it group/other-writable whatever the
//! umask, and symlinks planted at the database, the lock or the directory are refused
//! (their targets untouched). One test per binary: it sets the process umask.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use certfleet_store::{RunHolder, StateStore};
use certfleet_store_sqlite::{DB_FILE, LOCK_FILE, SqliteStore};

fn holder() -> RunHolder {
    RunHolder {
        node: "test/1/x".to_owned(),
        pid: std::process::id(),
        host: "test".to_owned(),
        started_at: time::OffsetDateTime::now_utc(),
    }
}

fn assert_not_group_or_other_writable(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let meta = entry.metadata().expect("stat");
        assert_eq!(
            meta.mode() & 0o022,
            0,
            "{} has mode {:o}",
            entry.path().display(),
            meta.mode() & 0o7777
        );
    }
}

#[tokio::test]
async fn state_directory_is_private_under_umask_000_and_refuses_planted_symlinks() {
    // SAFETY: umask has no preconditions; this binary has only this test.
    unsafe { libc::umask(0) };
    let tmp = tempfile::tempdir().expect("tempdir");

    // A fresh state directory.
    let state = tmp.path().join("state");
    let store = SqliteStore::open(&state).await.expect("open");
    let guard = store.begin_run(&holder()).await.expect("lock");
    let mode = |p: &Path| std::fs::symlink_metadata(p).expect("stat").mode() & 0o7777;
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join(DB_FILE)), 0o600);
    assert_eq!(mode(&state.join(LOCK_FILE)), 0o600);
    assert_not_group_or_other_writable(&state);
    drop(guard);
    drop(store);

    // Symlinks planted at the database and at the lock: refused, targets untouched.
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, b"precious").expect("write");
    for (name, planted) in [(DB_FILE, "db"), (LOCK_FILE, "lock")] {
        let dir = tmp.path().join(format!("planted-{planted}"));
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        std::os::unix::fs::symlink(&victim, dir.join(name)).expect("symlink");
        let err = match SqliteStore::open(&dir).await {
            Ok(store) => store
                .begin_run(&holder())
                .await
                .map(|_| ())
                .expect_err("symlinked lock must be refused"),
            Err(e) => e,
        };
        let msg = err.to_string();
        assert!(msg.contains("symbolic link") && msg.contains(name), "{msg}");
        assert_eq!(std::fs::read(&victim).expect("read"), b"precious");
    }

    // A symlinked or world-writable state directory.
    let real = tmp.path().join("real");
    std::fs::create_dir(&real).expect("mkdir");
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let msg = SqliteStore::open(&link)
        .await
        .expect_err("symlinked dir")
        .to_string();
    assert!(msg.contains("symbolic link"), "{msg}");
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let msg = SqliteStore::open(&real)
        .await
        .expect_err("0777 dir")
        .to_string();
    assert!(msg.contains("mode 0777"), "{msg}");
}
