use super::*;

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .expect("readable")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Stages a bundle with a marker file and swaps it in without ACME types.
fn commit_marker(bundle: &BundleDir, marker: &str) {
    let staging = bundle.stage().expect("staged");
    write_synced(&staging.path().join("cert.pem"), marker.as_bytes(), 0o644).expect("written");
    write_synced(&staging.path().join(META_FILE), b"{}", 0o644).expect("written");
    let mut staging = staging;
    staging.swap_in().expect("swapped");
    staging.committed = true;
}

#[test]
fn the_stable_path_always_shows_one_whole_version_and_keeps_the_previous_one() {
    let tmp = tempfile::tempdir().expect("tmp");
    let stable = tmp.path().join("certs").join("example.com");
    let bundle = BundleDir::new(&stable).expect("bundle");
    for i in 1..=4 {
        commit_marker(&bundle, &format!("v{i}"));
        assert_eq!(
            fs::read_to_string(stable.join("cert.pem")).expect("readable"),
            format!("v{i}")
        );
    }
    assert!(
        fs::symlink_metadata(&stable)
            .expect("exists")
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        names(&tmp.path().join("certs")),
        vec![".example.com.v3", ".example.com.v4", "example.com"]
    );
}

#[test]
fn a_directory_from_an_older_certfleet_is_swapped_out_whole() {
    let tmp = tempfile::tempdir().expect("tmp");
    let stable = tmp.path().join("example.com");
    fs::create_dir(&stable).expect("made");
    fs::write(stable.join("cert.pem"), "legacy").expect("written");
    let bundle = BundleDir::new(&stable).expect("bundle");
    commit_marker(&bundle, "new");
    assert_eq!(
        fs::read_to_string(stable.join("cert.pem")).expect("readable"),
        "new"
    );
    assert_eq!(
        fs::read_to_string(tmp.path().join(".example.com.v0/cert.pem")).expect("kept"),
        "legacy"
    );
}

#[test]
fn a_dropped_staging_directory_leaves_nothing_not_even_the_parents_it_made() {
    let tmp = tempfile::tempdir().expect("tmp");
    let stable = tmp.path().join("a").join("b").join("example.com");
    let bundle = BundleDir::new(&stable).expect("bundle");
    let staging = bundle.stage().expect("staged");
    fs::write(staging.key_path(), "key").expect("written");
    drop(staging);
    assert!(names(tmp.path()).is_empty(), "{:?}", names(tmp.path()));
}

#[test]
fn sweep_removes_what_dead_writers_left_and_keeps_live_bundles() {
    let tmp = tempfile::tempdir().expect("tmp");
    let bundle = BundleDir::new(&tmp.path().join("example.com")).expect("bundle");
    commit_marker(&bundle, "v1");
    commit_marker(&bundle, "v2");
    // A dead writer's staging dir and link (pid 0 is never a process of ours), an orphan
    // version from a kill between rename and swap, a live writer's staging dir and a
    // user's own hidden directory.
    let dead = tmp.path().join(".example.com.tmp-0-7");
    fs::create_dir(&dead).expect("made");
    symlink(".example.com.v2", tmp.path().join(".example.com.link-0-3")).expect("made");
    let orphan = tmp.path().join(".example.com.v9");
    fs::create_dir(&orphan).expect("made");
    fs::write(orphan.join(META_FILE), "{}").expect("written");
    let live = bundle.stage().expect("staged");
    fs::create_dir(tmp.path().join(".mine.v1")).expect("made");
    // A temporary file of write_atomic killed mid-write.
    fs::write(tmp.path().join(".meta.json.tmp-0-00ab12cd34ef5678"), "{").expect("written");
    assert_eq!(sweep(tmp.path()).expect("swept"), 4);
    let mut want = vec![
        ".example.com.v1".to_owned(),
        ".example.com.v2".to_owned(),
        ".mine.v1".to_owned(),
        "example.com".to_owned(),
        live.path()
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned(),
    ];
    want.sort();
    assert_eq!(names(tmp.path()), want);
}

/// While versions are swapped in, the stable path never disappears and a reader that
/// resolves it once reads files of one version only.
#[test]
fn readers_never_see_a_missing_path_or_a_mixed_bundle_during_swaps() {
    let tmp = tempfile::tempdir().expect("tmp");
    let stable = tmp.path().join("example.com");
    let bundle = BundleDir::new(&stable).expect("bundle");
    let commit = |i: u32| {
        let mut staging = bundle.stage().expect("staged");
        for f in ["cert.pem", "privkey.pem"] {
            write_synced(&staging.path().join(f), format!("v{i}").as_bytes(), 0o644)
                .expect("written");
        }
        write_synced(&staging.path().join(META_FILE), b"{}", 0o644).expect("written");
        staging.swap_in().expect("swapped");
        staging.committed = true;
    };
    commit(0);
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut reads = 0u32;
            while !done.load(Ordering::Relaxed) && reads < 1_000_000 {
                let cert = fs::read_to_string(stable.join("cert.pem"))
                    .expect("the stable path is always there");
                assert!(cert.starts_with('v'), "{cert}");
                // The version the link named may be removed two swaps later; a reader that
                // slow gets an error (here or below), never a mix.
                let Ok(dir) = fs::canonicalize(&stable) else {
                    reads += 1;
                    continue;
                };
                if let (Ok(c), Ok(k)) = (
                    fs::read_to_string(dir.join("cert.pem")),
                    fs::read_to_string(dir.join("privkey.pem")),
                ) {
                    assert_eq!(c, k, "cert and key of one version");
                }
                reads += 1;
            }
            reads
        });
        for i in 1..=200 {
            commit(i);
        }
        done.store(true, Ordering::Relaxed);
        assert!(reader.join().expect("reader") > 0);
    });
    assert_eq!(
        fs::read_to_string(stable.join("cert.pem")).expect("read"),
        "v200"
    );
}

#[test]
fn a_file_batch_syncs_what_it_wrote_and_names_a_file_it_cannot_create() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().expect("tmp");
    let mut files = FileBatch::default();
    files
        .write(tmp.path().join(CERT_FILE), b"leaf", 0o644)
        .expect("written");
    files
        .write(tmp.path().join(META_FILE), b"{}", 0o600)
        .expect("written");
    fs::write(tmp.path().join(CHAIN_FILE), "planted").expect("planted");
    let refused = files
        .write(tmp.path().join(CHAIN_FILE), b"issuers", 0o644)
        .expect_err("an existing file is never overwritten");
    assert!(refused.to_string().contains(CHAIN_FILE), "{refused}");
    files.sync().expect("synced");
    let read = |name: &str| fs::read_to_string(tmp.path().join(name)).expect("readable");
    assert_eq!(
        (read(CERT_FILE), read(META_FILE), read(CHAIN_FILE)),
        ("leaf".to_owned(), "{}".to_owned(), "planted".to_owned())
    );
    let mode = |name: &str| fs::metadata(tmp.path().join(name)).expect("exists").mode() & 0o777;
    assert_eq!((mode(CERT_FILE), mode(META_FILE)), (0o644, 0o600));
}
