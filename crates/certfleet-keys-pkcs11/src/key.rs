//! A private key on a token, used through the session pool.

use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use certfleet_keys::{Jwk, KeyAlgorithm, KeyError, KeyRef, SigningKey};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use sha2::{Digest, Sha256, Sha384};

use crate::pool::{PoolStats, lock, session_gone};
use crate::public::{self, PublicError, PublicKey};
use crate::token::Token;
use crate::{Pkcs11Error, Pkcs11Uri};

/// Most attempts at one signature: the first, then one after each kind of recovery (a
/// closed session, a logout, a stale object handle).
const MAX_SIGN_ATTEMPTS: usize = 4;

/// DER `DigestInfo` prefix for SHA-256 (RFC 8017 §9.2 note 1), for tokens that only offer
/// raw `CKM_RSA_PKCS`.
const SHA256_DIGEST_INFO: &[u8] = &[
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// How a key signs on its token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SignMechanism {
    /// `CKM_ECDSA` over a digest computed here (SoftHSM has no `CKM_ECDSA_SHA256`).
    EcdsaPrehashed,
    /// `CKM_ECDSA_SHA256` / `CKM_ECDSA_SHA384`: the token hashes.
    EcdsaWithHash,
    /// `CKM_SHA256_RSA_PKCS`: the token hashes.
    RsaSha256,
    /// `CKM_RSA_PKCS` over a DigestInfo computed here.
    RsaPrehashed,
    /// `CKM_EDDSA` (pure Ed25519).
    Eddsa,
}

impl SignMechanism {
    fn mechanism(self, algorithm: KeyAlgorithm) -> Mechanism<'static> {
        match self {
            SignMechanism::EcdsaPrehashed => Mechanism::Ecdsa,
            SignMechanism::EcdsaWithHash if algorithm == KeyAlgorithm::EcP384 => {
                Mechanism::EcdsaSha384
            }
            SignMechanism::EcdsaWithHash => Mechanism::EcdsaSha256,
            SignMechanism::RsaSha256 => Mechanism::Sha256RsaPkcs,
            SignMechanism::RsaPrehashed => Mechanism::RsaPkcs,
            SignMechanism::Eddsa => Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
        }
    }
}

/// A signing key that lives on a PKCS#11 token; the private key never leaves it.
pub struct Pkcs11Key {
    uri: Pkcs11Uri,
    key_ref: KeyRef,
    token: Arc<Token>,
    public: PublicKey,
    handle: Mutex<ObjectHandle>,
    mechanism: SignMechanism,
}

impl fmt::Debug for Pkcs11Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Key")
            .field("uri", &self.uri)
            .field("algorithm", &self.public.algorithm)
            .field("mechanism", &self.mechanism)
            .field("thumbprint", &self.public.jwk.thumbprint())
            .finish_non_exhaustive()
    }
}

impl Pkcs11Key {
    /// Finds the key `uri` names and reads its public half (blocking).
    pub(crate) fn load_blocking(
        uri: &Pkcs11Uri,
        opts: &crate::Options,
    ) -> Result<Pkcs11Key, Pkcs11Error> {
        let shown = uri.to_string();
        if uri.object.is_none() && uri.id.is_none() {
            return Err(Pkcs11Error::InvalidUri {
                uri: shown,
                detail: "name the key with object=LABEL and/or id=…".to_owned(),
            });
        }
        let module = crate::token::Module::get(uri)?;
        let token = module.token(uri, opts.pool_size)?;
        token.ensure_login(uri, opts.pin_memory.as_ref())?;
        let handle = find_private_key(&token, uri)?;
        let public = read_public(&token, uri, handle)?;
        let mechanism = choose_mechanism(&token, uri, public.algorithm)?;
        tracing::debug!(key = %shown, algorithm = %public.algorithm, ?mechanism, "PKCS#11 key loaded");
        Ok(Pkcs11Key {
            key_ref: uri.key_ref(),
            uri: uri.clone(),
            token,
            public,
            handle: Mutex::new(handle),
            mechanism,
        })
    }

    /// The parsed reference of this key.
    pub fn uri(&self) -> &Pkcs11Uri {
        &self.uri
    }

    /// The token's session-pool counters (shared by every key on the token).
    pub fn pool_stats(&self) -> PoolStats {
        self.token.pool_stats()
    }

