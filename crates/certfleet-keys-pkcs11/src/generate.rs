//! Key generation on the token, and listing a token's keys.

use std::time::{SystemTime, UNIX_EPOCH};

use certfleet_keys::{KeyAlgorithm, KeyRef};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use sha2::{Digest, Sha256};

use crate::key::{Pkcs11Key, private_key_template, read_public};
use crate::public::{ED25519_PARAMS, P256_PARAMS, P384_PARAMS};
use crate::token::{Module, Token};
use crate::{Pkcs11Error, Pkcs11Uri};

/// One private key found on a token by [`crate::Pkcs11Backend::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// `CKA_LABEL`.
    pub label: String,
    /// `CKA_ID` as lowercase hex.
    pub id_hex: String,
    /// The algorithm certfleet would sign with, `None` for keys it cannot use.
    pub algorithm: Option<KeyAlgorithm>,
    /// What the key is, e.g. `es256` or "an RSA key of 1024 bits".
    pub description: String,
    /// The reference to use this key with (same module and PIN source as the query).
    pub key_ref: KeyRef,
    /// `CKA_SENSITIVE` and `CKA_EXTRACTABLE` as the token reports them.
    pub sensitive: bool,
    pub extractable: bool,
}

/// Generates a key pair for `uri` (token, `object` label, optional `id`) on the token:
/// the private key `Sensitive`, not `Extractable`, `Token`, `Private`, `Sign` only.
pub(crate) fn generate_blocking(
    uri: &Pkcs11Uri,
    algorithm: KeyAlgorithm,
    opts: &crate::Options,
) -> Result<Pkcs11Key, Pkcs11Error> {
    let shown = uri.to_string();
    let Some(label) = uri.object.clone() else {
        return Err(Pkcs11Error::InvalidUri {
            uri: shown,
            detail: "a new key needs a label (object=LABEL)".to_owned(),
        });
    };
    let module = Module::get(uri)?;
    let token = module.token(uri, opts.pool_size)?;
    token.ensure_login(uri, opts.pin_memory.as_ref())?;
    refuse_existing(&token, uri, &label, algorithm)?;

    let mut uri = uri.clone();
    let id = uri.id.get_or_insert_with(|| new_id(&label)).clone();
    let missing = |mechanism: &'static str| Pkcs11Error::MechanismMissing {
        uri: shown.clone(),
        mechanism,
        purpose: format!("generating an {algorithm} key"),
    };
    let mut public = vec![
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.clone()),
    ];
    let private = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Derive(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id),
    ];
    let mechanism = match algorithm {
        KeyAlgorithm::EcP256 | KeyAlgorithm::EcP384 => {
            if !token.has_mechanism(MechanismType::ECC_KEY_PAIR_GEN) {
                return Err(missing("CKM_EC_KEY_PAIR_GEN"));
            }
            let params = if algorithm == KeyAlgorithm::EcP256 {
                P256_PARAMS
            } else {
                P384_PARAMS
            };
            public.push(Attribute::EcParams(params.to_vec()));
            Mechanism::EccKeyPairGen
        }
        KeyAlgorithm::Ed25519 => {
            if !token.has_mechanism(MechanismType::EDDSA) {
                return Err(missing("CKM_EDDSA"));
            }
            if !token.has_mechanism(MechanismType::ECC_EDWARDS_KEY_PAIR_GEN) {
                return Err(missing("CKM_EC_EDWARDS_KEY_PAIR_GEN"));
            }
            public.push(Attribute::EcParams(ED25519_PARAMS.to_vec()));
            Mechanism::EccEdwardsKeyPairGen
        }
        KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
            if !token.has_mechanism(MechanismType::RSA_PKCS_KEY_PAIR_GEN) {
                return Err(missing("CKM_RSA_PKCS_KEY_PAIR_GEN"));
            }
            let bits = algorithm.rsa_bits().unwrap_or(2048) as u64;
            public.push(Attribute::ModulusBits(bits.into()));
            public.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
            Mechanism::RsaPkcsKeyPairGen
        }
    };
    token
        .with_keeper(|s| s.generate_key_pair(&mechanism, &public, &private))
        .map_err(|source| Pkcs11Error::Pkcs11 {
            uri: shown.clone(),
            operation: "C_GenerateKeyPair",
            source,
        })?;
    tracing::info!(key = %uri, %algorithm, "key pair generated on the token");
    Pkcs11Key::load_blocking(&uri, opts)
}

