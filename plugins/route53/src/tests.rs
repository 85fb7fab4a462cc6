//! SigV4 against AWS's published test suite (aws-sig-v4-test-suite: credentials
//! AKIDEXAMPLE / wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, us-east-1, service `service`,
//! 20150830T123600Z), the XML we read and write, and the read-modify-write plan.

use certfleet_plugin_http::Secret;

use crate::api::{Op, plan};
use crate::sigv4::{Credentials, Signable, amz_date, authorization, hex, signing_key};
use crate::xml::{self, TxtSet};

const DATE: &str = "20150830T123600Z";

fn suite_creds() -> Credentials {
    Credentials {
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
        session_token: None,
    }
}

fn sign(method: &str, query: &str, extra: &[(&str, &str)], payload: &[u8]) -> String {
    let mut headers = vec![
        ("Host".to_owned(), "example.amazonaws.com".to_owned()),
        ("X-Amz-Date".to_owned(), DATE.to_owned()),
    ];
    headers.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let auth = authorization(
        &suite_creds(),
        "us-east-1",
        "service",
        &Signable {
            method,
            path: "/",
            query,
            headers: &headers,
            payload,
        },
        DATE,
    );
    auth.rsplit_once("Signature=")
        .map(|(_, s)| s.to_owned())
        .unwrap_or_default()
}

#[test]
fn sigv4_get_vanilla() {
    let headers = vec![
        ("host".to_owned(), "example.amazonaws.com".to_owned()),
        ("x-amz-date".to_owned(), DATE.to_owned()),
    ];
    let auth = authorization(
        &suite_creds(),
        "us-east-1",
        "service",
        &Signable {
            method: "GET",
            path: "/",
            query: "",
            headers: &headers,
            payload: b"",
        },
        DATE,
    );
    assert_eq!(
        auth,
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
         SignedHeaders=host;x-amz-date, \
         Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    );
}

#[test]
fn sigv4_suite_vectors() {
    assert_eq!(
        sign("POST", "", &[], b""),
        "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
        "post-vanilla"
    );
    assert_eq!(
        sign("GET", "Param2=value2&Param1=value1", &[], b""),
        "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        "get-vanilla-query-order-key-case"
    );
    assert_eq!(
        sign("POST", "Param1=value1", &[], b""),
        "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11",
        "post-vanilla-query"
    );
    assert_eq!(
        sign(
            "POST",
            "",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            b"Param1=value1"
        ),
        "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a",
        "post-x-www-form-urlencoded"
    );
    assert_eq!(
        sign(
            "GET",
            "",
            &[("My-Header1", " value1"), ("My-Header2", "\"a   b   c\"")],
            b""
        ),
        "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
        "get-header-value-trim"
    );
}

#[test]
fn sigv4_derived_key_and_date() {
    assert_eq!(
        hex(&signing_key(
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "20150830",
            "us-east-1",
            "iam"
        )),
        "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"
    );
    assert_eq!(amz_date(1_440_938_160), DATE);
    assert_eq!(amz_date(951_782_400), "20000229T000000Z");
}

#[test]
fn zones_rrsets_and_errors_parse() {
    let zones = r#"<?xml version="1.0"?><ListHostedZonesResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/">
      <HostedZones><HostedZone><Id>/hostedzone/Z1</Id><Name>example.com.</Name><Config><PrivateZone>false</PrivateZone></Config></HostedZone>
      <HostedZone><Id>/hostedzone/Z2</Id><Name>internal.example.com.</Name><Config><PrivateZone>true</PrivateZone></Config></HostedZone></HostedZones>
      <IsTruncated>true</IsTruncated><NextMarker>Z3</NextMarker><MaxItems>2</MaxItems></ListHostedZonesResponse>"#;
    let (z, next) = xml::hosted_zones(zones).expect("zones");
    assert_eq!(
        (z[0].id.as_str(), z[0].name.as_str(), z[0].private),
        ("Z1", "example.com.", false)
    );
    assert!(z[1].private);
    assert_eq!(next.as_deref(), Some("Z3"));

    let sets = r#"<ListResourceRecordSetsResponse><ResourceRecordSets>
      <ResourceRecordSet><Name>\052.example.com.</Name><Type>TXT</Type><TTL>300</TTL>
        <ResourceRecords><ResourceRecord><Value>"a"</Value></ResourceRecord><ResourceRecord><Value>"b" "c"</Value></ResourceRecord></ResourceRecords></ResourceRecordSet>
      <ResourceRecordSet><Name>example.com.</Name><Type>A</Type><TTL>60</TTL></ResourceRecordSet>
      </ResourceRecordSets><IsTruncated>false</IsTruncated></ListResourceRecordSetsResponse>"#;
    let (s, more) = xml::txt_sets(sets).expect("sets");
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].name, "*.example.com.");
    assert_eq!(s[0].plain(), ["a", "bc"]);
    assert!(more.is_none());

    let err = r#"<ErrorResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><Error><Type>Sender</Type>
      <Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match</Message></Error></ErrorResponse>"#;
    assert_eq!(
        xml::error(err).map(|e| e.0),
        Some("SignatureDoesNotMatch".to_owned())
    );

    for bad in ["<html>502</html>", "not xml", "<ListHostedZonesResponse/>"] {
        assert!(xml::hosted_zones(bad).is_err(), "{bad}");
    }
    assert!(xml::change_info("<ChangeResourceRecordSetsResponse/>").is_err());
    assert_eq!(
        xml::change_info(
            "<GetChangeResponse><ChangeInfo><Id>/change/C9</Id><Status>INSYNC</Status></ChangeInfo></GetChangeResponse>"
        ),
        Ok(("C9".to_owned(), "INSYNC".to_owned()))
    );
}

