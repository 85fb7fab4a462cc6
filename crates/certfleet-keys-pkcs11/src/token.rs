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

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::MechanismType;
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;

use certfleet_fs::TrustedLibrary;

use crate::pin::{Pin, PinSource};
use crate::pin_memory::PinMemory;
use crate::pool::{PoolStats, SessionPool, lock, session_gone};
use crate::raw::{LibraryInfo, RawModule, TokenInfo};
use crate::{Pkcs11Error, Pkcs11Uri};

/// Default number of sessions per token: four reached SoftHSM's single-thread signing rate
/// on two cores.
pub const DEFAULT_POOL_SIZE: usize = 4;

/// One loaded and initialized PKCS#11 module.
#[derive(Debug)]
pub(crate) struct Module {
    path: PathBuf,
    pkcs11: Pkcs11,
    raw: RawModule,
    /// `C_GetInfo`, read once; `Err` holds the failure for URIs that ask about the library.
    library: Result<LibraryInfo, String>,
    /// Open tokens by slot id.
    tokens: Mutex<HashMap<u64, Arc<Token>>>,
}

fn modules() -> &'static Mutex<HashMap<PathBuf, Arc<Module>>> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Arc<Module>>>> = OnceLock::new();
    MODULES.get_or_init(Mutex::default)
}

/// What [`shutdown`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Modules `C_Finalize`d.
    pub modules: usize,
    /// Sessions closed (keepers and pooled).
    pub sessions: usize,
    /// Tokens logged out (those this process logged in to).
    pub logouts: usize,
}

/// Ends every PKCS#11 use of this process (blocking): closes each token's sessions, logs
/// out where this process logged in, and calls `C_Finalize` on each module. Keys loaded
/// before fail afterwards; loading a key again initializes its module anew. Problems are
/// logged, not returned: this runs at exit and on error paths.
pub fn shutdown() -> ShutdownReport {
    let all: Vec<Arc<Module>> = lock(modules()).drain().map(|(_, m)| m).collect();
    let mut report = ShutdownReport::default();
    for module in all {
        let tokens: Vec<Arc<Token>> = lock(&module.tokens).drain().map(|(_, t)| t).collect();
        for token in tokens {
            let (sessions, logged_out) = token.close();
            report.sessions += sessions;
            report.logouts += usize::from(logged_out);
        }
        if let Err(e) = module.raw.finalize() {
            tracing::warn!(module = %module.path.display(), "C_Finalize of the info instance failed: {e}");
        }
        match module.pkcs11.clone().finalize() {
            Ok(()) => report.modules += 1,
            Err(e) => tracing::warn!(module = %module.path.display(), "C_Finalize failed: {e}"),
        }
    }
    if report.modules > 0 {
        tracing::debug!(?report, "PKCS#11 modules finalized");
    }
    report
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
        let pkcs11 = trusted
            .load_and_keep(|module| Pkcs11::new(module))
            .map_err(|e| load_err(e.to_string()))?;
        match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            // Someone else in this process initialized it first: the module is usable.
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(load_err(format!("C_Initialize: {e}"))),
        }
        let raw = RawModule::open(&canonical).map_err(&load_err)?;
        let library = raw
            .library_info()
            .map_err(|e| format!("C_GetInfo failed: {e}"));
        tracing::debug!(module = %canonical.display(), ?library, "PKCS#11 module initialized");
        let module = Arc::new(Module {
            path: canonical.clone(),
            pkcs11,
            raw,
            library,
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
        let (slot, info) = crate::discover::find_token(self, uri)?;
        let mut tokens = lock(&self.tokens);
        if let Some(t) = tokens.get(&slot.id()) {
            return Ok(Arc::clone(t));
        }
        let token = Arc::new(Token::open(self, uri, slot, info, pool_size)?);
        tokens.insert(slot.id(), Arc::clone(&token));
        Ok(token)
    }

    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }

    pub(crate) fn raw(&self) -> &RawModule {
        &self.raw
    }

    pub(crate) fn pkcs11(&self) -> &Pkcs11 {
        &self.pkcs11
    }

    pub(crate) fn library(&self) -> &Result<LibraryInfo, String> {
        &self.library
    }
}