    /// How many times this process called `C_Login` on the key's token.
    pub fn login_attempts(&self) -> u64 {
        self.token.login_attempts()
    }

    fn error(&self, operation: &'static str, source: CkError) -> Pkcs11Error {
        Pkcs11Error::Pkcs11 {
            uri: self.uri.to_string(),
            operation,
            source,
        }
    }

    /// What is sent to the token: the message, or its digest (DigestInfo for raw RSA).
    fn token_input(&self, message: &[u8]) -> Vec<u8> {
        match (self.mechanism, self.public.algorithm) {
            (SignMechanism::EcdsaPrehashed, KeyAlgorithm::EcP384) => {
                Sha384::digest(message).to_vec()
            }
            (SignMechanism::EcdsaPrehashed, _) => Sha256::digest(message).to_vec(),
            (SignMechanism::RsaPrehashed, _) => {
                let mut input = SHA256_DIGEST_INFO.to_vec();
                input.extend_from_slice(&Sha256::digest(message));
                input
            }
            _ => message.to_vec(),
        }
    }

    /// Recovers from a failure that a fresh session, a new login or a new object handle
    /// fixes; returns the error when none of those applies.
    async fn recover(&self, error: CkError) -> Result<(), Pkcs11Error> {
        let shown = self.uri.to_string();
        let token = Arc::clone(&self.token);
        match &error {
            // The pool dropped the dead session; the retry opens a new one.
            e if session_gone(e) => Ok(()),
            CkError::Pkcs11(RvError::UserNotLoggedIn, _) => {
                tracing::info!(key = %shown, "PKCS#11 token logged out; logging in again");
                let uri = shown.clone();
                blocking(&shown, move || token.relogin(&uri)).await
            }
            CkError::Pkcs11(RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid, _) => {
                tracing::info!(key = %shown, "PKCS#11 object handle went stale; finding the key again");
                let uri = self.uri.clone();
                let handle = blocking(&shown, move || {
                    let logged_in =
                        token
                            .still_logged_in()
                            .map_err(|source| Pkcs11Error::Pkcs11 {
                                uri: uri.to_string(),
                                operation: "C_GetSessionInfo",
                                source,
                            })?;
                    if !logged_in {
                        tracing::info!(key = %uri, "PKCS#11 token logged out; logging in again");
                        token.relogin(&uri.to_string())?;
                    }
                    find_private_key(&token, &uri)
                })
                .await?;
                *lock(&self.handle) = handle;
                Ok(())
            }
            _ => Err(self.error("C_Sign", error)),
        }
    }
}

/// Runs blocking token work (login, object search, generation) on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    shown: &str,
    f: impl FnOnce() -> Result<T, Pkcs11Error> + Send + 'static,
) -> Result<T, Pkcs11Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Pkcs11Error::Task {
            uri: shown.to_owned(),
            detail: e.to_string(),
        })?
}

#[async_trait]
impl SigningKey for Pkcs11Key {
    fn key_ref(&self) -> &KeyRef {
        &self.key_ref
    }

    fn algorithm(&self) -> KeyAlgorithm {
        self.public.algorithm
    }

    fn public_jwk(&self) -> &Jwk {
        &self.public.jwk
    }

    fn public_key_der(&self) -> &[u8] {
        &self.public.spki
    }

    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let input = Arc::new(self.token_input(message));
        let (mechanism, algorithm) = (self.mechanism, self.public.algorithm);
        let mut last = None;
        for _ in 0..MAX_SIGN_ATTEMPTS {
            let handle = *lock(&self.handle);
            let data = Arc::clone(&input);
            let result = self
                .token
                .pool()
                .run(move |s: &Session| s.sign(&mechanism.mechanism(algorithm), handle, &data))
                .await
                .map_err(|detail| Pkcs11Error::Task {
                    uri: self.uri.to_string(),
                    detail,
                })?;
            match result {
                Ok(signature) => return Ok(self.check_signature(signature)?),
                Err(e) => {
                    let kind = format!("{e:?}");
                    if last.as_ref() == Some(&kind) {
                        // The same failure right after its recovery: give up.
                        return Err(self.error("C_Sign", e).into());
                    }
                    self.recover(e).await?;
                    last = Some(kind);
                }
            }
        }
        Err(Pkcs11Error::Task {
            uri: self.uri.to_string(),
            detail: format!("signing still failed after {MAX_SIGN_ATTEMPTS} attempts"),
        }
        .into())
    }
}

