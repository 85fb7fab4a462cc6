use std::os::unix::fs::PermissionsExt;

use super::*;

#[test]
fn library_names_and_listing() {
    assert_eq!(
        library_file_name("rfc2136"),
        "libcertfleet_plugin_rfc2136.so"
    );
    assert_eq!(
        library_file_name("test-panics"),
        "libcertfleet_plugin_test_panics.so"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("libcertfleet_plugin_exec.so"), b"x").expect("write");
    std::fs::write(dir.path().join("libother.so"), b"x").expect("write");
    let paths = PluginPaths {
        dirs: vec![dir.path().to_owned()],
        ..Default::default()
    };
    let listed: Vec<String> = paths.list().into_iter().map(|(n, _)| n).collect();
    assert_eq!(listed, ["exec"]);
    assert!(paths.resolve("exec").is_ok());
    let err = paths.resolve("route53").expect_err("missing");
    assert!(
        err.to_string().contains("libcertfleet_plugin_route53.so"),
        "{err}"
    );
}

#[test]
fn loading_refuses_writable_files_and_non_libraries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("libcertfleet_plugin_fake.so");
    std::fs::write(&path, b"not an ELF file").expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let err = PluginLibrary::load(&path).expect_err("world-writable");
    assert!(matches!(err, HostError::Untrusted { .. }), "{err}");
    assert!(err.to_string().contains("mode 0666"), "{err}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = PluginLibrary::load(&path).expect_err("not ELF");
    assert!(matches!(err, HostError::NotAPlugin { .. }), "{err}");
    assert!(
        err.to_string().contains("is not a certfleet plugin"),
        "{err}"
    );
}
