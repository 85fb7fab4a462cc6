//! PINs never leak and never lock a token (issue 12, acceptance 2–4): no PIN — given as
//! `pin-value=`, in a PIN file or in an environment variable — in any file certfleet writes,
//! in a batch report or store, or in any output at `-vv`; `batch run` with token
//! certificate keys logs in with the right PIN and refuses `pin-value=` before ordering;
//! a wrong PIN file costs one `C_Login` over any number of runs until the file changes
//! (counted by OpenSC's `pkcs11-spy.so` between certfleet and SoftHSM).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use certfleet_testenv::{
    PebbleOptions, SoftHsm, SpyLog, ToolTarget, pkcs11_tool_keypair, spki_matches_jwk,
};

use crate::batch::{report, write_config};
use crate::common::{Env, Run, check_issued, mode};
use crate::hsm::run_in;

/// Distinctive, so a grep finds it anywhere it leaks.
const PIN: &str = "5092736148";
const TOKEN: &str = "pins";
const ENV_PIN: &str = "CERTFLEET_TEST_TOKEN_PIN";

fn plain(program: &str) -> Command {
    Command::new(program)
}

/// A SoftHSM token with keys made by pkcs11-tool, and the spy in front of its module.
struct PinEnv {
    env: Env,
    hsm: SoftHsm,
    spy: SpyLog,
    pin_file: PathBuf,
    /// Every run's output, searched for the PIN at the end.
    outputs: std::cell::RefCell<Vec<String>>,
}

impl PinEnv {
    async fn start(labels: &[&str]) -> Option<PinEnv> {
        if !certfleet_testenv::require_softhsm()
            || !certfleet_testenv::require_tool("pkcs11-tool", "opensc")
            || !certfleet_testenv::require_tool(
                certfleet_testenv::PKCS11_SPY_MODULE,
                "opensc-pkcs11",
            )
        {
            return None;
        }
        let env = Env::start(PebbleOptions::default()).await?;
        let hsm = SoftHsm::new().expect("softhsm");
        hsm.init_token(TOKEN, PIN).expect("token");
        let envs = vec![hsm.env()];
        let tools = ToolTarget {
            make: &plain,
            envs: &envs,
            module: hsm.module_path(),
            token: TOKEN,
            pin: PIN,
        };
        for (i, label) in labels.iter().enumerate() {
            pkcs11_tool_keypair(&tools, "EC:prime256v1", label, &format!("{:02x}", i + 1))
                .expect("pkcs11-tool");
        }
        // Outside the directories searched for the PIN: the spy logs what it is given.
        let spy = SpyLog::new(hsm.module_path(), &hsm.dir().join("spy.log"));
        let pin_file = hsm.pin_file("pin", PIN).expect("pin file");
        Some(PinEnv {
            env,
            hsm,
            spy,
            pin_file,
            outputs: Default::default(),
        })
    }

    /// A reference to `label` through the spy with the PIN source `pin` (`pin-value=…`,
    /// `pin-source=…`).
    fn uri(&self, label: &str, pin: &str) -> String {
        format!(
            "pkcs11:token={TOKEN};object={label}?module-path={}&{pin}",
            self.spy.module().display()
        )
    }

    fn file_pin(&self) -> String {
        format!("pin-source=file:{}", self.pin_file.display())
    }

    async fn run(&self, args: &[&str]) -> Run {
        let mut vars: Vec<(OsString, OsString)> =
            vec![self.hsm.env(), (ENV_PIN.into(), PIN.into())];
        vars.extend(self.spy.env());
        let mut all = vec!["-vv"];
        all.extend(args);
        let run = run_in(&[], &self.env, &all, &vars).await;
        self.outputs
            .borrow_mut()
            .push(format!("{}\n{}", run.stdout, run.stderr));
        run
    }

    /// Asserts that no file under `dir` (but the PIN file and the spy's log) and no output
    /// so far holds the PIN.
    fn assert_pin_nowhere(&self, dir: &Path, min_files: usize) {
        let files = crate::common::files_under(dir);
        for path in &files {
            let bytes = std::fs::read(path).expect("read");
            assert!(
                !bytes.windows(PIN.len()).any(|w| w == PIN.as_bytes()),
                "the PIN is in {}",
                path.display()
            );
        }
        let files = files.len();
        assert!(
            files >= min_files,
            "searched only {files} files under {}",
            dir.display()
        );
        for out in self.outputs.borrow().iter() {
            assert!(!out.contains(PIN), "the PIN is in an output:\n{out}");
        }
    }
}

/// The return value the spy logged for each `C_Login`.
fn login_results(spy: &SpyLog) -> Vec<String> {
    let text = spy.text();
    let mut results = Vec::new();
    let mut in_login = false;
    for line in text.lines() {
        if let Some((n, f)) = line.split_once(": ")
            && n.trim().parse::<u64>().is_ok()
        {
            in_login = f.trim() == "C_Login";
        } else if in_login && let Some(rv) = line.trim().strip_prefix("Returned:") {
            results.push(rv.split_whitespace().last().unwrap_or("").to_owned());
            in_login = false;
        }
    }
    results
}