#[derive(Debug, Default)]
struct LoginState {
    logged_in: bool,
    /// This process called `C_Login` successfully (so it logs out at shutdown).
    we_logged_in: bool,
    /// The PIN the token accepted, kept to log in again after a logout.
    accepted: Option<Pin>,
    /// Fingerprints of PINs the token rejected in this process: never offered again.
    rejected: Vec<[u8; 32]>,
    attempts: u64,
}

/// An open token: its slot, the keeper session, login state and the session pool.
#[derive(Debug)]
pub(crate) struct Token {
    module: Arc<Module>,
    label: String,
    /// Module path, label and serial: what rejected PINs are remembered for.
    identity: String,
    /// The token is a TPM behind tpm2-pkcs11: wrong PINs count towards the TPM's
    /// dictionary-attack lockout, and there is no SO unlock.
    tpm_backed: bool,
    slot: Slot,
    /// `None` after [`shutdown`].
    keeper: Mutex<Option<Session>>,
    login: Mutex<LoginState>,
    login_required: bool,
    /// Raw `CK_MECHANISM_TYPE`s: vendor ones have no cryptoki name.
    mechanisms: Vec<cryptoki_sys::CK_MECHANISM_TYPE>,
    pool: Arc<SessionPool>,
}

/// The error a call on a token closed by [`shutdown`] gets.
fn finalized() -> CkError {
    CkError::Pkcs11(RvError::CryptokiNotInitialized, Function::OpenSession)
}

