use crate::api::{Op, RRset, Rec, plan};

fn rrset(values: &[&str]) -> RRset {
    RRset {
        name: "_acme-challenge.example.org.".into(),
        rtype: "TXT".into(),
        ttl: Some(300),
        records: values
            .iter()
            .map(|v| Rec {
                content: format!("\"{v}\""),
                disabled: false,
            })
            .collect(),
    }
}

const NAME: &str = "_acme-challenge.example.org.";

#[test]
fn adding_keeps_other_values_and_their_ttl() {
    let existing = rrset(&["keep-me"]);
    let p = plan(NAME, Some(&existing), &["new1", "new2"], Op::Add, 60).expect("change");
    assert_eq!(p["changetype"], "REPLACE");
    assert_eq!(p["ttl"], 300);
    let contents: Vec<&str> = p["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["content"].as_str().expect("content"))
        .collect();
    assert_eq!(contents, ["\"keep-me\"", "\"new1\"", "\"new2\""]);
}

#[test]
fn adding_a_present_value_changes_nothing() {
    assert!(plan(NAME, Some(&rrset(&["a"])), &["a"], Op::Add, 60).is_none());
}

#[test]
fn removing_takes_only_our_values_and_deletes_an_empty_rrset() {
    let p = plan(
        NAME,
        Some(&rrset(&["keep", "ours"])),
        &["ours"],
        Op::Remove,
        60,
    )
    .expect("c");
    assert_eq!(p["records"].as_array().map(Vec::len), Some(1));
    assert_eq!(p["records"][0]["content"], "\"keep\"");
    let p = plan(NAME, Some(&rrset(&["ours"])), &["ours"], Op::Remove, 60).expect("c");
    assert_eq!(p["changetype"], "DELETE");
    assert!(
        plan(NAME, None, &["gone"], Op::Remove, 60).is_none(),
        "already gone is fine"
    );
}

#[test]
fn a_new_rrset_gets_the_configured_ttl() {
    let p = plan(NAME, None, &["v"], Op::Add, 42).expect("c");
    assert_eq!(p["ttl"], 42);
}