#[tokio::test]
async fn pins_never_leak_and_batch_logs_in_with_the_pin_source() {
    let Some(p) = PinEnv::start(&["acct", "web", "batch1", "batch2"]).await else {
        return;
    };
    // pin-value works where nothing is stored, and is refused where the reference is kept.
    p.run(&["key", "show", &p.uri("acct", &format!("pin-value={PIN}"))])
        .await
        .assert_ok();
    let refused = p
        .run(&[
            "account",
            "register",
            "--key",
            &p.uri("acct", &format!("pin-value={PIN}")),
            "--agree-tos",
        ])
        .await;
    refused.assert_exit_1();
    assert!(refused.stderr.contains("pin-source=file:"), "{refused}");
    let account = p.uri("acct", &format!("pin-source=env:{ENV_PIN}"));
    p.run(&["account", "register", "--key", &account, "--agree-tos"])
        .await
        .assert_ok();
    let out = p.env.path("out");
    let web = p.uri("web", &p.file_pin());
    let mut issue = p.env.issue_standalone_args(&["pins.certfleet.test"], "out");
    issue.extend(["--key".to_owned(), web]);
    p.run(&issue.iter().map(String::as_str).collect::<Vec<_>>())
        .await
        .assert_ok();
    let inventory = p.env.state_dir().join("inventory/pins.certfleet.test.json");
    for file in [out.join("meta.json"), out.join("key.ref"), inventory] {
        assert_eq!(mode(&file), 0o600, "{} names a token key", file.display());
    }

    // A batch file with pin-value= is refused before anything is ordered.
    let config = write_config(&p.env, "");
    // Inputs live beside the PIN file, outside the directories searched for the PIN.
    let bad = p.hsm.dir().join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "[defaults]\nchallenge = \"dns-01\"\nkey = \"{}\"\n[[cert]]\nnames = [\"never.pins.test\"]\n",
            p.uri("batch1", &format!("pin-value={PIN}"))
        ),
    )
    .expect("batch file");
    let report_path = p.env.path("report.json");
    let report_s = report_path.to_string_lossy().into_owned();
    let run = p
        .run(&[
            "--config",
            &config,
            "batch",
            "run",
            &bad.to_string_lossy(),
            "--report",
            &report_s,
        ])
        .await;
    assert!(!run.status.success(), "{run}");
    assert!(run.stderr.contains("pin-source=file:"), "{run}");
    assert!(
        !p.env.state_dir().join("certs/never.pins.test").exists(),
        "nothing issued"
    );
    let logins_before = p.spy.calls("C_Login");

    // Token certificate keys in a batch: PIN from a file and from the environment.
    let good = p.hsm.dir().join("good.toml");
    std::fs::write(
        &good,
        format!(
            "[defaults]\nchallenge = \"dns-01\"\n\
             [[cert]]\nnames = [\"one.pins.test\"]\nkey = \"{}\"\n\
             [[cert]]\nnames = [\"two.pins.test\"]\nkey = \"{}\"\n",
            p.uri("batch1", &p.file_pin()),
            p.uri("batch2", &format!("pin-source=env:{ENV_PIN}"))
        ),
    )
    .expect("batch file");
    p.run(&[
        "--config",
        &config,
        "batch",
        "run",
        &good.to_string_lossy(),
        "--report",
        &report_s,
    ])
    .await
    .assert_ok();
    let certs = report(&report_path);
    assert!(certs.iter().all(|c| c["state"] == "issued"), "{certs:?}");
    let root = p.env.issuing_root_file(0).await;
    for (name, label) in [("one.pins.test", "batch1"), ("two.pins.test", "batch2")] {
        let dir = p.env.state_dir().join("certs").join(name);
        let (leaf, _) = check_issued(&dir, &[name], &root);
        let shown = p.run(&["key", "show", &p.uri(label, &p.file_pin())]).await;
        shown.assert_ok();
        assert!(
            spki_matches_jwk(&leaf.spki_der, &shown.json()["jwk"]).expect("compare"),
            "{name}: leaf key != {label}"
        );
    }
    let results = login_results(&p.spy);
    assert!(
        p.spy.calls("C_Login") > logins_before,
        "the batch logged in"
    );
    assert!(
        results
            .iter()
            .all(|rv| rv == "CKR_OK" || rv == "CKR_USER_ALREADY_LOGGED_IN"),
        "every login used the right PIN: {results:?}"
    );

    // Revoke with a pin-value reference (not stored).
    p.run(&[
        "revoke",
        "--cert",
        &out.join("cert.pem").to_string_lossy(),
        "--cert-key",
        &p.uri("web", &format!("pin-value={PIN}")),
    ])
    .await
    .assert_ok();
    p.assert_pin_nowhere(p.env.tmp.path(), 10);
}

#[tokio::test]
async fn pins_a_wrong_pin_file_costs_one_login_over_runs_until_it_changes() {
    let Some(p) = PinEnv::start(&["acct"]).await else {
        return;
    };
    // Beside the spy's log, outside the directories searched for the PIN.
    let wrong = p.hsm.pin_file("wrong", "000000").expect("pin file");
    let key = p.uri("acct", &format!("pin-source=file:{}", wrong.display()));
    for run in 1..=3 {
        let out = p.run(&["key", "show", &key]).await;
        out.assert_exit_1();
        let expected = if run == 1 {
            "rejected the PIN"
        } else {
            "rejected this PIN in an earlier run"
        };
        assert!(out.stderr.contains(expected), "run {run}: {out}");
        assert_eq!(
            p.spy.calls("C_Login"),
            1,
            "run {run}: one login attempt in total"
        );
    }
    assert_eq!(login_results(&p.spy), ["CKR_PIN_INCORRECT"]);
    // The admin fixes the file: the next run logs in.
    std::fs::write(&wrong, format!("{PIN}\n")).expect("pin file");
    p.run(&["key", "show", &key]).await.assert_ok();
    assert_eq!(login_results(&p.spy), ["CKR_PIN_INCORRECT", "CKR_OK"]);
    let memory = p.env.state_dir().join("pin-memory");
    for name in ["key", "rejected"] {
        assert_eq!(mode(&memory.join(name)), 0o600, "{name}");
    }
    p.assert_pin_nowhere(p.env.tmp.path(), 2);
}
