//! The PKCS#11 backend against a real SoftHSM2 token: conformance for every algorithm,
//! non-extractable generation, the session pool, recovery, and every bad input.
//!
//! SoftHSM reads `SOFTHSM2_CONF` once per process, so all tests share one private token
//! directory (made on first use) with one token per concern.

use std::sync::{Arc, OnceLock};

use certfleet_keys::{KeyAlgorithm, KeyBackend, KeyRef, SigningKey};
use certfleet_keys_pkcs11::{Pkcs11Backend, Pkcs11Error, Pkcs11Key, Pkcs11Uri};
use certfleet_testenv::SoftHsm;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use cryptoki::session::{Session, UserType};

const PIN: &str = "2468";
/// One token per concern, so login state in this process cannot leak between tests.
const TOKENS: &[&str] = &["main", "pin", "recover", "bad", "pool"];

struct Fixture {
    hsm: SoftHsm,
    pin_file: std::path::PathBuf,
    wrong_pin_file: std::path::PathBuf,
}

fn fixture() -> Option<&'static Fixture> {
    static FIXTURE: OnceLock<Option<Fixture>> = OnceLock::new();
    FIXTURE
        .get_or_init(|| {
            if !certfleet_testenv::require_softhsm() {
                return None;
            }
            let hsm = SoftHsm::new().expect("softhsm dir");
            for token in TOKENS {
                hsm.init_token(token, PIN).expect("init token");
            }
            // SAFETY: set once, inside this initializer, before any test of this binary loads
            // the module (all reach the module through this fixture); no other code in this
            // test binary reads the environment from C concurrently.
            unsafe { std::env::set_var("SOFTHSM2_CONF", hsm.conf_path()) };
            let pin_file = hsm.pin_file("pin", PIN).expect("pin file");
            let wrong_pin_file = hsm.pin_file("wrong-pin", "9999").expect("pin file");
            Some(Fixture {
                hsm,
                pin_file,
                wrong_pin_file,
            })
        })
        .as_ref()
}

impl Fixture {
    fn uri(&self, token: &str, object: &str) -> Pkcs11Uri {
        Pkcs11Uri::parse(&self.hsm.key_uri(token, object, &self.pin_file)).expect("uri")
    }

    /// The module through a second handle: cryptoki allows it (already initialized).
    fn raw(&self) -> Pkcs11 {
        let p = Pkcs11::new(self.hsm.module_path()).expect("module");
        // Already initialized by the backend, or not yet: both fine.
        let _ = p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
        p
    }

    fn raw_session(&self, token: &str) -> (Pkcs11, Session, cryptoki::slot::Slot) {
        let p = self.raw();
        let slot = p
            .get_slots_with_initialized_token()
            .expect("slots")
            .into_iter()
            .find(|s| p.get_token_info(*s).expect("info").label().trim() == token)
            .expect("token slot");
        let session = p.open_rw_session(slot).expect("session");
        (p, session, slot)
    }
}

