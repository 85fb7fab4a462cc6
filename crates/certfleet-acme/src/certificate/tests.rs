use reqwest::header::HeaderValue;

use super::*;

#[test]
fn pebble_style_links() {
    let mut h = HeaderMap::new();
    h.append(
        LINK,
        HeaderValue::from_static("<https://ca.test/dir>;rel=\"index\""),
    );
    h.append(
        LINK,
        HeaderValue::from_static("<https://ca.test/certZ/abc/alternate/1>;rel=\"alternate\""),
    );
    h.append(
        LINK,
        HeaderValue::from_static("<https://ca.test/certZ/abc/alternate/2>;rel=\"alternate\""),
    );
    let links = parse_link_headers(&h);
    assert_eq!(links.len(), 3);
    assert_eq!(
        link_targets(&links, "alternate", "https://ca.test/certZ/abc"),
        [
            "https://ca.test/certZ/abc/alternate/1",
            "https://ca.test/certZ/abc/alternate/2"
        ]
    );
    assert_eq!(
        link_targets(&links, "index", "https://ca.test/x"),
        ["https://ca.test/dir"]
    );
}

#[test]
fn comma_separated_lists_and_parameters() {
    let links = parse_link_value(
        r#"<https://ca.test/a,1>; rel="alternate"; title="one, two", </issuer/7>;rel=up , <https://ca.test/b>; REL="Alternate Index""#,
    );
    assert_eq!(
        links,
        [
            Link {
                target: "https://ca.test/a,1".into(),
                rels: vec!["alternate".into()],
            },
            Link {
                target: "/issuer/7".into(),
                rels: vec!["up".into()],
            },
            Link {
                target: "https://ca.test/b".into(),
                rels: vec!["alternate".into(), "index".into()],
            },
        ]
    );
    // Relative targets resolve against the request URL.
    assert_eq!(
        link_targets(&links, "up", "https://ca.test/cert/9"),
        ["https://ca.test/issuer/7"]
    );
    assert_eq!(
        link_targets(&links, "alternate", "https://ca.test/cert/9").len(),
        2
    );
}

#[test]
fn odd_link_values() {
    assert!(parse_link_value("").is_empty());
    assert!(parse_link_value("garbage").is_empty());
    let escaped = parse_link_value(r#"<u>; title="a \"quoted\" title"; rel="up""#);
    assert_eq!(escaped[0].rels, ["up"]);
    let no_rel = parse_link_value("<u>; anchor=\"#x\"");
    assert!(no_rel[0].rels.is_empty());
    // Only the first rel parameter counts (RFC 8288 §3.3).
    let twice = parse_link_value(r#"<u>; rel="up"; rel="alternate""#);
    assert_eq!(twice[0].rels, ["up"]);
}
