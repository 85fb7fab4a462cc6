//! A PKCS#11 module runs inside certfleet: it is loaded only when nobody but root or the
//! running user could have changed it (file and every directory above it).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use certfleet_keys_pkcs11::{Pkcs11Backend, Pkcs11Uri};

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

async fn load_error(module: &Path) -> String {
    let uri = Pkcs11Uri::parse(&format!(
        "pkcs11:token=t;object=k?module-path={}&pin-value=1234",
        module.display()
    ))
    .expect("uri");
    match Pkcs11Backend::new().load_uri(&uri).await {
        Ok(_) => panic!("{} was loaded", module.display()),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writable_modules_and_modules_in_writable_directories_are_refused() {
    if !certfleet_testenv::require_softhsm() {
        return;
    }
    let original = certfleet_testenv::softhsm_module().expect("module");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("modules");
    std::fs::create_dir(&dir).expect("mkdir");
    chmod(&dir, 0o755);
    let module = dir.join("libsofthsm2-copy.so");
    std::fs::copy(&original, &module).expect("copy");

    chmod(&module, 0o666);
    let msg = load_error(&module).await;
    assert!(msg.contains("refusing to load"), "{msg}");
    assert!(msg.contains(&module.display().to_string()), "{msg}");
    assert!(msg.contains("has mode 0666"), "{msg}");

    chmod(&module, 0o644);
    chmod(&dir, 0o777);
    let msg = load_error(&module).await;
    assert!(msg.contains("directory"), "{msg}");
    assert!(msg.contains("has mode 0777"), "{msg}");
    assert!(!msg.contains("1234"), "PIN in {msg}");

    if certfleet_fs::euid() == 0 {
        chmod(&dir, 0o755);
        std::os::unix::fs::chown(&module, Some(65534), None).expect("chown");
        let msg = load_error(&module).await;
        assert!(msg.contains("owned by uid 65534"), "{msg}");
    }
}