impl Pkcs11Key {
    fn check_signature(&self, signature: Vec<u8>) -> Result<Vec<u8>, Pkcs11Error> {
        let expected = match self.public.algorithm {
            KeyAlgorithm::EcP256 | KeyAlgorithm::Ed25519 => Some(64),
            KeyAlgorithm::EcP384 => Some(96),
            _ => None,
        };
        match expected {
            Some(len) if signature.len() != len => Err(Pkcs11Error::BadAttribute {
                uri: self.uri.to_string(),
                what: "signature",
                detail: format!("{} bytes, expected {len}", signature.len()),
            }),
            _ => Ok(signature),
        }
    }
}

/// The template that finds the private key `uri` names.
pub(crate) fn private_key_template(uri: &Pkcs11Uri) -> Vec<Attribute> {
    let mut template = vec![Attribute::Class(ObjectClass::PRIVATE_KEY)];
    if let Some(label) = &uri.object {
        template.push(Attribute::Label(label.as_bytes().to_vec()));
    }
    if let Some(id) = &uri.id {
        template.push(Attribute::Id(id.clone()));
    }
    template
}

fn find_private_key(token: &Token, uri: &Pkcs11Uri) -> Result<ObjectHandle, Pkcs11Error> {
    let shown = uri.to_string();
    let ck = |source| Pkcs11Error::Pkcs11 {
        uri: shown.clone(),
        operation: "C_FindObjects",
        source,
    };
    let found = token
        .with_keeper(|s| s.find_objects(&private_key_template(uri)))
        .map_err(ck)?;
    match found.as_slice() {
        [one] => Ok(*one),
        [] => {
            let labels = token
                .with_keeper(|s| {
                    let all = s.find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])?;
                    all.into_iter()
                        .map(|h| label_of(s, h))
                        .collect::<Result<Vec<_>, _>>()
                })
                .map_err(ck)?;
            Err(Pkcs11Error::ObjectNotFound {
                uri: shown,
                token: token.label().to_owned(),
                available: if labels.is_empty() {
                    "none".to_owned()
                } else {
                    labels.join(", ")
                },
            })
        }
        many => Err(Pkcs11Error::AmbiguousObject {
            uri: shown,
            count: many.len(),
        }),
    }
}

pub(crate) fn label_of(s: &Session, handle: ObjectHandle) -> Result<String, CkError> {
    let attrs = s.get_attributes(handle, &[AttributeType::Label])?;
    Ok(match attrs.first() {
        Some(Attribute::Label(l)) => format!("{:?}", String::from_utf8_lossy(l)),
        _ => "(no label)".to_owned(),
    })
}