/// Refuses to create a second object with the same label.
fn refuse_existing(
    token: &Token,
    uri: &Pkcs11Uri,
    label: &str,
    algorithm: KeyAlgorithm,
) -> Result<(), Pkcs11Error> {
    let shown = uri.to_string();
    let existing = token
        .with_keeper(|s| s.find_objects(&[Attribute::Label(label.as_bytes().to_vec())]))
        .map_err(|source| Pkcs11Error::Pkcs11 {
            uri: shown.clone(),
            operation: "C_FindObjects",
            source,
        })?;
    if existing.is_empty() {
        return Ok(());
    }
    let mut probe = uri.clone();
    probe.id = None;
    let found = match token
        .with_keeper(|s| s.find_objects(&private_key_template(&probe)))
        .ok()
        .and_then(|h| h.first().copied())
    {
        Some(handle) => match read_public(token, &probe, handle) {
            Ok(public) if public.algorithm == algorithm => {
                return Err(Pkcs11Error::AlreadyExists {
                    uri: shown,
                    label: label.to_owned(),
                    found: format!("an {} key: use it, or pick another label", public.algorithm),
                });
            }
            Ok(public) => format!("an {} key", public.algorithm),
            Err(Pkcs11Error::WrongKeyType { found, .. }) => found,
            Err(_) => "a private key".to_owned(),
        },
        None => {
            return Err(Pkcs11Error::AlreadyExists {
                uri: shown,
                label: label.to_owned(),
                found: format!("{} object(s) that are not private keys", existing.len()),
            });
        }
    };
    Err(Pkcs11Error::WrongKeyType {
        uri: shown,
        found: format!("{found} labelled {label:?}"),
        expected: format!("an {algorithm} key"),
    })
}

/// A fresh `CKA_ID`: 8 bytes that differ per label and moment.
fn new_id(label: &str) -> Vec<u8> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut h = Sha256::new();
    h.update(label.as_bytes());
    h.update(nanos.to_be_bytes());
    h.update(std::process::id().to_be_bytes());
    h.finalize()[..8].to_vec()
}

/// Every private key on the token `uri` names (blocking).
pub(crate) fn list_blocking(
    uri: &Pkcs11Uri,
    opts: &crate::Options,
) -> Result<Vec<KeyInfo>, Pkcs11Error> {
    let shown = uri.to_string();
    let ck = |source| Pkcs11Error::Pkcs11 {
        uri: shown.clone(),
        operation: "C_FindObjects",
        source,
    };
    let module = Module::get(uri)?;
    let token = module.token(uri, opts.pool_size)?;
    token.ensure_login(uri, opts.pin_memory.as_ref())?;
    let handles = token
        .with_keeper(|s| s.find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)]))
        .map_err(ck)?;
    let mut keys = Vec::with_capacity(handles.len());
    for handle in handles {
        let attrs = token
            .with_keeper(|s| {
                s.get_attributes(
                    handle,
                    &[
                        AttributeType::Label,
                        AttributeType::Id,
                        AttributeType::KeyType,
                        AttributeType::Sensitive,
                        AttributeType::Extractable,
                    ],
                )
            })
            .map_err(ck)?;
        let mut info = KeyInfo {
            label: String::new(),
            id_hex: String::new(),
            algorithm: None,
            description: String::new(),
            key_ref: uri.key_ref(),
            sensitive: false,
            extractable: false,
        };
        let mut key_uri = uri.clone();
        let mut key_type = None;
        for a in attrs {
            match a {
                Attribute::Label(l) => {
                    info.label = String::from_utf8_lossy(&l).into_owned();
                    key_uri.object = Some(info.label.clone());
                }
                Attribute::Id(id) if !id.is_empty() => {
                    info.id_hex = id.iter().map(|b| format!("{b:02x}")).collect();
                    key_uri.id = Some(id);
                }
                Attribute::KeyType(t) => key_type = Some(t),
                Attribute::Sensitive(v) => info.sensitive = v,
                Attribute::Extractable(v) => info.extractable = v,
                _ => {}
            }
        }
        info.key_ref = key_uri.key_ref();
        match read_public(&token, &key_uri, handle) {
            Ok(public) => {
                info.algorithm = Some(public.algorithm);
                info.description = public.algorithm.to_string();
            }
            Err(Pkcs11Error::WrongKeyType { found, .. }) => info.description = found,
            Err(e) => {
                info.description = match key_type {
                    Some(KeyType::RSA) => format!("RSA key ({e})"),
                    Some(t) => format!("{t} key ({e})"),
                    None => e.to_string(),
                }
            }
        }
        keys.push(info);
    }
    keys.sort_by(|a, b| a.label.cmp(&b.label).then(a.id_hex.cmp(&b.id_hex)));
    Ok(keys)
}
