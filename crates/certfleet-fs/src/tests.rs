use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::*;

const NOBODY: u32 = 65534;

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A 0755 directory with a 0644 "library" in it, inside a fresh temporary directory.
fn library_in_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("plugins");
    std::fs::create_dir(&dir).expect("mkdir");
    chmod(&dir, 0o755);
    let lib = dir.join("libx.so");
    std::fs::write(&lib, b"library bytes").expect("write");
    chmod(&lib, 0o644);
    (tmp, lib)
}

fn untrusted(err: FsError) -> (String, &'static str, std::path::PathBuf) {
    let msg = err.to_string();
    match err {
        FsError::UntrustedLibrary { what, path, .. } => (msg, what, path),
        other => panic!("expected UntrustedLibrary, got {other}"),
    }
}

#[test]
fn trusted_library_is_loaded_from_the_checked_descriptor() {
    let _serial = umask_lock();
    let (_tmp, lib) = library_in_dir();
    let link = lib.with_file_name("libalias.so");
    std::os::unix::fs::symlink(&lib, &link).expect("symlink");
    let t = TrustedLibrary::open(&link).expect("trusted");
    assert_eq!(t.real_path(), lib.as_path());
    // Replacing the file after the check changes nothing about what gets loaded.
    std::fs::remove_file(&lib).expect("rm");
    std::fs::write(&lib, b"swapped").expect("write");
    let loaded = std::fs::read(t.load_path()).expect("read fd path");
    assert_eq!(loaded, b"library bytes");
}

#[test]
fn a_loaded_library_keeps_its_descriptor_and_a_failed_load_closes_it() {
    let _serial = umask_lock();
    let (_tmp, lib) = library_in_dir();
    let mut seen = PathBuf::new();
    let t = TrustedLibrary::open(&lib).expect("trusted");
    let bytes = t
        .load_and_keep(|p| {
            seen = p.to_owned();
            std::fs::read(p)
        })
        .expect("load");
    assert_eq!(bytes, b"library bytes");
    // Still the same file under the same number: the loader's name for it stays valid.
    assert_eq!(std::fs::read(&seen).expect("kept open"), b"library bytes");

    let t = TrustedLibrary::open(&lib).expect("trusted");
    let mut failed = PathBuf::new();
    let err = t
        .load_and_keep(|p| {
            failed = p.to_owned();
            Err::<(), _>("not a library")
        })
        .expect_err("load fails");
    assert_eq!(err, "not a library");
    assert_ne!(failed, seen, "a second library gets its own descriptor");
    assert!(
        std::fs::read_link(&failed).map_or(true, |target| target != lib),
        "the descriptor of a failed load is closed"
    );
}

#[test]
fn library_owned_by_another_user_is_refused_naming_file_and_owner() {
    let _serial = umask_lock();
    if euid() != 0 {
        eprintln!("skipped: chown to another user needs root");
        return;
    }
    let (_tmp, lib) = library_in_dir();
    std::os::unix::fs::chown(&lib, Some(NOBODY), None).expect("chown");
    let (msg, what, path) = untrusted(TrustedLibrary::open(&lib).expect_err("foreign owner"));
    assert_eq!((what, path.as_path()), ("file", lib.as_path()));
    assert!(msg.contains("uid 65534 (nobody)"), "{msg}");
    assert!(msg.contains(&lib.display().to_string()), "{msg}");
}

#[test]
fn library_in_a_world_writable_directory_is_refused() {
    let _serial = umask_lock();
    let (_tmp, lib) = library_in_dir();
    let dir = lib.parent().expect("parent").to_owned();
    chmod(&dir, 0o777);
    let (msg, what, path) = untrusted(TrustedLibrary::open(&lib).expect_err("0777 dir"));
    assert_eq!((what, path.as_path()), ("directory", dir.as_path()));
    assert!(msg.contains("mode 0777"), "{msg}");
    // Sticky (like /tmp): others may add files but not replace ours.
    chmod(&dir, 0o1777);
    TrustedLibrary::open(&lib).expect("sticky directory is fine");
}

#[test]
fn writable_library_file_is_refused_with_its_mode() {
    let _serial = umask_lock();
    let (_tmp, lib) = library_in_dir();
    for mode in [0o666, 0o664] {
        chmod(&lib, mode);
        let (msg, what, _) = untrusted(TrustedLibrary::open(&lib).expect_err("writable"));
        assert_eq!(what, "file");
        assert!(msg.contains(&format!("mode {mode:04o}")), "{msg}");
    }
}

#[test]
fn directory_owned_by_another_user_is_refused() {
    let _serial = umask_lock();
    if euid() != 0 {
        eprintln!("skipped: chown to another user needs root");
        return;
    }
    let (_tmp, lib) = library_in_dir();
    let dir = lib.parent().expect("parent");
    std::os::unix::fs::chown(dir, Some(NOBODY), None).expect("chown");
    let (_, what, path) = untrusted(TrustedLibrary::open(&lib).expect_err("foreign dir"));
    assert_eq!((what, path.as_path()), ("directory", dir));
}