/// Reads the public key of the private key `handle`: RSA from the private object, EC and
/// EdDSA from the matching public object (same id, else same label).
pub(crate) fn read_public(
    token: &Token,
    uri: &Pkcs11Uri,
    handle: ObjectHandle,
) -> Result<PublicKey, Pkcs11Error> {
    let shown = uri.to_string();
    let ck = |source| Pkcs11Error::Pkcs11 {
        uri: shown.clone(),
        operation: "C_GetAttributeValue",
        source,
    };
    let map_public = |e: PublicError| match e {
        PublicError::Unsupported(found) => Pkcs11Error::WrongKeyType {
            uri: shown.clone(),
            found,
            expected: public::SUPPORTED.to_owned(),
        },
        PublicError::Bad(what, detail) => Pkcs11Error::BadAttribute {
            uri: shown.clone(),
            what,
            detail,
        },
    };
    let attrs = token
        .with_keeper(|s| {
            s.get_attributes(
                handle,
                &[
                    AttributeType::KeyType,
                    AttributeType::Sign,
                    AttributeType::Id,
                    AttributeType::Label,
                    AttributeType::Modulus,
                    AttributeType::PublicExponent,
                ],
            )
        })
        .map_err(ck)?;
    let mut key_type = None;
    let (mut sign, mut id, mut label, mut n, mut e) = (false, None, None, None, None);
    for a in attrs {
        match a {
            Attribute::KeyType(t) => key_type = Some(t),
            Attribute::Sign(s) => sign = s,
            Attribute::Id(v) if !v.is_empty() => id = Some(v),
            Attribute::Label(v) => label = Some(v),
            Attribute::Modulus(v) => n = Some(v),
            Attribute::PublicExponent(v) => e = Some(v),
            _ => {}
        }
    }
    let key_type = key_type.ok_or_else(|| Pkcs11Error::BadAttribute {
        uri: shown.clone(),
        what: "CKA_KEY_TYPE",
        detail: "missing".to_owned(),
    })?;
    if !sign {
        return Err(Pkcs11Error::WrongKeyType {
            uri: shown.clone(),
            found: "a private key without CKA_SIGN".to_owned(),
            expected: public::SUPPORTED.to_owned(),
        });
    }
    if key_type == KeyType::RSA {
        let (Some(n), Some(e)) = (n, e) else {
            return Err(Pkcs11Error::BadAttribute {
                uri: shown.clone(),
                what: "RSA private key",
                detail: "no CKA_MODULUS/CKA_PUBLIC_EXPONENT".to_owned(),
            });
        };
        return public::from_rsa(&n, &e).map_err(map_public);
    }
    let edwards = key_type == KeyType::EC_EDWARDS;
    if key_type != KeyType::EC && !edwards {
        return Err(Pkcs11Error::WrongKeyType {
            uri: shown.clone(),
            found: format!("a {key_type} key"),
            expected: public::SUPPORTED.to_owned(),
        });
    }
    let mut template = vec![Attribute::Class(ObjectClass::PUBLIC_KEY)];
    match (id, label) {
        (Some(id), _) => template.push(Attribute::Id(id)),
        (None, Some(label)) => template.push(Attribute::Label(label)),
        (None, None) => {}
    }
    let (params, point) = token
        .with_keeper(|s| {
            let Some(public) = s.find_objects(&template)?.first().copied() else {
                return Ok((None, None));
            };
            let mut params = None;
            let mut point = None;
            for a in s.get_attributes(public, &[AttributeType::EcParams, AttributeType::EcPoint])? {
                match a {
                    Attribute::EcParams(v) => params = Some(v),
                    Attribute::EcPoint(v) => point = Some(v),
                    _ => {}
                }
            }
            Ok((params, point))
        })
        .map_err(ck)?;
    let (Some(params), Some(point)) = (params, point) else {
        return Err(Pkcs11Error::BadAttribute {
            uri: shown.clone(),
            what: "public key",
            detail: "no public key object with the private key's id or label \
                     (CKA_EC_PARAMS, CKA_EC_POINT)"
                .to_owned(),
        });
    };
    public::from_ec(&params, &point, edwards).map_err(map_public)
}

fn choose_mechanism(
    token: &Token,
    uri: &Pkcs11Uri,
    algorithm: KeyAlgorithm,
) -> Result<SignMechanism, Pkcs11Error> {
    let missing = |mechanism: &'static str| Pkcs11Error::MechanismMissing {
        uri: uri.to_string(),
        mechanism,
        purpose: format!("signing with an {algorithm} key"),
    };
    let has = |m| token.has_mechanism(m);
    Ok(match algorithm {
        KeyAlgorithm::EcP256 if has(MechanismType::ECDSA_SHA256) => SignMechanism::EcdsaWithHash,
        KeyAlgorithm::EcP384 if has(MechanismType::ECDSA_SHA384) => SignMechanism::EcdsaWithHash,
        KeyAlgorithm::EcP256 | KeyAlgorithm::EcP384 if has(MechanismType::ECDSA) => {
            SignMechanism::EcdsaPrehashed
        }
        KeyAlgorithm::EcP256 | KeyAlgorithm::EcP384 => return Err(missing("CKM_ECDSA")),
        KeyAlgorithm::Ed25519 if has(MechanismType::EDDSA) => SignMechanism::Eddsa,
        KeyAlgorithm::Ed25519 => return Err(missing("CKM_EDDSA")),
        _ if has(MechanismType::SHA256_RSA_PKCS) => SignMechanism::RsaSha256,
        _ if has(MechanismType::RSA_PKCS) => SignMechanism::RsaPrehashed,
        _ => return Err(missing("CKM_SHA256_RSA_PKCS")),
    })
}
