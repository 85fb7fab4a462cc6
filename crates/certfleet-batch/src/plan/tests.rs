use time::macros::datetime;

use super::*;
use crate::batch_file::{BatchFile, ParseOptions};

const T0: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);

fn certs(list: &str) -> Vec<CertRequest> {
    BatchFile::parse_list(list, "test", &ParseOptions::default())
        .expect("valid")
        .certs
}

fn limits(orders: (u32, u64), domain: (u32, u64)) -> Limits {
    Limits {
        new_orders_per_account: Some(Limit {
            capacity: orders.0,
            period: Duration::from_secs(orders.1),
        }),
        certificates_per_registered_domain: Some(Limit {
            capacity: domain.0,
            period: Duration::from_secs(domain.1),
        }),
        ..Limits::default()
    }
}

#[test]
fn counts_and_no_limits() {
    let c = certs("a.example.com www.a.example.com\nb.example.org\nc.github.io, d.github.io\n");
    let p = plan(&c, &Limits::default(), T0);
    assert_eq!((p.certificates, p.orders, p.names), (3, 3, 5));
    // example.com, example.org, c.github.io, d.github.io (github.io is a private suffix).
    assert_eq!(p.registered_domains, 4);
    assert_eq!(p.earliest_finish, T0);
    assert_eq!(p.limited_by, None);
}

#[test]
fn new_orders_limit_sets_the_pace() {
    // 25 certificates, 20 orders per 60 s: 20 at once, then one every 3 s → 15 s.
    let list: String = (0..25).map(|i| format!("n{i}.d{i}.example\n")).collect();
    let p = plan(&certs(&list), &limits((20, 60), (3, 60)), T0);
    assert_eq!(p.earliest_finish, T0 + time::Duration::seconds(15));
    assert_eq!(p.limited_by, Some(new_orders_key(PLAN_ACCOUNT)));
}

#[test]
fn one_busy_domain_does_not_hold_up_others() {
    // 6 certificates under one domain (3 per 60 s: 3 now, then every 20 s) and 4 elsewhere.
    let mut list: String = (0..6).map(|i| format!("h{i}.busy.example\n")).collect();
    list.extend((0..4).map(|i| format!("x.other{i}.example\n")));
    let p = plan(&certs(&list), &limits((100, 60), (3, 60)), T0);
    assert_eq!(p.earliest_finish, T0 + time::Duration::seconds(60));
    assert_eq!(p.limited_by, Some(registered_domain_key("busy.example")));
    for i in 6..10 {
        assert_eq!(p.schedule[i], Some(T0), "other domains go at once");
    }
    assert_eq!(p.busiest_domains[0], ("busy.example".to_owned(), 6));
    let text = p.to_string();
    assert!(
        text.contains("earliest finish:     2026-01-01T00:01:00Z (in 1m)"),
        "{text}"
    );
}

#[test]
fn letsencrypt_preset_for_a_thousand_domains() {
    // 1,000 certificates in distinct domains: 300 at once, then one per 36 s → 700 × 36 s.
    let list: String = (0..1000).map(|i| format!("www.site{i}.com\n")).collect();
    let p = plan(
        &certs(&list),
        &Limits::preset(crate::Preset::LetsEncrypt),
        T0,
    );
    assert_eq!(p.duration(), Duration::from_secs(700 * 36));
}

#[test]
fn many_certificates_behind_one_domain_stay_fast() {
    // 5,000 certificates of one domain at 50 per week: bounded work, exact answer.
    let list: String = (0..5000).map(|i| format!("h{i}.one.example\n")).collect();
    let l = Limits::preset(crate::Preset::LetsEncrypt);
    let p = plan(&certs(&list), &l, T0);
    let per = l
        .certificates_per_registered_domain
        .expect("set")
        .emission_interval();
    assert_eq!(p.duration(), per * 4950);
    assert!(p.impossible.is_empty());
}
