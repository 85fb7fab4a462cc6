use super::*;

const LE_SHAPE: &str = include_str!("../../testdata/directory-letsencrypt-shape.json");
const PEBBLE: &str = include_str!("../../testdata/pebble-2.4.0/directory.json");

#[test]
fn letsencrypt_shape_with_profiles_ari_and_unknown_fields() {
    let d = Directory::from_json(LE_SHAPE.as_bytes()).expect("parses");
    assert_eq!(
        d.new_nonce,
        "https://acme-staging-v02.api.letsencrypt.org/acme/new-nonce"
    );
    assert_eq!(d.new_authz, None);
    assert!(d.supports_ari());
    assert_eq!(
        d.renewal_info.as_deref(),
        Some("https://acme-staging-v02.api.letsencrypt.org/acme/renewal-info")
    );
    assert_eq!(d.meta.caa_identities, ["letsencrypt.org"]);
    assert!(!d.meta.external_account_required);
    let names: Vec<&str> = d.meta.profiles.keys().map(String::as_str).collect();
    assert_eq!(names, ["classic", "shortlived", "tlsserver"]);
    assert!(d.has_profile("shortlived"));
    assert!(!d.has_profile("default"));
    assert_eq!(
        d.meta.website.as_deref(),
        Some("https://letsencrypt.org/docs/staging-environment/")
    );
}

#[test]
fn pebble_recording() {
    let d = Directory::from_json(PEBBLE.as_bytes()).expect("parses");
    assert!(d.new_order.ends_with("/order-plz"));
    assert!(d.key_change.ends_with("/rollover-account-key"));
    assert!(!d.supports_ari());
    assert!(d.meta.profiles.is_empty());
    assert!(d.meta.terms_of_service.is_some());
}

#[test]
fn minimal_and_odd_directories() {
    let d = Directory::from_json(
        br#"{"newNonce":"n","newAccount":"a","newOrder":"o","meta":{"externalAccountRequired":true,
            "profiles":{"odd":{"description":"x"}}}}"#,
    )
    .expect("parses");
    assert!(d.meta.external_account_required);
    assert_eq!(d.revoke_cert, "");
    assert_eq!(d.key_change, "");
    assert_eq!(d.meta.profiles["odd"], r#"{"description":"x"}"#);
    assert!(Directory::from_json(br#"{"newNonce":"n"}"#).is_err());
}
