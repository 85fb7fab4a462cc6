use std::time::{Duration, UNIX_EPOCH};

use crate::zone::{candidates, longest_match, normalize};
use crate::{RetryPolicy, Secret, parse_retry_after, redact, secret_setting};

#[test]
fn longest_suffix_wins_on_label_boundaries() {
    let zones = ["example.com.", "b.example.com", "ample.com", "EXAMPLE.org"];
    let pick = |f: &str| longest_match(f, &zones, |z| z).copied();
    assert_eq!(
        pick("_acme-challenge.a.b.example.com."),
        Some("b.example.com")
    );
    assert_eq!(pick("_acme-challenge.example.com."), Some("example.com."));
    assert_eq!(pick("b.example.com"), Some("b.example.com"));
    assert_eq!(pick("x.Example.ORG."), Some("EXAMPLE.org"));
    assert_eq!(pick("xample.com."), None, "no match inside a label");
    assert_eq!(pick("example.net."), None);
    assert_eq!(normalize("A.B."), "a.b");
    assert_eq!(candidates("_a.b.c."), vec!["_a.b.c", "b.c", "c"]);
}

#[test]
fn secrets_are_redacted_everywhere() {
    let s = Secret::new("tok-123456");
    assert_eq!(format!("{s:?} {s}"), "Secret([redacted]) [redacted]");
    assert_eq!(s.expose(), "tok-123456");
    assert_eq!(
        redact("bad token tok-123456!", &[&s]),
        "bad token [redacted]!"
    );
}

