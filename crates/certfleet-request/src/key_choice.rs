//! The certificate key as the user chose it, parsed once at the edge.

use std::fmt;
use std::str::FromStr;

use certfleet_keys::{KeyAlgorithm, KeyError, KeyRef};
use serde::{Deserialize, Serialize};

/// Which certificate key to use.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyChoice {
    /// A key that exists (`file:`, `pkcs11:`, `tpm:`); it stays where it is.
    Existing(KeyRef),
    /// A new file key of this algorithm, generated right before finalize.
    Generate(KeyAlgorithm),
}

impl FromStr for KeyChoice {
    type Err = KeyError;

    /// An algorithm name (`es256`, `es384`, `rs256`, `rs3072`, `rs4096`, `eddsa`) means "a
    /// new key of that type"; anything else is a key reference. A key *file* named like an
    /// algorithm is written `./es256` or `file:es256`.
    fn from_str(s: &str) -> Result<KeyChoice, KeyError> {
        match s.trim().parse::<KeyAlgorithm>() {
            Ok(alg) => Ok(KeyChoice::Generate(alg)),
            Err(_) => Ok(KeyChoice::Existing(s.parse()?)),
        }
    }
}

impl fmt::Display for KeyChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyChoice::Existing(r) => r.fmt(f),
            KeyChoice::Generate(a) => a.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_algorithm_name_is_a_new_key_and_anything_else_a_reference() {
        assert_eq!(
            "es256".parse::<KeyChoice>().expect("parses"),
            KeyChoice::Generate(KeyAlgorithm::EcP256)
        );
        assert_eq!(
            " RS3072 ".parse::<KeyChoice>().expect("parses"),
            KeyChoice::Generate(KeyAlgorithm::Rsa3072)
        );
        let KeyChoice::Existing(r) = "./es256".parse::<KeyChoice>().expect("parses") else {
            panic!("a path is a reference");
        };
        assert_eq!(r.scheme(), "file");
        assert!(r.as_str().ends_with("/es256"), "{r}");
        let KeyChoice::Existing(r) = "pkcs11:token=t;object=k"
            .parse::<KeyChoice>()
            .expect("parses")
        else {
            panic!("a URI is a reference");
        };
        assert_eq!(r.scheme(), "pkcs11");
    }
}
