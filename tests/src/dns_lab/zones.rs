//! The lab's zone files: `corp.test`, the delegated `acme.corp.test`, and optionally more
//! delegated validation zones `v0.corp.test`, `v1.corp.test`, … (for batches spread over
//! many zones).

/// `corp.test` and `acme.corp.test`, on every lab.
pub const ZONES: [&str; 2] = ["corp.test", "acme.corp.test"];
/// Extra validation zones are `v<N>.corp.test`.
pub const VALIDATION_ZONE_PREFIX: &str = "v";

/// `$REFRESH$` is filled per set-up.
pub(super) const CORP_ZONE: &str = "$TTL 60
@ IN SOA ns1.corp.test. hostmaster.corp.test. ( 1 $REFRESH$ 1 86400 1 )
@ IN NS ns1.corp.test.
@ IN NS ns2.corp.test.
@ IN A 127.0.0.10
ns1 IN A 127.0.0.2
ns2 IN A 127.0.0.3
www IN A 127.0.0.10
_acme-challenge.www IN CNAME www.acme.corp.test.
acme IN NS ns1.corp.test.
acme IN NS ns2.corp.test.
";
/// A delegated zone with nothing but its apex (`acme.corp.test` and the validation zones).
const CHILD_ZONE: &str = "$TTL 60
@ IN SOA ns1.corp.test. hostmaster.corp.test. ( 1 $REFRESH$ 1 86400 1 )
@ IN NS ns1.corp.test.
@ IN NS ns2.corp.test.
";

/// (zone, zone file text) of every zone: [`ZONES`], then `validation` more zones, each
/// delegated from `corp.test` to both servers.
pub(super) fn zone_files(validation: usize, refresh: &str) -> Vec<(String, String)> {
    let mut corp = CORP_ZONE.to_owned();
    let extra: Vec<String> = (0..validation)
        .map(|i| format!("{VALIDATION_ZONE_PREFIX}{i}"))
        .collect();
    for label in &extra {
        corp.push_str(&format!(
            "{label} IN NS ns1.corp.test.\n{label} IN NS ns2.corp.test.\n"
        ));
    }
    let mut files = vec![
        (ZONES[0].to_owned(), corp.replace("$REFRESH$", refresh)),
        (
            ZONES[1].to_owned(),
            CHILD_ZONE.replace("$REFRESH$", refresh),
        ),
    ];
    files.extend(extra.iter().map(|label| {
        (
            format!("{label}.corp.test"),
            CHILD_ZONE.replace("$REFRESH$", refresh),
        )
    }));
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_zones_are_delegated_from_corp_test() {
        let files = zone_files(10, "1");
        assert_eq!(files.len(), 12);
        assert_eq!(files[2].0, "v0.corp.test");
        assert_eq!(files[11].0, "v9.corp.test");
        assert!(files[0].1.contains("v9 IN NS ns2.corp.test.\n"));
        assert!(files.iter().all(|(_, t)| !t.contains("$REFRESH$")));
        assert_eq!(zone_files(0, "1").len(), 2);
    }
}
