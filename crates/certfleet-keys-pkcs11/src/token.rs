//! Modules and tokens, shared by every key of the process.
//!
//! PKCS#11 allows one `C_Initialize` per module per process, and login state belongs to the
//! application, not a session. So there is one [`Module`] per module file and one [`Token`]
//! per (module, token label, serial); keys hold an `Arc<Token>`. A token keeps one
//! read-write session open for its whole life ("keeper"): closing a token's last session
//! logs the application out and invalidates its object handles.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::MechanismType;
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;

use certfleet_fs::TrustedLibrary;

use crate::pin::Pin;
use crate::pool::{PoolStats, SessionPool, lock, session_gone};
use crate::{Pkcs11Error, Pkcs11Uri};

/// Default number of sessions per token: four reached SoftHSM's single-thread signing rate
/// on two cores.
pub const DEFAULT_POOL_SIZE: usize = 4;

/// The mechanisms certfleet may use, probed once per token.
const WANTED_MECHANISMS: &[MechanismType] = &[
    MechanismType::ECC_KEY_PAIR_GEN,
    MechanismType::ECC_EDWARDS_KEY_PAIR_GEN,
    MechanismType::RSA_PKCS_KEY_PAIR_GEN,
    MechanismType::ECDSA,
    MechanismType::ECDSA_SHA256,
    MechanismType::ECDSA_SHA384,
    MechanismType::EDDSA,
    MechanismType::SHA256_RSA_PKCS,
    MechanismType::RSA_PKCS,
];

/// A token is identified by its label and, when given, its serial number.
type TokenKey = (String, Option<String>);

/// One loaded and initialized PKCS#11 module.
#[derive(Debug)]
pub(crate) struct Module {
    path: PathBuf,
    pkcs11: Pkcs11,
    tokens: Mutex<HashMap<TokenKey, Arc<Token>>>,
}

fn modules() -> &'static Mutex<HashMap<PathBuf, Arc<Module>>> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Arc<Module>>>> = OnceLock::new();
    MODULES.get_or_init(Mutex::default)
}

impl Module {
    /// The process-wide instance for the module file of `uri` (blocking).
    pub(crate) fn get(uri: &Pkcs11Uri) -> Result<Arc<Module>, Pkcs11Error> {
        let shown = uri.to_string();
        let path = uri
            .module_path
            .as_ref()
            .ok_or_else(|| Pkcs11Error::MissingModule { uri: shown.clone() })?;
        let load_err = |detail: String| Pkcs11Error::ModuleLoad {
            uri: shown.clone(),
            module: path.clone(),
            detail,
        };
        let canonical = std::fs::canonicalize(path)
            .map_err(|e| load_err(format!("{e} (is the module installed?)")))?;
        let mut all = lock(modules());
        if let Some(m) = all.get(&canonical) {
            return Ok(Arc::clone(m));
        }
        // Checked (owner, mode, directories) and loaded from the same open descriptor.
        let trusted = TrustedLibrary::open(&canonical).map_err(|e| load_err(e.to_string()))?;
        let pkcs11 = Pkcs11::new(trusted.load_path()).map_err(|e| load_err(e.to_string()))?;
        match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            // Someone else in this process initialized it first: the module is usable.
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(load_err(format!("C_Initialize: {e}"))),
        }
        tracing::debug!(module = %canonical.display(), "PKCS#11 module initialized");
        let module = Arc::new(Module {
            path: canonical.clone(),
            pkcs11,
            tokens: Mutex::default(),
        });
        all.insert(canonical, Arc::clone(&module));
        Ok(module)
    }

    /// The token `uri` names, opened once per process (blocking).
    pub(crate) fn token(
        self: &Arc<Self>,
        uri: &Pkcs11Uri,
        pool_size: usize,
    ) -> Result<Arc<Token>, Pkcs11Error> {
        let key = (uri.token.clone(), uri.serial.clone());
        let mut tokens = lock(&self.tokens);
        if let Some(t) = tokens.get(&key) {
            return Ok(Arc::clone(t));
        }
        let token = Arc::new(Token::open(self, uri, pool_size)?);
        tokens.insert(key, Arc::clone(&token));
        Ok(token)
    }
}

#[derive(Debug, Default)]
struct LoginState {
    logged_in: bool,
    /// The PIN the token accepted, kept to log in again after a logout.
    accepted: Option<Pin>,
    /// Fingerprints of PINs the token rejected: never offered again.
    rejected: Vec<[u8; 32]>,
    attempts: u64,
}