#[test]
fn secret_settings_come_from_one_source() {
    let dir = std::env::temp_dir().join(format!("cf-http-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("tok");
    std::fs::write(&file, "from-file\n").expect("write");
    let got = secret_setting("token", None, None, Some(&file)).expect("file");
    assert_eq!(
        got.map(|s| s.expose().to_owned()),
        Some("from-file".to_owned())
    );
    let both = secret_setting("token", Some("x".into()), Some("V"), None).expect_err("two");
    assert_eq!(both.message, "token, token_env, token_file: give only one");
    let unset =
        secret_setting("token", None, Some("CERTFLEET_SURELY_UNSET_VAR"), None).expect_err("unset");
    assert!(
        unset
            .message
            .contains("token_env = \"CERTFLEET_SURELY_UNSET_VAR\""),
        "{unset}"
    );
    let missing =
        secret_setting("api_key", None, None, Some(&dir.join("nope"))).expect_err("no file");
    assert!(missing.message.starts_with("api_key_file = "), "{missing}");
    std::fs::write(&file, "  \n").expect("write");
    let empty = secret_setting("token", None, None, Some(&file)).expect_err("empty");
    assert!(empty.message.ends_with("the file is empty"), "{empty}");
    assert!(
        secret_setting("token", None, None, None)
            .expect("none")
            .is_none()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn retry_after_seconds_and_http_dates() {
    let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
    assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
    assert_eq!(
        parse_retry_after("Sun, 06 Nov 1994 08:49:40 GMT", now),
        Some(Duration::from_secs(3))
    );
    assert_eq!(
        parse_retry_after("Sun, 06 Nov 1994 08:49:30 GMT", now),
        Some(Duration::ZERO)
    );
    assert_eq!(parse_retry_after("soon", now), None);
    assert_eq!(
        parse_retry_after("Sun, 06 Foo 1994 08:49:40 GMT", now),
        None
    );
}

#[test]
fn backoff_grows_is_capped_and_yields_to_retry_after() {
    let p = RetryPolicy {
        max_attempts: 5,
        max_elapsed: Duration::from_secs(60),
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(1000),
    };
    let d1 = p.delay(1, None);
    let d3 = p.delay(3, None);
    let d9 = p.delay(9, None);
    assert!(
        d1 >= Duration::from_millis(100) && d1 <= Duration::from_millis(120),
        "{d1:?}"
    );
    assert!(
        d3 >= Duration::from_millis(400) && d3 <= Duration::from_millis(480),
        "{d3:?}"
    );
    assert!(
        d9 >= Duration::from_millis(1000) && d9 <= Duration::from_millis(1200),
        "{d9:?}"
    );
    assert_eq!(
        p.delay(1, Some(Duration::from_secs(3))),
        Duration::from_secs(3)
    );
}

#[test]
fn txt_quoting_round_trips() {
    use crate::zone::{txt_quote, txt_unquote};
    assert_eq!(txt_quote(r#"a"b\c"#), r#""a\"b\\c""#);
    assert_eq!(txt_unquote(r#""a\"b\\c""#), r#"a"b\c"#);
    assert_eq!(txt_unquote(r#""v=spf1 " "-all""#), "v=spf1 -all");
    assert_eq!(txt_unquote("plain"), "plain");
}

#[test]
fn records_are_grouped_per_zone_in_order() {
    use certfleet_plugin_abi::{PluginError, TxtRecord};
    let rec = |f: &str| TxtRecord {
        fqdn: f.into(),
        value: "v".into(),
    };
    let records = [
        rec("_a.x.one."),
        rec("_a.two."),
        rec("_b.one."),
        rec("_c.nowhere."),
    ];
    let zones = ["one", "two"];
    let zone_of = |r: &TxtRecord| {
        crate::zone::longest_match(&r.fqdn, &zones, |z| z)
            .copied()
            .ok_or_else(|| PluginError::config("no zone"))
    };
    let groups = crate::zone::group_by_zone(&records[..3], |z: &&str| *z, zone_of).expect("groups");
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0].0, "one");
    assert_eq!(groups[0].1.len(), 2);
    let err = crate::zone::group_by_zone(&records, |z: &&str| *z, zone_of).expect_err("no zone");
    assert_eq!(err.records, vec![rec("_c.nowhere.")]);
}

#[test]
fn auth_debug_output_hides_the_credential() {
    let auth = crate::HeaderAuth::bearer(Secret::new("tok-visible-if-leaked"));
    let shown = format!("{auth:?}");
    assert!(!shown.contains("tok-visible-if-leaked"), "{shown}");
    assert!(shown.contains("[redacted]"), "{shown}");
}

#[test]
fn config_table_takes_common_settings_and_leaves_the_plugins_own() {
    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Own {
        url: String,
    }
    let mut table = crate::ConfigTable::new(
        "demo",
        serde_json::json!({"url": "https://x", "api_key": "k-123", "max_attempts": 3}),
    )
    .expect("table");
    let http = table.http().expect("http settings");
    assert_eq!(http.retry.max_attempts, 3);
    assert_eq!(http.timeout, std::time::Duration::from_secs(30));
    assert_eq!(
        table.required_secret("api_key").expect("key").expose(),
        "k-123"
    );
    let own: Own = table.rest().expect("own settings");
    assert_eq!(own.url, "https://x");

    let mut missing = crate::ConfigTable::new("demo", serde_json::json!({})).expect("table");
    let e = missing.required_secret("api_token").expect_err("missing");
    assert_eq!(
        e.message,
        "api_token: missing (set api_token, api_token_env or api_token_file)"
    );

    let mut typo =
        crate::ConfigTable::new("demo", serde_json::json!({"ur1": "x", "timeout_secs": 0}))
            .expect("table");
    let e = typo.http().expect_err("timeout 0");
    assert!(e.message.contains("timeout_secs = 0"), "{}", e.message);
    let e = typo.rest::<Own>().expect_err("unknown key");
    assert!(
        e.message.starts_with("[plugins.demo]: unknown field `ur1`"),
        "{}",
        e.message
    );

    let mut numeric =
        crate::ConfigTable::new("demo", serde_json::json!({"api_key": 987654})).expect("table");
    let e = numeric
        .required_secret("api_key")
        .expect_err("not a string");
    assert!(!e.message.contains("987654"), "{}", e.message);
}