impl Token {
    fn open(
        module: &Arc<Module>,
        uri: &Pkcs11Uri,
        slot: Slot,
        info: TokenInfo,
        pool_size: usize,
    ) -> Result<Token, Pkcs11Error> {
        let shown = uri.to_string();
        let ck = |operation: &'static str| {
            let uri = shown.clone();
            move |source| Pkcs11Error::Pkcs11 {
                uri,
                operation,
                source,
            }
        };
        // One C_GetMechanismList: asking mechanism by mechanism makes some modules
        // (tpm2-pkcs11) log an error for each one they lack.
        let offered = module
            .raw
            .mechanisms(slot)
            .map_err(ck("C_GetMechanismList"))?;
        let mechanisms = offered;
        // Leave the token room for other applications' sessions.
        let pool_size = match info.max_sessions {
            Some(max) => pool_size.min((max as usize).saturating_sub(1)),
            None => pool_size,
        };
        let keeper = module
            .pkcs11
            .open_rw_session(slot)
            .map_err(ck("C_OpenSession"))?;
        let login_required = info.login_required();
        let library = module.library.as_ref().ok();
        let tpm_backed = library.is_some_and(|l| {
            l.manufacturer.contains("tpm2-software") || l.description.contains("TPM2")
        }) || info.model.contains("TPM");
        tracing::debug!(token = %info.label, slot = slot.id(), pool_size, tpm_backed, "PKCS#11 token opened");
        Ok(Token {
            module: Arc::clone(module),
            identity: format!("{}|{}|{}", module.path.display(), info.label, info.serial),
            label: info.label,
            tpm_backed,
            slot,
            keeper: Mutex::new(Some(keeper)),
            login: Mutex::new(LoginState {
                logged_in: !login_required,
                ..LoginState::default()
            }),
            login_required,
            mechanisms,
            pool: Arc::new(SessionPool::new(module.pkcs11.clone(), slot, pool_size)),
        })
    }

    /// Closes the pool's sessions and the keeper, logging out first if this process logged
    /// in; returns (sessions closed, logged out).
    fn close(&self) -> (usize, bool) {
        let mut closed = self.pool.close_idle();
        let mut logged_out = false;
        let mut state = lock(&self.login);
        if let Some(keeper) = lock(&self.keeper).take() {
            if state.we_logged_in {
                match keeper.logout() {
                    Ok(()) | Err(CkError::Pkcs11(RvError::UserNotLoggedIn, _)) => logged_out = true,
                    Err(e) => tracing::warn!(token = %self.label, "C_Logout failed: {e}"),
                }
            }
            match keeper.close() {
                Ok(()) => closed += 1,
                Err(e) => tracing::warn!(token = %self.label, "C_CloseSession failed: {e}"),
            }
        }
        state.logged_in = false;
        state.we_logged_in = false;
        (closed, logged_out)
    }

    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    pub(crate) fn has_mechanism(&self, m: MechanismType) -> bool {
        self.mechanisms.contains(&*m)
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
        let Some(session) = keeper.as_ref() else {
            return Err(finalized());
        };
        match f(session) {
            Err(e) if session_gone(&e) => {
                tracing::info!(token = %self.label, "PKCS#11 session was closed; reopening");
                let fresh = self.module.pkcs11.open_rw_session(self.slot)?;
                // The other sessions went with it; the next operation that finds itself
                // logged out logs in again (`relogin`).
                self.pool.discard_idle();
                let result = f(&fresh);
                *keeper = Some(fresh);
                result
            }
            other => other,
        }
    }

    /// Logs in with the PIN `uri` names unless already logged in (blocking). Each PIN is
    /// offered to the token at most once: a rejected PIN is remembered (in this process,
    /// and in `memory` across runs) and refused here until its source changes.
    pub(crate) fn ensure_login(
        &self,
        uri: &Pkcs11Uri,
        memory: Option<&PinMemory>,
    ) -> Result<(), Pkcs11Error> {
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
                "the PIN is written in the key reference (pin-value); certfleet never stores \
                 it, so stored renewals and batches cannot use this reference: prefer \
                 pin-source=file:… or pin-source=env:…"
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
        let remembered = memory.zip(uri.pin.as_ref());
        self.login_locked(&mut state, pin, remembered, &shown)
    }

    fn memory_error(&self, shown: &str, memory: &PinMemory, detail: String) -> Pkcs11Error {
        Pkcs11Error::PinMemory {
            uri: shown.to_owned(),
            dir: memory.dir().to_owned(),
            detail,
        }
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
        self.login_locked(&mut state, pin, None, shown)
    }

    fn login_locked(
        &self,
        state: &mut LoginState,
        pin: Option<Pin>,
        remembered: Option<(&PinMemory, &PinSource)>,
        shown: &str,
    ) -> Result<(), Pkcs11Error> {
        let uri = || shown.to_owned();
        let tpm = self.tpm_backed;
        let info = self
            .module
            .raw
            .token_info(self.slot)
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
        let rejected_before = match remembered {
            Some((memory, source)) => memory
                .is_rejected(&self.identity, source, &pin)
                .map_err(|detail| self.memory_error(shown, memory, detail))?,
            None => false,
        };
        if rejected_before || state.rejected.contains(&pin.fingerprint()) {
            return Err(Pkcs11Error::PinIncorrect {
                uri: uri(),
                remembered: rejected_before,
            });
        }
        if info.user_pin_locked() {
            return Err(Pkcs11Error::PinLocked { uri: uri(), tpm });
        }
        if info.user_pin_final_try() {
            return Err(Pkcs11Error::PinFinalTry { uri: uri() });
        }
        state.attempts += 1;
        let result = self.with_keeper(|s| s.login(UserType::User, Some(pin.secret())));
        let remember = |state: &mut LoginState| -> Result<(), Pkcs11Error> {
            state.rejected.push(pin.fingerprint());
            if let Some((memory, source)) = remembered {
                memory
                    .remember(&self.identity, source, &pin)
                    .map_err(|detail| self.memory_error(shown, memory, detail))?;
            }
            Ok(())
        };
        match result {
            Ok(()) => {
                tracing::debug!(token = %self.label, "logged in to the PKCS#11 token");
                state.logged_in = true;
                state.we_logged_in = true;
                state.accepted = Some(pin);
                Ok(())
            }
            // Another application of this process (or a shared login) got there first.
            Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
                state.logged_in = true;
                state.accepted = Some(pin);
                Ok(())
            }
            Err(CkError::Pkcs11(
                RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange,
                _,
            )) => {
                remember(state)?;
                Err(Pkcs11Error::PinIncorrect {
                    uri: uri(),
                    remembered: false,
                })
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
                remember(state)?;
                Err(Pkcs11Error::PinLocked { uri: uri(), tpm })
            }
            Err(source) => Err(Pkcs11Error::Pkcs11 {
                uri: uri(),
                operation: "C_Login",
                source,
            }),
        }
    }
}
