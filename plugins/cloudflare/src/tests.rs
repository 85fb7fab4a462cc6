use certfleet_plugin_abi::TxtRecord;

use crate::api::{DnsRecord, Op, plan};

fn rec(name: &str, value: &str) -> TxtRecord {
    TxtRecord {
        fqdn: format!("{name}."),
        value: value.into(),
    }
}

fn existing(id: &str, name: &str, content: &str) -> DnsRecord {
    DnsRecord {
        id: id.into(),
        name: name.into(),
        content: content.into(),
    }
}

#[test]
fn add_skips_values_already_there_and_duplicates() {
    let have = [existing("1", "_acme-challenge.a.example", "\"old\"")];
    let want = [
        rec("_acme-challenge.a.example", "old"),
        rec("_acme-challenge.a.example", "new"),
        rec("_acme-challenge.A.example", "new"),
    ];
    let p = plan(&have, &want, Op::Add, 120);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0]["name"], "_acme-challenge.a.example");
    assert_eq!(p[0]["content"], "\"new\"");
    assert_eq!(p[0]["ttl"], 120);
}

#[test]
fn remove_deletes_only_records_holding_our_values() {
    let have = [
        existing("1", "_acme-challenge.a.example", "\"ours\""),
        existing("2", "_acme-challenge.a.example", "someone-else"),
        existing("3", "_acme-challenge.b.example", "ours"),
    ];
    let p = plan(
        &have,
        &[rec("_acme-challenge.a.example", "ours")],
        Op::Remove,
        120,
    );
    assert_eq!(p, vec![serde_json::json!({"id": "1"})]);
    assert!(
        plan(
            &have,
            &[rec("_acme-challenge.c.example", "x")],
            Op::Remove,
            120
        )
        .is_empty()
    );
}
