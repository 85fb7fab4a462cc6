use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::*;

/// A hook script, run as `/bin/sh <script>`: executing the file itself fails with
/// ETXTBSY now and then, when another test's thread forks while this one still has the
/// file open for writing (the child holds the descriptor until its exec).
fn script(dir: &Path, body: &str) -> Command {
    let path = dir.join("hook.sh");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut command = Command::new("/bin/sh");
    command.arg(path);
    command
}

/// Secrets certfleet itself may be given through its environment.
const SECRETS: [(&str, &str); 6] = [
    ("AWS_SECRET_ACCESS_KEY", "aws-secret-0123456789"),
    ("PGPASSWORD", "pg-secret-0123456789"),
    ("CERTFLEET_EAB_HMAC_KEY", "eab-secret-0123456789"),
    ("CLOUDFLARE_API_TOKEN", "cf-secret-0123456789"),
    ("CERTFLEET_PIN", "1234-pin-secret"),
    ("TSIG_SECRET", "tsig-secret-0123456789"),
];

#[test]
fn hook_sees_only_the_allow_list_and_its_configured_env() {
    for (k, v) in SECRETS {
        // SAFETY: this test binary's other tests do not read these variables; std's own
        // environment lock orders this with Command::spawn.
        unsafe { std::env::set_var(k, v) };
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let dump = dir.path().join("env.txt");
    let hook = script(dir.path(), &format!("env > {}", dump.display()));
    let env = BTreeMap::from([("DNS_PORT".to_owned(), "5353".to_owned())]);
    let out = run(hook, &env, Duration::from_secs(20)).expect("run");
    assert!(out.status.as_ref().is_ok_and(|s| s.success()), "{out:?}");
    let seen = std::fs::read_to_string(&dump).expect("env dump");
    for (k, v) in SECRETS {
        assert!(
            !seen.contains(k) && !seen.contains(v),
            "hook saw {k}: {seen}"
        );
    }
    assert!(seen.lines().any(|l| l == "DNS_PORT=5353"), "{seen}");
    assert!(seen.lines().any(|l| l.starts_with("PATH=")), "{seen}");
    let names: Vec<&str> = seen
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, _)| k)
        .collect();
    for name in names {
        // The shell adds PWD/SHLVL/_ itself; nothing else may come from certfleet.
        assert!(
            INHERITED_ENV.contains(&name)
                || ["DNS_PORT", "PWD", "SHLVL", "_", "OLDPWD"].contains(&name),
            "unexpected variable {name} in {seen}"
        );
    }
}

fn is_dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie waiting for its (new) parent to reap it has already died.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn timeout_kills_the_whole_process_group_including_grandchildren() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("grandchild.pid");
    let hook = script(
        dir.path(),
        &format!("sleep 300 &\necho $! > {}\nsleep 300", pid_file.display()),
    );
    let started = Instant::now();
    let out = run(hook, &BTreeMap::new(), Duration::from_secs(1)).expect("run");
    let took = started.elapsed();
    let err = out.status.expect_err("must time out");
    assert!(err.contains("killed it and its process group"), "{err}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    // Killing is asynchronous only until the kernel delivers SIGKILL: poll, bounded.
    let gone = (0..200).any(|_| {
        if is_dead(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
        false
    });
    assert!(gone, "grandchild {pid} survived the timeout");
}

#[test]
fn a_background_grandchild_holding_the_output_does_not_outlive_the_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The hook itself exits at once; its background child keeps stdout open.
    let hook = script(dir.path(), "sleep 300 &\necho started\nexit 0");
    let started = Instant::now();
    let out = run(hook, &BTreeMap::new(), Duration::from_secs(1)).expect("run");
    assert!(out.status.as_ref().is_ok_and(|s| s.success()), "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(out.output.contains("started"), "{out:?}");
    let note = out.discarded_note.expect("a note about the stragglers");
    assert!(note.contains("killed its process group"), "{note}");
}

#[test]
fn output_is_capped_and_the_rest_discarded_with_a_note() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 8 MiB on stdout, then a marker on stderr: the run still completes.
    let hook = script(
        dir.path(),
        "head -c 8388608 /dev/zero | tr '\\0' 'x'\necho done >&2",
    );
    let out = run(hook, &BTreeMap::new(), Duration::from_secs(60)).expect("run");
    assert!(out.status.as_ref().is_ok_and(|s| s.success()), "{out:?}");
    assert!(out.output.len() <= OUTPUT_CAP, "kept {}", out.output.len());
    let note = out.discarded_note.expect("note");
    assert!(note.contains("discarded"), "{note}");
    assert!(note.contains("64 KiB"), "{note}");
}
