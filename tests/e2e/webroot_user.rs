//! Webroot under `umask 027` served by a web server running as another user (issue 15,
//! acceptance 7): the web root belongs to root with the web server's group (0750), the
//! server runs as `www-data` (not root, not certfleet's user), certfleet runs with umask
//! 027, and Pebble validates http-01 through that server.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;

use certfleet_testenv::{PebbleOptions, UserHttpServer, certfleet_command};

use crate::common::{COMMAND_TIMEOUT, Env};

const USER: &str = "www-data";

fn group_of(user: &str) -> u32 {
    let name = std::ffi::CString::new(user).expect("name");
    // SAFETY: getpwnam with a NUL-terminated name; the entry is read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(!pw.is_null(), "user {user} exists (Debian's base-passwd)");
    unsafe { (*pw).pw_gid }
}

#[tokio::test]
async fn webroot_under_umask_027_is_served_by_a_web_server_running_as_another_user() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to run the web server as {USER}");
        return;
    }
    let Some(env) = Env::start(PebbleOptions::default()).await else {
        return;
    };
    env.register_account().await;
    let gid = group_of(USER);
    // A directory of its own that others may traverse (the e2e temp dir is 0700).
    let base = tempfile::Builder::new()
        .prefix("certfleet-www-")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let webroot = base.path().join("www");
    std::fs::create_dir(&webroot).expect("mkdir");
    std::os::unix::fs::chown(&webroot, Some(0), Some(gid)).expect("chown root:www-data");
    std::fs::set_permissions(&webroot, std::fs::Permissions::from_mode(0o750)).expect("chmod");
    let server = UserHttpServer::start(
        &webroot,
        env.pebble.http01_port(),
        USER,
        &env.path("www.log"),
    )
    .expect("web server as www-data");

    // The failure this prevents: what a root process makes under umask 027 without care
    // (root:root 0750/0640) the server cannot read.
    let control = webroot.join("control");
    std::fs::create_dir(&control).expect("mkdir control");
    std::fs::set_permissions(&control, std::fs::Permissions::from_mode(0o750)).expect("chmod");
    std::fs::write(control.join("f"), "x").expect("write");
    std::fs::set_permissions(control.join("f"), std::fs::Permissions::from_mode(0o640))
        .expect("chmod");
    assert_eq!(server.get("/control/f").expect("GET"), 404, "unreadable");

    let out = env.path("out");
    let mut cmd = certfleet_command();
    cmd.arg("--state-dir")
        .arg(env.state_dir())
        .args(["--directory", &env.pebble.directory_url(), "--ca-root"])
        .arg(env.pebble.tls_root_pem_path())
        .args([
            "issue",
            "--name",
            "www.umask.test",
            "--name",
            "alt.umask.test",
        ])
        .args(["--challenge", "http-01", "--webroot"])
        .arg(&webroot)
        .arg("--out")
        .arg(&out);
    // SAFETY: umask is async-signal-safe and touches only the child's creation mask.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0o027);
            Ok(())
        });
    }
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let output = tokio::time::timeout(COMMAND_TIMEOUT, cmd.output())
        .await
        .expect("issue finishes")
        .expect("certfleet runs");
    let log = server.log_text();
    assert!(
        output.status.success(),
        "issue by webroot: {}\nserver log:\n{log}",
        String::from_utf8_lossy(&output.stderr)
    );
    let served = log
        .lines()
        .filter(|l| l.contains("GET /.well-known/acme-challenge/") && l.contains("\" 200 "))
        .count();
    assert!(
        served >= 2,
        "the server as {USER} served both tokens:\n{log}"
    );
    assert!(out.join("fullchain.pem").exists(), "certificate written");
    // Created with the web root's group and modes that let the server read, tokens gone.
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    let gid_of = |p: &Path| std::fs::metadata(p).expect("stat").gid();
    for dir in [
        webroot.join(".well-known"),
        webroot.join(".well-known/acme-challenge"),
    ] {
        assert_eq!(
            (mode(&dir), gid_of(&dir)),
            (0o755, gid),
            "{}",
            dir.display()
        );
    }
    let left = std::fs::read_dir(webroot.join(".well-known/acme-challenge"))
        .expect("read dir")
        .count();
    assert_eq!(left, 0, "challenge files removed after validation");
}