async fn generate(f: &Fixture, token: &str, label: &str, alg: KeyAlgorithm) -> Arc<Pkcs11Key> {
    Pkcs11Backend::new()
        .generate(&f.uri(token, label), alg)
        .await
        .unwrap_or_else(|e| panic!("generate {alg}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_keys_of_every_algorithm_conform_and_reload() {
    let Some(f) = fixture() else { return };
    for alg in [
        KeyAlgorithm::EcP256,
        KeyAlgorithm::EcP384,
        KeyAlgorithm::Rsa2048,
        KeyAlgorithm::Ed25519,
    ] {
        let label = format!("conform-{alg}");
        let key = generate(f, "main", &label, alg).await;
        assert_eq!(key.algorithm(), alg);
        certfleet_keys::conformance::check_signing_key(&*key)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // Through the KeyBackend seam, from the persisted reference alone.
        let reloaded = Pkcs11Backend::new()
            .load(key.key_ref())
            .await
            .expect("reload");
        assert_eq!(reloaded.public_jwk(), key.public_jwk());
        certfleet_keys::conformance::check_signing_key(&*reloaded)
            .await
            .unwrap_or_else(|e| panic!("reloaded: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_keys_are_generated_sensitive_and_never_give_out_their_value() {
    let Some(f) = fixture() else { return };
    generate(f, "main", "secret-ec", KeyAlgorithm::EcP256).await;
    generate(f, "main", "secret-rsa", KeyAlgorithm::Rsa2048).await;
    let (_p, session, _) = f.raw_session("main");
    session
        .login(UserType::User, Some(&PIN.into()))
        .or_else(|e| match e {
            cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _) => {
                Ok(())
            }
            e => Err(e),
        })
        .expect("login");
    for label in ["secret-ec", "secret-rsa"] {
        let handles = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .expect("find");
        assert_eq!(handles.len(), 1, "{label}");
        let attrs = session
            .get_attributes(
                handles[0],
                &[
                    AttributeType::Value,
                    AttributeType::PrivateExponent,
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::AlwaysSensitive,
                    AttributeType::NeverExtractable,
                ],
            )
            .expect("get attributes");
        for a in &attrs {
            match a {
                Attribute::Value(v) => panic!("{label}: CKA_VALUE returned {} bytes", v.len()),
                Attribute::PrivateExponent(v) => {
                    panic!("{label}: CKA_PRIVATE_EXPONENT returned {} bytes", v.len())
                }
                Attribute::Sensitive(s) => assert!(*s, "{label}: CKA_SENSITIVE"),
                Attribute::Extractable(e) => assert!(!*e, "{label}: CKA_EXTRACTABLE"),
                Attribute::AlwaysSensitive(s) => assert!(*s, "{label}: CKA_ALWAYS_SENSITIVE"),
                Attribute::NeverExtractable(n) => assert!(*n, "{label}: CKA_NEVER_EXTRACTABLE"),
                _ => {}
            }
        }
        assert_eq!(
            attrs.len(),
            4,
            "{label}: only the four flags come back: {attrs:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_pin_is_offered_once_and_the_token_stays_usable() {
    let Some(f) = fixture() else { return };
    let mut wrong = f.uri("pin", "pin-key");
    wrong.pin = Some(certfleet_keys_pkcs11::PinSource::File(
        f.wrong_pin_file.clone(),
    ));
    for _ in 0..3 {
        let err = Pkcs11Backend::new()
            .generate(&wrong, KeyAlgorithm::EcP256)
            .await
            .expect_err("wrong PIN");
        assert!(matches!(err, Pkcs11Error::PinIncorrect { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("pkcs11:token=pin"), "names the key: {text}");
        assert!(text.contains("will not retry"), "{text}");
    }
    let (p, _session, slot) = f.raw_session("pin");
    let info = p.get_token_info(slot).expect("info");
    assert!(
        !info.user_pin_locked(),
        "one wrong PIN must not lock the token"
    );
    assert!(!info.user_pin_final_try());
    let key = generate(f, "pin", "pin-key", KeyAlgorithm::EcP256).await;
    assert_eq!(
        key.login_attempts(),
        2,
        "one C_Login with the wrong PIN (never repeated), one with the right one"
    );
    key.sign(b"after a wrong PIN").await.expect("sign");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_references_fail_clearly_and_name_the_key() {
    let Some(f) = fixture() else { return };
    let backend = Pkcs11Backend::new();
    generate(f, "bad", "present", KeyAlgorithm::EcP256).await;
    let module = f.hsm.module_path().display().to_string();
    let pin = f.pin_file.display().to_string();
    let cases: Vec<(String, &str)> = vec![
        (
            format!("pkcs11:token=bad;object=present?pin-source=file:{pin}"),
            "no module-path",
        ),
        (
            format!(
                "pkcs11:token=bad;object=present?module-path=/nonexistent/libp11.so&pin-source=file:{pin}"
            ),
            "cannot load PKCS#11 module /nonexistent/libp11.so",
        ),
        (
            format!(
                "pkcs11:token=nosuchtoken;object=present?module-path={module}&pin-source=file:{pin}"
            ),
            "matches the URI (slot ",
        ),
        (
            format!("pkcs11:token=bad;object=absent?module-path={module}&pin-source=file:{pin}"),
            "no private key matches on token \"bad\" (keys there: \"present\")",
        ),
        (
            format!("pkcs11:token=bad;object=present?module-path={module}"),
            "needs a PIN",
        ),
        (
            format!(
                "pkcs11:token=bad;object=present?module-path={module}&pin-source=file:/nonexistent/pin"
            ),
            "cannot read the PIN from file /nonexistent/pin",
        ),
    ];
    for (uri, expected) in cases {
        let key_ref: KeyRef = uri.parse().expect("key ref");
        let err = backend.load(&key_ref).await.expect_err(&uri).to_string();
        assert!(err.contains(expected), "{uri}\n  -> {err}");
        assert!(err.contains("pkcs11:token="), "names the reference: {err}");
    }
    let tokens = backend
        .load(
            &format!(
                "pkcs11:token=nosuchtoken;object=x?module-path={module}&pin-source=file:{pin}"
            )
            .parse()
            .expect("ref"),
        )
        .await
        .expect_err("no token")
        .to_string();
    assert!(
        tokens.contains("token \"main\"") && tokens.contains("token \"bad\""),
        "lists tokens: {tokens}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_types_are_refused() {
    let Some(f) = fixture() else { return };
    generate(f, "bad", "an-ec-key", KeyAlgorithm::EcP256).await;
    let err = Pkcs11Backend::new()
        .generate(&f.uri("bad", "an-ec-key"), KeyAlgorithm::Rsa2048)
        .await
        .expect_err("label taken by another type");
    assert!(matches!(err, Pkcs11Error::WrongKeyType { .. }), "{err}");
    assert!(
        err.to_string().contains(
            "the object is an es256 key labelled \"an-ec-key\", an rs256 key was asked for"
        ),
        "{err}"
    );
    let same = Pkcs11Backend::new()
        .generate(&f.uri("bad", "an-ec-key"), KeyAlgorithm::EcP256)
        .await
        .expect_err("label taken");
    assert!(matches!(same, Pkcs11Error::AlreadyExists { .. }), "{same}");

    // Keys certfleet cannot sign with: RSA-1024, and a secret (AES) key under a label.
    let (_p, session, _) = f.raw_session("bad");
    let _ = session.login(UserType::User, Some(&PIN.into()));
    session
        .generate_key_pair(
            &cryptoki::mechanism::Mechanism::RsaPkcsKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::ModulusBits(1024.into()),
                Attribute::PublicExponent(vec![1, 0, 1]),
                Attribute::Label(b"rsa-1024".to_vec()),
            ],
            &[
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sign(true),
                Attribute::Label(b"rsa-1024".to_vec()),
            ],
        )
        .expect("rsa 1024");
    session
        .generate_key(
            &cryptoki::mechanism::Mechanism::AesKeyGen,
            &[
                Attribute::Token(true),
                Attribute::ValueLen(32.into()),
                Attribute::Label(b"aes".to_vec()),
                Attribute::KeyType(KeyType::AES),
            ],
        )
        .expect("aes");
    let small = Pkcs11Backend::new()
        .load_uri(&f.uri("bad", "rsa-1024"))
        .await
        .expect_err("1024-bit");
    assert!(matches!(small, Pkcs11Error::WrongKeyType { .. }), "{small}");
    assert!(
        small.to_string().contains("an RSA key of 1024 bits"),
        "{small}"
    );
    let aes = Pkcs11Backend::new()
        .load_uri(&f.uri("bad", "aes"))
        .await
        .expect_err("secret key");
    assert!(matches!(aes, Pkcs11Error::ObjectNotFound { .. }), "{aes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_signers_use_several_sessions() {
    let Some(f) = fixture() else { return };
    let key = generate(f, "pool", "pooled", KeyAlgorithm::EcP256).await;
    let before = key.pool_stats();
    let messages: Vec<Vec<u8>> = (0..16).map(|i| format!("m{i}").into_bytes()).collect();
    // Two signatures on two sessions at the same instant depend on the blocking threads
    // being scheduled together, which a loaded machine may not do in one round: rounds
    // continue (bounded) until they overlap once.
    let mut rounds = 0;
    let after = loop {
        rounds += 1;
        let signs: Vec<_> = messages.iter().map(|m| key.sign(m)).collect();
        for result in futures_join(signs).await {
            result.expect("sign");
        }
        let stats = key.pool_stats();
        if stats.peak_busy >= 2 || rounds == 50 {
            break stats;
        }
    };
    assert_eq!(after.size, certfleet_keys_pkcs11::DEFAULT_POOL_SIZE);
    assert_eq!(
        after.peak_in_use, after.size,
        "16 concurrent signatures must occupy every session: {after:?}"
    );
    // A session is only opened when none is idle, i.e. all open ones are busy: a second
    // session proves two signatures ran on different sessions at the same moment.
    assert!(
        after.sessions_opened >= 2,
        "after {rounds} rounds: {after:?}"
    );
    assert!(after.peak_busy >= 2, "after {rounds} rounds: {after:?}");
    assert!(
        after.waited > before.waited,
        "the other 12 waited for a session: {after:?}"
    );
    assert_eq!(after.in_use, 0, "{after:?}");
    assert_eq!(
        after.operations - before.operations,
        16 * rounds,
        "{after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_recovers_from_logout_and_closed_sessions() {
    let Some(f) = fixture() else { return };
    let key = generate(f, "recover", "phoenix", KeyAlgorithm::EcP256).await;
    key.sign(b"warm up").await.expect("sign");

    // Another part of the process logs the application out.
    let (_p, session, slot) = f.raw_session("recover");
    session.logout().expect("logout");
    key.sign(b"after logout")
        .await
        .expect("recovers from a logout");

    // Every session of the token is closed under the backend.
    let lib = unsafe { cryptoki_sys::Pkcs11::new(f.hsm.module_path()) }.expect("dlopen");
    drop(session);
    // SAFETY: the module is initialized; the slot id comes from the module itself.
    let rv = unsafe { lib.C_CloseAllSessions(slot.id() as cryptoki_sys::CK_SLOT_ID) };
    assert_eq!(rv, cryptoki_sys::CKR_OK);
    key.sign(b"after close-all")
        .await
        .expect("recovers from closed sessions");
    certfleet_keys::conformance::check_signing_key(&*key)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_never_appear_in_errors_or_debug() {
    let Some(f) = fixture() else { return };
    let secret = "7355608-secret";
    let uri = format!(
        "pkcs11:token=bad;object=nothing?module-path={}&pin-value={secret}",
        f.hsm.module_path().display()
    );
    let parsed = Pkcs11Uri::parse(&uri).expect("parse");
    let key_ref: KeyRef = uri.parse().expect("ref");
    let err = Pkcs11Backend::new()
        .load(&key_ref)
        .await
        .expect_err("wrong pin");
    let mut chain = format!("{err} {err:?}");
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        chain.push_str(&format!(" {s} {s:?}"));
        source = s.source();
    }
    for shown in [
        chain,
        format!("{parsed:?} {parsed}"),
        format!("{key_ref:?} {key_ref}"),
    ] {
        assert!(!shown.contains(secret), "PIN leaked: {shown}");
    }
    let key = generate(f, "main", "debug-me", KeyAlgorithm::EcP256).await;
    let debug = format!("{key:?}");
    assert!(debug.contains("pkcs11:token=main"), "{debug}");
    assert!(!debug.contains(PIN), "{debug}");
}

/// Polls all futures in one task, like `futures::future::join_all`.
async fn futures_join<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, slot) in futures.iter_mut().zip(results.iter_mut()) {
            if slot.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    results.into_iter().flatten().collect()
}
