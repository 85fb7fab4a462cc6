//! The routine against a small fake DNS: a parent zone with a delegated child, CNAMEs, a
//! resolver view (answers from the deepest zone) and a parent-only view (referrals).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use hickory_proto::rr::rdata::{CNAME, NS, SOA};

use super::*;

/// Zones (apex → names that exist in it), CNAMEs, and which zones this server serves.
struct FakeDns {
    zones: BTreeMap<Name, Vec<Name>>,
    cnames: BTreeMap<Name, Name>,
    /// Zones served; a name in an unserved child zone gets a referral from its parent.
    served: Vec<Name>,
    queries: AtomicUsize,
}

fn n(s: &str) -> Name {
    parse_name(s).expect("name")
}

fn soa(apex: &Name) -> Record {
    Record::from_rdata(
        apex.clone(),
        60,
        RData::SOA(SOA::new(
            Name::from_str("ns1")
                .expect("n")
                .append_domain(apex)
                .expect("n"),
            n("hostmaster.test"),
            1,
            60,
            60,
            86400,
            1,
        )),
    )
}

impl FakeDns {
    fn corp(served: &[&str]) -> FakeDns {
        FakeDns {
            zones: BTreeMap::from([
                (
                    n("corp.test"),
                    vec![
                        n("corp.test"),
                        n("www.corp.test"),
                        n("_acme-challenge.corp.test"),
                    ],
                ),
                (n("acme.corp.test"), vec![n("acme.corp.test")]),
            ]),
            cnames: BTreeMap::from([(n("_acme-challenge.www.corp.test"), n("www.acme.corp.test"))]),
            served: served.iter().map(|z| n(z)).collect(),
            queries: AtomicUsize::new(0),
        }
    }

    fn deepest(&self, name: &Name, among: &[Name]) -> Option<Name> {
        among
            .iter()
            .filter(|z| z.zone_of(name))
            .max_by_key(|z| z.num_labels())
            .cloned()
    }
}

impl Lookup for FakeDns {
    async fn lookup(&self, name: &Name, rtype: RecordType) -> Result<Reply, String> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        let all: Vec<Name> = self.zones.keys().cloned().collect();
        let mut reply = Reply {
            rcode: ResponseCode::NoError,
            authoritative: true,
            answers: Vec::new(),
            authorities: Vec::new(),
        };
        let Some(served) = self.deepest(name, &self.served) else {
            reply.rcode = ResponseCode::Refused;
            reply.authoritative = false;
            return Ok(reply);
        };
        let holder = self.deepest(name, &all).expect("a zone");
        if holder != served {
            reply.authoritative = false;
            reply.authorities.push(Record::from_rdata(
                holder.clone(),
                60,
                RData::NS(NS(n("ns1.corp.test"))),
            ));
            return Ok(reply);
        }
        if let Some(t) = self.cnames.get(name) {
            reply.answers.push(Record::from_rdata(
                name.clone(),
                60,
                RData::CNAME(CNAME(t.clone())),
            ));
            return Ok(reply);
        }
        if rtype == RecordType::SOA && *name == holder {
            reply.answers.push(soa(&holder));
        } else {
            if !self.zones[&holder].contains(name) {
                reply.rcode = ResponseCode::NXDomain;
            }
            reply.authorities.push(soa(&holder));
        }
        Ok(reply)
    }
}

const WILDCARD_PAIR: [&str; 2] = ["_acme-challenge.corp.test", "_acme-challenge.www.corp.test"];

#[tokio::test]
async fn each_name_gets_its_own_zone_in_either_order() {
    for order in [WILDCARD_PAIR, [WILDCARD_PAIR[1], WILDCARD_PAIR[0]]] {
        let dns = FakeDns::corp(&["corp.test", "acme.corp.test"]);
        let finder = ZoneFinder::new();
        let mut zones = BTreeMap::new();
        for name in order {
            let l = finder.locate(&dns, &n(name)).await.expect("located");
            zones.insert(name, (l.target, l.zone.apex));
        }
        assert_eq!(
            zones[WILDCARD_PAIR[0]],
            (n("_acme-challenge.corp.test"), n("corp.test")),
            "order {order:?}"
        );
        assert_eq!(
            zones[WILDCARD_PAIR[1]],
            (n("www.acme.corp.test"), n("acme.corp.test")),
            "order {order:?}: the CNAME target is below the acme.corp.test cut"
        );
    }
}

#[tokio::test]
async fn a_referral_from_the_parent_names_the_cut() {
    let dns = FakeDns::corp(&["corp.test"]);
    let finder = ZoneFinder::new();
    let l = finder
        .locate(&dns, &n("_acme-challenge.www.corp.test"))
        .await
        .expect("located");
    assert_eq!(l.zone.apex, n("acme.corp.test"));
    assert_eq!(l.zone.primary, None, "a referral carries no SOA");
}