fn set(values: &[&str]) -> TxtSet {
    TxtSet {
        name: "_acme-challenge.example.com.".into(),
        ttl: 300,
        values: values.iter().map(|v| format!("\"{v}\"")).collect(),
    }
}

#[test]
fn plan_deletes_exactly_what_was_read_and_creates_the_rest() {
    let name = "_acme-challenge.example.com.";
    let existing = set(&["other"]);
    let changes = plan(name, Some(&existing), &["ours"], Op::Add, 60);
    assert_eq!(changes.len(), 2);
    assert_eq!((changes[0].action, &changes[0].set), ("DELETE", &existing));
    assert_eq!(changes[1].action, "CREATE");
    assert_eq!(changes[1].set.values, ["\"other\"", "\"ours\""]);
    assert_eq!(changes[1].set.ttl, 300, "keeps the RRset's TTL");

    let new = plan(name, None, &["a", "b", "a"], Op::Add, 60);
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].set.values, ["\"a\"", "\"b\""]);
    assert_eq!(new[0].set.ttl, 60);

    let removed = plan(
        name,
        Some(&set(&["other", "ours"])),
        &["ours"],
        Op::Remove,
        60,
    );
    assert_eq!(removed[1].set.values, ["\"other\""]);
    let last = plan(name, Some(&set(&["ours"])), &["ours"], Op::Remove, 60);
    assert_eq!(last.len(), 1, "only the DELETE");
    assert!(plan(name, None, &["gone"], Op::Remove, 60).is_empty());
    assert!(plan(name, Some(&set(&["a"])), &["a"], Op::Add, 60).is_empty());

    let doc = xml::change_batch(&changes);
    assert!(
        doc.contains("<Action>DELETE</Action>") && doc.contains("<Value>\"ours\"</Value>"),
        "{doc}"
    );
    assert!(roxmltree::Document::parse(&doc).is_ok());
}

#[test]
fn shared_credentials_file_profiles() {
    let text = "[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = s1\n\n\
                [ci]\naws_access_key_id=AKIACI\naws_secret_access_key=s2\naws_session_token = t\n";
    let (id, secret, token) = crate::creds::profile_keys(text, "ci").expect("ci");
    assert_eq!(
        (
            id.as_str(),
            secret.expose(),
            token.map(|t| t.expose().to_owned())
        ),
        ("AKIACI", "s2", Some("t".into()))
    );
    assert!(crate::creds::profile_keys(text, "missing").is_none());
    let env = |v: &str| match v {
        "AWS_ACCESS_KEY_ID" => Some("AKIAENV".to_owned()),
        "AWS_SECRET_ACCESS_KEY" => Some("envsecret".to_owned()),
        _ => None,
    };
    let (c, source) =
        crate::creds::resolve(crate::creds::CredentialSettings::default(), &env).expect("env");
    assert_eq!(
        (c.access_key_id.as_str(), source.as_str()),
        ("AKIAENV", "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
    );
    let none = |_: &str| None;
    let err = crate::creds::resolve(crate::creds::CredentialSettings::default(), &none)
        .expect_err("none");
    assert!(err.message.starts_with("no AWS credentials"), "{err}");
}

#[test]
fn sigv4_matches_botocore_for_a_route53_listing() {
    // botocore's SigV4Auth for the same request (computed once with botocore 1.x).
    let headers = vec![
        ("host".to_owned(), "127.0.0.1:4000".to_owned()),
        ("x-amz-date".to_owned(), DATE.to_owned()),
    ];
    let auth = authorization(
        &suite_creds(),
        "us-east-1",
        "route53",
        &Signable {
            method: "GET",
            path: "/2013-04-01/hostedzone",
            query: "maxitems=100",
            headers: &headers,
            payload: b"",
        },
        DATE,
    );
    assert!(
        auth.ends_with(
            "Signature=9ea1c3cb84980091e0be3f067138f60d6d1e0fad3378934f505978dab346a39f"
        ),
        "{auth}"
    );
}

#[test]
fn throttling_is_retried_other_client_errors_are_not() {
    let resp = |status: u16, code: &str| certfleet_plugin_http::Response {
        status,
        body: format!(
            "<ErrorResponse><Error><Code>{code}</Code><Message>m</Message></Error></ErrorResponse>"
        ),
        attempts: 1,
        elapsed: std::time::Duration::ZERO,
        retry_after: None,
    };
    assert!(crate::api::retryable(&resp(400, "Throttling")));
    assert!(crate::api::retryable(&resp(400, "PriorRequestNotComplete")));
    assert!(crate::api::retryable(&resp(503, "ServiceUnavailable")));
    assert!(!crate::api::retryable(&resp(400, "InvalidChangeBatch")));
    assert!(!crate::api::retryable(&resp(403, "SignatureDoesNotMatch")));
}
