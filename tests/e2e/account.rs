//! Accounts: register/show, key rollover, deactivation, external account binding.

use certfleet_testenv::PebbleOptions;
use serde_json::Value;

use crate::common::Env;

/// The example MAC key from Pebble's documentation (base64url, 48 bytes).
const EAB_KID: &str = "kid-1";
const EAB_KEY: &str = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";

/// `<state>/accounts/<slug>/account.json` per docs/cli.md.
fn account_json_path(env: &Env) -> std::path::PathBuf {
    let url = env.pebble.directory_url();
    let rest = url.strip_prefix("https://").unwrap_or(&url);
    let slug: String = rest
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    env.state_dir()
        .join("accounts")
        .join(slug)
        .join("account.json")
}

#[tokio::test]
async fn account_register_with_contact_then_show_reports_url_status_and_contact() {
    let Some(env) = Env::start(PebbleOptions::default()).await else {
        return;
    };
    let key = env.generate_key("account.pem", "es256").await;

    let refused = env.run(&["account", "register", "--key", &key]).await;
    refused.assert_exit_1();
    let lower = refused.stderr.to_lowercase();
    assert!(
        lower.contains("terms") || lower.contains("agree"),
        "registering without --agree-tos must say why:\n{refused}"
    );

    env.run(&[
        "account",
        "register",
        "--key",
        &key,
        "--contact",
        "mailto:ops@certfleet.test",
        "--agree-tos",
    ])
    .await
    .assert_ok();

    let show = env.run(&["account", "show"]).await;
    show.assert_ok();
    let v = show.json();
    let url = v["url"]
        .as_str()
        .unwrap_or_else(|| panic!("no url:\n{show}"));
    let acme_origin = env
        .pebble
        .directory_url()
        .trim_end_matches("/dir")
        .to_owned();
    assert!(
        url.starts_with(&format!("{acme_origin}/")),
        "account URL {url} should be on {acme_origin}"
    );
    assert_eq!(v["status"], "valid", "{v}");
    let contacts: Vec<&str> = v["contact"]
        .as_array()
        .unwrap_or_else(|| panic!("contact is not an array: {v}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(contacts, ["mailto:ops@certfleet.test"]);
    assert_eq!(v["key_ref"].as_str(), Some(key.as_str()), "{v}");
    assert_eq!(
        v["directory"].as_str(),
        Some(env.pebble.directory_url().as_str()),
        "{v}"
    );

    let stored = account_json_path(&env);
    let text = std::fs::read_to_string(&stored)
        .unwrap_or_else(|e| panic!("{} (docs/cli.md state layout): {e}", stored.display()));
    assert!(
        text.contains(url),
        "{} should hold the account URL",
        stored.display()
    );
}

#[tokio::test]
async fn account_rollover_moves_account_to_new_key_and_old_key_finds_nothing() {
    let Some(env) = Env::start(PebbleOptions::default()).await else {
        return;
    };
    let k1 = env.register_account().await;
    let url = env.account_url().await;
    let k2 = env.generate_key("account-2.pem", "es384").await;

    env.run(&["account", "rollover", "--new-key", &k2])
        .await
        .assert_ok();

    let old = env.run(&["account", "find", "--key", &k1]).await;
    old.assert_exit_1();
    assert!(
        !old.stdout.contains(&url),
        "the old key must no longer find the account:\n{old}"
    );

    let new = env.run(&["account", "find", "--key", &k2]).await;
    new.assert_ok();
    assert!(
        new.stdout.contains(&url),
        "the new key should find account {url}:\n{new}"
    );

    let show = env.run(&["account", "show"]).await;
    show.assert_ok();
    assert_eq!(
        show.json()["key_ref"].as_str(),
        Some(k2.as_str()),
        "state follows the rollover"
    );

    let names = ["rollover.certfleet.test"];
    env.issue_standalone(&names, "out", &[]).await.assert_ok();
    let root = env.issuing_root_file(0).await;
    let (_, meta) = crate::common::check_issued(&env.path("out"), &names, &root);
    assert_eq!(meta["account_url"].as_str(), Some(url.as_str()));
}

#[tokio::test]
async fn account_deactivate_then_issue_fails_with_exit_1_mentioning_deactivated() {
    let Some(env) = Env::start(PebbleOptions::default()).await else {
        return;
    };
    env.register_account().await;
    env.run(&["account", "deactivate", "--yes"])
        .await
        .assert_ok();

    let issue = env
        .issue_standalone(&["deactivated.certfleet.test"], "out", &[])
        .await;
    issue.assert_exit_1();
    assert!(
        issue.stderr.to_lowercase().contains("deactivated"),
        "stderr should say the account is deactivated:\n{issue}"
    );
    assert!(!env.path("out").join("cert.pem").exists());
}

#[tokio::test]
async fn account_deactivate_without_yes_is_refused_and_account_stays_valid() {
    let Some(env) = Env::start(PebbleOptions::default()).await else {
        return;
    };
    env.register_account().await;
    let refused = env.run(&["account", "deactivate"]).await;
    assert!(
        !refused.status.success(),
        "deactivate without --yes must not succeed:\n{refused}"
    );
    let show = env.run(&["account", "show"]).await;
    show.assert_ok();
    assert_eq!(show.json()["status"], "valid");
}

#[tokio::test]
async fn eab_required_register_fails_without_binding_and_succeeds_with_it() {
    let Some(env) =
        Env::start(PebbleOptions::default().external_account_binding(EAB_KID, EAB_KEY)).await
    else {
        return;
    };
    let key = env.generate_key("account.pem", "es256").await;
    let base = ["account", "register", "--key", &key, "--agree-tos"];

    let without = env.run(&base).await;
    without.assert_exit_1();
    assert!(
        without
            .stderr
            .to_lowercase()
            .contains("external account binding"),
        "stderr should name external account binding:\n{without}"
    );

    let mut with = base.to_vec();
    with.extend(["--eab-kid", EAB_KID, "--eab-hmac-key", EAB_KEY]);
    env.run(&with).await.assert_ok();
    let url = env.account_url().await;
    assert!(url.starts_with("https://localhost:"), "{url}");
}