#[tokio::test]
async fn answers_are_cached_per_name_not_per_label_count() {
    let dns = FakeDns::corp(&["corp.test", "acme.corp.test"]);
    let finder = ZoneFinder::new();
    let name = n("_acme-challenge.www.corp.test");
    finder.locate(&dns, &name).await.expect("first");
    let after_first = dns.queries.load(Ordering::Relaxed);
    let again = finder.locate(&dns, &name).await.expect("again");
    assert_eq!(dns.queries.load(Ordering::Relaxed), after_first, "cached");
    assert_eq!(again.zone.apex, n("acme.corp.test"));
    // Another name under corp.test is asked for, even though corp.test is a known cut.
    let other = finder
        .locate(&dns, &n("x.y.acme.corp.test"))
        .await
        .expect("other");
    assert!(dns.queries.load(Ordering::Relaxed) > after_first);
    assert_eq!(other.zone.apex, n("acme.corp.test"));
    assert!(
        finder
            .known_cuts()
            .iter()
            .any(|z| z.apex == n("acme.corp.test"))
    );
}

#[tokio::test]
async fn the_guard_refuses_outside_names_and_names_the_cname() {
    let dns = FakeDns::corp(&["corp.test", "acme.corp.test"]);
    let finder = ZoneFinder::new();
    let cname = finder
        .locate(&dns, &n("_acme-challenge.www.corp.test"))
        .await
        .expect("located");
    let plain = finder
        .locate(&dns, &n("_acme-challenge.corp.test"))
        .await
        .expect("located");
    // A parent guard allows the child zone: the zone is still the one found.
    let parent = Guard::parse(&["corp.test"]).expect("guard");
    parent.check(&cname).expect("inside corp.test");
    assert_eq!(cname.zone.apex, n("acme.corp.test"));
    let child = Guard::parse(&["acme.corp.test"]).expect("guard");
    child.check(&cname).expect("target inside acme.corp.test");
    let e = child.check(&plain).expect_err("outside");
    assert!(
        e.to_string()
            .contains("_acme-challenge.corp.test. is outside the configured zone"),
        "{e}"
    );
    let other = Guard::parse(&["other.test"]).expect("guard");
    let e = other.check(&cname).expect_err("cname outside");
    let text = e.to_string();
    assert!(
        text.contains("_acme-challenge.www.corp.test. is a CNAME to www.acme.corp.test.")
            && text.contains("outside every configured zone (other.test.)"),
        "{text}"
    );
    // A guard below the zone DNS reports: the child is not delegated.
    let deep = Guard::parse(&["www.corp.test"]).expect("guard");
    let www = Located {
        name: n("_acme-challenge.www.corp.test"),
        target: n("_acme-challenge.www.corp.test"),
        zone: Zone {
            apex: n("corp.test"),
            primary: None,
        },
    };
    let e = deep.check(&www).expect_err("above");
    assert!(e.to_string().contains("is www.corp.test. delegated"), "{e}");
}

#[tokio::test]
async fn no_zone_and_cname_loops_are_errors() {
    let dns = FakeDns::corp(&["corp.test"]);
    let finder = ZoneFinder::new();
    let e = finder
        .locate(&dns, &n("www.elsewhere.test"))
        .await
        .expect_err("no zone");
    assert!(matches!(e, ZoneError::NoZone { .. }), "{e}");
    let mut looping = FakeDns::corp(&["corp.test", "acme.corp.test"]);
    looping.cnames.insert(n("a.corp.test"), n("b.corp.test"));
    looping.cnames.insert(n("b.corp.test"), n("a.corp.test"));
    let e = finder
        .locate(&looping, &n("a.corp.test"))
        .await
        .expect_err("loop");
    assert!(e.to_string().contains("more than 8 CNAMEs"), "{e}");
}

#[tokio::test]
async fn the_presumed_zone_is_the_deepest_known_cut_and_never_a_known_cname() {
    let dns = FakeDns::corp(&["corp.test", "acme.corp.test"]);
    let finder = ZoneFinder::new();
    assert_eq!(
        finder.presumed_zone(&n("_acme-challenge.a.corp.test")),
        None
    );
    // Learns corp.test (the apex challenge) and, through the CNAME, acme.corp.test.
    finder
        .locate(&dns, &n("_acme-challenge.corp.test"))
        .await
        .expect("apex");
    finder
        .locate(&dns, &n("_acme-challenge.www.corp.test"))
        .await
        .expect("cname");
    let asked = dns.queries.load(Ordering::Relaxed);
    let zone = |s: &str| finder.presumed_zone(&n(s)).map(|z| z.apex);
    assert_eq!(zone("_acme-challenge.b1.corp.test"), Some(n("corp.test")));
    // Below the known acme.corp.test cut: never the parent.
    assert_eq!(
        zone("_acme-challenge.b1.acme.corp.test"),
        Some(n("acme.corp.test"))
    );
    assert_eq!(zone("acme.corp.test"), Some(n("acme.corp.test")));
    // A name known to be a CNAME is not presumed anywhere: locate follows it.
    assert_eq!(zone("_acme-challenge.www.corp.test"), None);
    assert_eq!(zone("other.test"), None);
    assert_eq!(dns.queries.load(Ordering::Relaxed), asked, "no queries");
    finder.forget_name(&n("_acme-challenge.www.corp.test"));
    assert_eq!(
        zone("_acme-challenge.www.corp.test"),
        Some(n("corp.test")),
        "forgotten: presumed again (to be verified)"
    );
}