/// Held by every test in this binary: one of them sets the process umask to 000 for a
/// moment, and anything another test created meanwhile would get mode 0777/0666.
fn umask_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `f` with the process umask set to 000; the caller holds [`umask_lock`].
fn with_umask_000<T>(_held: &std::sync::MutexGuard<'static, ()>, f: impl FnOnce() -> T) -> T {
    // SAFETY: umask has no preconditions.
    let old = unsafe { libc::umask(0) };
    let out = f();
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    out
}

#[test]
fn directories_and_private_files_get_exact_modes_under_umask_000() {
    let serial = umask_lock();
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join("a/b/state");
    let certs = tmp.path().join("certs");
    let db = state.join("batch.db");
    with_umask_000(&serial, || {
        ensure_dir(&state, 0o700).expect("state dir");
        ensure_dir(&certs, 0o755).expect("cert dir");
        open_private_file(&db, 0o600).expect("db");
    });
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").mode() & 0o7777;
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&certs), 0o755);
    assert_eq!(mode(&db), 0o600);
    for p in [tmp.path().join("a"), tmp.path().join("a/b")] {
        assert_eq!(
            mode(&p) & 0o022,
            0,
            "{} is group/other-writable",
            p.display()
        );
    }
    // A looser existing file is tightened.
    chmod(&db, 0o666);
    open_private_file(&db, 0o600).expect("reopen");
    assert_eq!(mode(&db), 0o600);
}

#[test]
fn planted_symlinks_and_other_writable_directories_are_refused() {
    let _serial = umask_lock();
    let tmp = tempfile::tempdir().expect("tempdir");
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, b"precious").expect("write");
    let lock = tmp.path().join("batch.lock");
    std::os::unix::fs::symlink(&victim, &lock).expect("symlink");
    let err = open_private_file(&lock, 0o600).expect_err("symlinked file");
    assert!(matches!(err, FsError::Symlink { .. }), "{err}");
    assert!(err.to_string().contains("batch.lock"), "{err}");
    assert_eq!(std::fs::read(&victim).expect("read"), b"precious");

    let real = tmp.path().join("real");
    std::fs::create_dir(&real).expect("mkdir");
    let linked = tmp.path().join("linked");
    std::os::unix::fs::symlink(&real, &linked).expect("symlink");
    let err = ensure_dir(&linked, 0o700).expect_err("symlinked dir");
    assert!(matches!(err, FsError::Symlink { .. }), "{err}");

    chmod(&real, 0o777);
    let err = ensure_dir(&real, 0o700).expect_err("0777 dir");
    assert!(err.to_string().contains("mode 0777"), "{err}");
    chmod(&real, 0o1777);
    ensure_dir(&real, 0o700).expect("sticky is fine");
}

#[test]
fn beneath_refuses_symlinks_below_the_root_and_creates_files_exclusively() {
    let serial = umask_lock();
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("www");
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir_all(root.join(".well-known")).expect("mkdir");
    std::fs::create_dir(&elsewhere).expect("mkdir");
    std::os::unix::fs::symlink(&elsewhere, root.join(".well-known/acme-challenge"))
        .expect("symlink");
    let err = Beneath::open(&root, &[".well-known", "acme-challenge"], Some(0o755))
        .expect_err("symlinked component");
    assert!(matches!(err, FsError::Symlink { .. }), "{err}");
    assert!(err.to_string().contains("acme-challenge"), "{err}");

    std::fs::remove_file(root.join(".well-known/acme-challenge")).expect("rm");
    let dir = with_umask_000(&serial, || {
        let dir =
            Beneath::open(&root, &[".well-known", "acme-challenge"], Some(0o755)).expect("created");
        // A planted symlink at the token name is replaced, its target untouched.
        let target = elsewhere.join("target");
        std::fs::write(&target, b"keep").expect("write");
        std::os::unix::fs::symlink(&target, root.join(".well-known/acme-challenge/tok"))
            .expect("symlink");
        dir.create_file("tok", b"key-authz", 0o644).expect("create");
        assert_eq!(std::fs::read(&target).expect("read"), b"keep");
        dir
    });
    let file = root.join(".well-known/acme-challenge/tok");
    let meta = std::fs::symlink_metadata(&file).expect("stat");
    assert!(meta.is_file());
    assert_eq!(meta.mode() & 0o7777, 0o644);
    assert_eq!(std::fs::read(&file).expect("read"), b"key-authz");
    dir.remove_file("tok").expect("rm");
    dir.remove_file("tok").expect("already gone is fine");
    assert!(dir.create_file("../x", b"", 0o644).is_err());
}
