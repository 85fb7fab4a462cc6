use super::*;

const DEFAULT: &str = include_str!("../../testdata/chains/default.pem");
const ALT_X2: &str = include_str!("../../testdata/chains/alt-legacy-x2.pem");
const ALT_LONG: &str = include_str!("../../testdata/chains/alt-long-x2.pem");

fn chain(pem: &str) -> CertificateChain {
    CertificateChain::from_pem(pem).expect("valid chain")
}

#[test]
fn splits_pem_chain() {
    let c = chain(DEFAULT);
    assert_eq!(c.certs_der.len(), 2);
    assert_eq!(c.pem, DEFAULT);
    assert_eq!(c.leaf_der(), c.certs_der[0].as_slice());
    assert_eq!(
        subject_common_name(c.leaf_der()).as_deref(),
        Some("example.test")
    );
    // The issuer chain is everything after the leaf, and re-parses to the same DER.
    let issuers = chain(&c.issuer_chain_pem());
    assert_eq!(issuers.certs_der, c.certs_der[1..]);
    assert_eq!(chain(&c.leaf_pem()).certs_der, c.certs_der[..1]);
    // pem_encode round-trips exactly (64-column lines, as openssl writes them).
    let leaf_block = &DEFAULT[..DEFAULT.find(END).expect("end") + END.len() + 1];
    assert_eq!(pem_encode(c.leaf_der()), leaf_block);
}

#[test]
fn issuer_names() {
    let c = chain(DEFAULT);
    assert_eq!(
        c.issuer_common_names(),
        ["Test Intermediate E1", "Test Root X1"]
    );
    assert_eq!(c.top_issuer_common_name().as_deref(), Some("Test Root X1"));
    assert_eq!(
        chain(ALT_X2).top_issuer_common_name().as_deref(),
        Some("Legacy Root X2")
    );
    let long = chain(ALT_LONG);
    assert_eq!(long.certs_der.len(), 3);
    assert_eq!(
        long.issuer_common_names(),
        ["Test Intermediate E1", "Test Root X1", "Legacy Root X2"]
    );
    assert_eq!(
        long.top_issuer_common_name().as_deref(),
        Some("Legacy Root X2")
    );
}

#[test]
fn chooses_by_top_issuer_then_any_issuer_then_default() {
    let pick = |cn: &str| {
        let chosen = choose_chain(chain(DEFAULT), vec![chain(ALT_LONG), chain(ALT_X2)], cn);
        chosen.pem
    };
    // Exact top-issuer match, case-insensitive; the first matching chain wins.
    assert_eq!(pick("legacy ROOT x2"), ALT_LONG);
    assert_eq!(pick("Test Root X1"), DEFAULT);
    // No chain ends at the intermediate: fall back to a chain that contains it.
    assert_eq!(pick("Test Intermediate E1"), DEFAULT);
    // Unknown or empty preference: the default.
    assert_eq!(pick("ISRG Root X1"), DEFAULT);
    assert_eq!(pick(""), DEFAULT);
    // Order of alternates decides among equals.
    let chosen = choose_chain(
        chain(DEFAULT),
        vec![chain(ALT_X2), chain(ALT_LONG)],
        "Legacy Root X2",
    );
    assert_eq!(chosen.pem, ALT_X2);
}

#[test]
fn rejects_bad_pem() {
    assert!(CertificateChain::from_pem("").is_err());
    assert!(CertificateChain::from_pem("hello").is_err());
    let truncated = &DEFAULT[..DEFAULT.len() / 3];
    assert!(CertificateChain::from_pem(truncated).is_err());
    let garbage = format!("{BEGIN}\nAAAA\n{END}\n");
    let err = CertificateChain::from_pem(&garbage).expect_err("not X.509");
    assert!(err.to_string().contains("certificate #1"), "{err}");
    // Text around the blocks (some CAs add it) is ignored.
    let noisy = format!("subject=CN=example.test\n{DEFAULT}\n# end\n");
    assert_eq!(chain(&noisy).certs_der.len(), 2);
    // CRLF line endings.
    assert_eq!(chain(&DEFAULT.replace('\n', "\r\n")).certs_der.len(), 2);
}