/// An open token: its slot, the keeper session, login state and the session pool.
#[derive(Debug)]
pub(crate) struct Token {
    module: Arc<Module>,
    label: String,
    slot: Slot,
    keeper: Mutex<Session>,
    login: Mutex<LoginState>,
    login_required: bool,
    mechanisms: Vec<MechanismType>,
    pool: Arc<SessionPool>,
}

impl Token {
    fn open(module: &Arc<Module>, uri: &Pkcs11Uri, pool_size: usize) -> Result<Token, Pkcs11Error> {
        let shown = uri.to_string();
        let ck = |operation: &'static str| {
            let uri = shown.clone();
            move |source| Pkcs11Error::Pkcs11 {
                uri,
                operation,
                source,
            }
        };
        let pkcs11 = &module.pkcs11;
        let mut labels = Vec::new();
        let mut matching = Vec::new();
        for slot in pkcs11
            .get_slots_with_initialized_token()
            .map_err(ck("C_GetSlotList"))?
        {
            let info = pkcs11.get_token_info(slot).map_err(ck("C_GetTokenInfo"))?;
            let label = info.label().trim().to_owned();
            let fits = |want: &Option<String>, have: &str| {
                want.as_deref().is_none_or(|w| w.trim() == have.trim())
            };
            if label == uri.token
                && fits(&uri.serial, info.serial_number())
                && fits(&uri.manufacturer, info.manufacturer_id())
                && fits(&uri.model, info.model())
            {
                matching.push(slot);
            }
            labels.push(format!("{label:?}"));
        }
        let slot = match matching.as_slice() {
            [slot] => *slot,
            [] => {
                return Err(Pkcs11Error::TokenNotFound {
                    uri: shown,
                    label: uri.token.clone(),
                    module: module.path.clone(),
                    available: if labels.is_empty() {
                        "none".to_owned()
                    } else {
                        labels.join(", ")
                    },
                });
            }
            many => {
                return Err(Pkcs11Error::AmbiguousToken {
                    uri: shown,
                    label: uri.token.clone(),
                    count: many.len(),
                });
            }
        };
        // Asked one by one: the full list holds vendor mechanisms cryptoki logs errors for.
        let mechanisms = WANTED_MECHANISMS
            .iter()
            .copied()
            .filter(|m| pkcs11.get_mechanism_info(slot, *m).is_ok())
            .collect();
        let info = pkcs11.get_token_info(slot).map_err(ck("C_GetTokenInfo"))?;
        // Leave the token room for other applications' sessions.
        let pool_size = match info.max_session_count() {
            cryptoki::slot::Limit::Max(max) => pool_size.min((max as usize).saturating_sub(1)),
            _ => pool_size,
        };
        let keeper = pkcs11.open_rw_session(slot).map_err(ck("C_OpenSession"))?;
        let login_required = info.login_required();
        tracing::debug!(token = %uri.token, slot = slot.id(), pool_size, "PKCS#11 token opened");
        Ok(Token {
            module: Arc::clone(module),
            label: uri.token.clone(),
            slot,
            keeper: Mutex::new(keeper),
            login: Mutex::new(LoginState {
                logged_in: !login_required,
                ..LoginState::default()
            }),
            login_required,
            mechanisms,
            pool: Arc::new(SessionPool::new(module.pkcs11.clone(), slot, pool_size)),
        })
    }

    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    pub(crate) fn has_mechanism(&self, m: MechanismType) -> bool {
        self.mechanisms.contains(&m)
    }

    pub(crate) fn pool(&self) -> &Arc<SessionPool> {
        &self.pool
    }

    pub(crate) fn pool_stats(&self) -> PoolStats {
        self.pool.stats()
    }

    /// How many times `C_Login` was called for this token in this process.
    pub(crate) fn login_attempts(&self) -> u64 {
        lock(&self.login).attempts
    }

    /// Runs `f` on the read-write keeper session (blocking), reopening it once if the token
    /// closed it.
    pub(crate) fn with_keeper<T>(
        &self,
        f: impl Fn(&Session) -> Result<T, CkError>,
    ) -> Result<T, CkError> {
        let mut keeper = lock(&self.keeper);
        match f(&keeper) {
            Err(e) if session_gone(&e) => {
                tracing::info!(token = %self.label, "PKCS#11 session was closed; reopening");
                *keeper = self.module.pkcs11.open_rw_session(self.slot)?;
                // The other sessions went with it; the next operation that finds itself
                // logged out logs in again (`relogin`).
                self.pool.discard_idle();
                f(&keeper)
            }
            other => other,
        }
    }

    /// Logs in with the PIN `uri` names unless already logged in (blocking). Each PIN is
    /// offered to the token at most once: a rejected PIN is remembered and refused here.
    pub(crate) fn ensure_login(&self, uri: &Pkcs11Uri) -> Result<(), Pkcs11Error> {
        let shown = uri.to_string();
        let pin = match &uri.pin {
            Some(source) => Some(source.read().map_err(|detail| Pkcs11Error::PinSource {
                uri: shown.clone(),
                source_name: source.describe(),
                detail,
            })?),
            None => None,
        };
        if matches!(uri.pin, Some(crate::PinSource::Value(_))) {
            tracing::warn!(
                key = %shown,
                "the PIN is written in the key reference (pin-value), so it is stored wherever \
                 the reference is; prefer pin-source=file:… or pin-source=env:…"
            );
        }
        let mut state = lock(&self.login);
        if state.logged_in {
            // Login belongs to the process, but every reference must carry its own PIN: a
            // reference that works only after another one logged in would fail in a fresh
            // process.
            return match (&pin, &state.accepted) {
                (None, _) if self.login_required => Err(Pkcs11Error::PinMissing { uri: shown }),
                (Some(p), Some(accepted)) if p != accepted => {
                    Err(Pkcs11Error::PinMismatch { uri: shown })
                }
                _ => Ok(()),
            };
        }
        self.login_locked(&mut state, pin, &shown)
    }

    /// Whether the token still has this application logged in (blocking): some modules
    /// answer a logged-out signature with an invalid-handle error instead of
    /// `CKR_USER_NOT_LOGGED_IN`.
    pub(crate) fn still_logged_in(&self) -> Result<bool, CkError> {
        if !self.login_required {
            return Ok(true);
        }
        let state = self.with_keeper(|s| s.get_session_info())?.session_state();
        Ok(!matches!(
            state,
            SessionState::RoPublic | SessionState::RwPublic
        ))
    }

    /// Logs in again after the token logged this application out (blocking).
    pub(crate) fn relogin(&self, shown: &str) -> Result<(), Pkcs11Error> {
        let mut state = lock(&self.login);
        state.logged_in = false;
        let pin = state.accepted.clone();
        self.login_locked(&mut state, pin, shown)
    }

    fn login_locked(
        &self,
        state: &mut LoginState,
        pin: Option<Pin>,
        shown: &str,
    ) -> Result<(), Pkcs11Error> {
        let uri = || shown.to_owned();
        let info = self
            .module
            .pkcs11
            .get_token_info(self.slot)
            .map_err(|source| Pkcs11Error::Pkcs11 {
                uri: uri(),
                operation: "C_GetTokenInfo",
                source,
            })?;
        if !info.login_required() {
            state.logged_in = true;
            return Ok(());
        }
        let pin = pin.ok_or_else(|| Pkcs11Error::PinMissing { uri: uri() })?;
        if state.rejected.contains(&pin.fingerprint()) {
            return Err(Pkcs11Error::PinIncorrect { uri: uri() });
        }
        if info.user_pin_locked() {
            return Err(Pkcs11Error::PinLocked { uri: uri() });
        }
        if info.user_pin_final_try() {
            return Err(Pkcs11Error::PinFinalTry { uri: uri() });
        }
        state.attempts += 1;
        let result = self.with_keeper(|s| s.login(UserType::User, Some(pin.secret())));
        match result {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
                tracing::debug!(token = %self.label, "logged in to the PKCS#11 token");
                state.logged_in = true;
                state.accepted = Some(pin);
                Ok(())
            }
            Err(CkError::Pkcs11(
                RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange,
                _,
            )) => {
                state.rejected.push(pin.fingerprint());
                Err(Pkcs11Error::PinIncorrect { uri: uri() })
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
                state.rejected.push(pin.fingerprint());
                Err(Pkcs11Error::PinLocked { uri: uri() })
            }
            Err(source) => Err(Pkcs11Error::Pkcs11 {
                uri: uri(),
                operation: "C_Login",
                source,
            }),
        }
    }
}
