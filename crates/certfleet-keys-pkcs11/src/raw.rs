//! Library, slot and token information read straight from the module's function list.
//!
//! Why not cryptoki's `get_token_info`: cryptoki 0.12 parses every field strictly, and
//! openCryptoki's soft token reports `utcTime` as blanks + `hh:mm:ss`
//! (`"        10:09:17"`), which cryptoki turns into an error for the token — and, through
//! `get_slots_with_initialized_token`, for the whole slot list (one such module behind
//! p11-kit's proxy hides every other token). pkcs11-tool and p11tool cope, so must we: the
//! structures are read raw here and only the fields certfleet uses are decoded, leniently
//! (text trimmed of blanks and NULs, the clock ignored). The mechanism list is read raw
//! too: cryptoki logs an error for every vendor mechanism it does not know.
//!
//! The module is opened a second time with `dlopen` (same handle, reference-counted). Most
//! modules hand out one static function list, so these calls reach the instance cryptoki
//! initialized (our `C_Initialize` answers `CKR_CRYPTOKI_ALREADY_INITIALIZED`). p11-kit's
//! proxy makes a new instance per `C_GetFunctionList`: ours is then initialized here and
//! finalized by [`RawModule::finalize`]; its slot ids are checked against cryptoki's.

use std::path::Path;
use std::ptr;

use cryptoki::context::Function;
use cryptoki::error::{Error as CkError, Rv};
use cryptoki::slot::Slot;
use cryptoki_sys::{
    CK_FLAGS, CK_FUNCTION_LIST, CK_INFO, CK_MECHANISM_TYPE, CK_SLOT_INFO, CK_TOKEN_INFO, CK_ULONG,
    CKF_LOGIN_REQUIRED, CKF_TOKEN_INITIALIZED, CKF_USER_PIN_FINAL_TRY, CKF_USER_PIN_LOCKED,
};

/// Most mechanisms read from one slot: far above any real token.
const MAX_MECHANISMS: CK_ULONG = 4096;

/// A module's `CK_INFO`, text fields trimmed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LibraryInfo {
    pub manufacturer: String,
    pub description: String,
    /// `major.minor`, as RFC 7512 writes `library-version`.
    pub version: (u8, u8),
}

/// A slot's `CK_SLOT_INFO`, text fields trimmed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SlotInfo {
    pub description: String,
    pub manufacturer: String,
}

/// The parts of `CK_TOKEN_INFO` certfleet uses, text fields trimmed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TokenInfo {
    pub label: String,
    pub manufacturer: String,
    pub model: String,
    pub serial: String,
    pub flags: CK_FLAGS,
    /// `None` when the token sets no limit (`CK_UNAVAILABLE_INFORMATION`,
    /// `CK_EFFECTIVELY_INFINITE`).
    pub max_sessions: Option<u64>,
}

impl TokenInfo {
    pub(crate) fn initialized(&self) -> bool {
        self.flags & CKF_TOKEN_INITIALIZED != 0
    }
    pub(crate) fn login_required(&self) -> bool {
        self.flags & CKF_LOGIN_REQUIRED != 0
    }
    pub(crate) fn user_pin_locked(&self) -> bool {
        self.flags & CKF_USER_PIN_LOCKED != 0
    }
    pub(crate) fn user_pin_final_try(&self) -> bool {
        self.flags & CKF_USER_PIN_FINAL_TRY != 0
    }
}

/// The module's own function list.
pub(crate) struct RawModule {
    // Keeps the library mapped while `list` is used.
    _lib: cryptoki_sys::Pkcs11,
    list: *const CK_FUNCTION_LIST,
    /// Our `C_Initialize` made a separate instance (p11-kit's proxy): finalize it too.
    own_instance: bool,
}

// SAFETY: the function list is a static table inside the module, never written after
// C_GetFunctionList; the module was initialized with CKF_OS_LOCKING_OK, so its functions
// may be called from any thread.
unsafe impl Send for RawModule {}
unsafe impl Sync for RawModule {}

impl std::fmt::Debug for RawModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawModule")
    }
}

fn check(rv: cryptoki_sys::CK_RV, function: Function) -> Result<(), CkError> {
    Rv::from(rv).into_result(function)
}

impl RawModule {
    /// Opens `path` (already loaded by cryptoki) and fetches its function list.
    pub(crate) fn open(path: &Path) -> Result<RawModule, String> {
        // SAFETY: loading a PKCS#11 module runs its initializers, as cryptoki's own load of
        // the same file already did.
        let lib = unsafe { cryptoki_sys::Pkcs11::new(path) }.map_err(|e| e.to_string())?;
        let mut list: *mut CK_FUNCTION_LIST = ptr::null_mut();
        // SAFETY: C_GetFunctionList writes one pointer.
        let rv = unsafe { lib.C_GetFunctionList(&mut list) };
        check(rv, Function::GetFunctionList).map_err(|e| format!("C_GetFunctionList: {e}"))?;
        if list.is_null() {
            return Err("C_GetFunctionList returned no function list".to_owned());
        }
        // SAFETY: checked non-null; the table lives as long as the library.
        let initialize = unsafe { (*list).C_Initialize }
            .ok_or_else(|| "the module has no C_Initialize".to_owned())?;
        let mut args = cryptoki_sys::CK_C_INITIALIZE_ARGS {
            CreateMutex: None,
            DestroyMutex: None,
            LockMutex: None,
            UnlockMutex: None,
            flags: cryptoki_sys::CKF_OS_LOCKING_OK,
            pReserved: ptr::null_mut(),
        };
        // SAFETY: the arguments live across the call.
        let rv =
            unsafe { initialize((&mut args as *mut cryptoki_sys::CK_C_INITIALIZE_ARGS).cast()) };
        let own_instance = match rv {
            cryptoki_sys::CKR_OK => true,
            cryptoki_sys::CKR_CRYPTOKI_ALREADY_INITIALIZED => false,
            other => {
                let detail = check(other, Function::Initialize)
                    .err()
                    .map_or_else(|| format!("CK_RV {other:#x}"), |e| e.to_string());
                return Err(format!("C_Initialize: {detail}"));
            }
        };
        Ok(RawModule {
            _lib: lib,
            list,
            own_instance,
        })
    }

    /// `C_Finalize` of our own instance, if we made one (blocking).
    pub(crate) fn finalize(&self) -> Result<(), CkError> {
        if !self.own_instance {
            return Ok(());
        }
        let f = self
            .functions()
            .C_Finalize
            .ok_or(CkError::NullFunctionPointer)?;
        // SAFETY: a NULL reserved pointer, as PKCS#11 requires.
        check(unsafe { f(ptr::null_mut()) }, Function::Finalize)
    }

    fn functions(&self) -> &CK_FUNCTION_LIST {
        // SAFETY: checked non-null in `open`; the table lives as long as the library.
        unsafe { &*self.list }
    }

    /// `C_GetInfo`.
    pub(crate) fn library_info(&self) -> Result<LibraryInfo, CkError> {
        let f = self
            .functions()
            .C_GetInfo
            .ok_or(CkError::NullFunctionPointer)?;
        let mut info = CK_INFO::default();
        // SAFETY: the module fills the structure we own.
        check(unsafe { f(&mut info) }, Function::GetInfo)?;
        Ok(LibraryInfo {
            manufacturer: text(&info.manufacturerID),
            description: text(&info.libraryDescription),
            version: (info.libraryVersion.major, info.libraryVersion.minor),
        })
    }

    /// `C_GetSlotList(tokenPresent = TRUE)`.
    pub(crate) fn slots_with_token(&self) -> Result<Vec<Slot>, CkError> {
        let f = self
            .functions()
            .C_GetSlotList
            .ok_or(CkError::NullFunctionPointer)?;
        let mut count: CK_ULONG = 0;
        // SAFETY: a NULL list asks for the count.
        check(
            unsafe { f(cryptoki_sys::CK_TRUE, ptr::null_mut(), &mut count) },
            Function::GetSlotList,
        )?;
        let mut ids = vec![0; count as usize];
        // SAFETY: `ids` has room for `count` ids.
        check(
            unsafe { f(cryptoki_sys::CK_TRUE, ids.as_mut_ptr(), &mut count) },
            Function::GetSlotList,
        )?;
        ids.truncate(count as usize);
        ids.into_iter().map(Slot::try_from).collect()
    }

    /// `C_GetSlotInfo`.
    pub(crate) fn slot_info(&self, slot: Slot) -> Result<SlotInfo, CkError> {
        let f = self
            .functions()
            .C_GetSlotInfo
            .ok_or(CkError::NullFunctionPointer)?;
        let mut info = CK_SLOT_INFO::default();
        // SAFETY: the module fills the structure we own.
        check(unsafe { f(slot.id(), &mut info) }, Function::GetSlotInfo)?;
        Ok(SlotInfo {
            description: text(&info.slotDescription),
            manufacturer: text(&info.manufacturerID),
        })
    }

    /// `C_GetTokenInfo`, the clock and counters not decoded.
    pub(crate) fn token_info(&self, slot: Slot) -> Result<TokenInfo, CkError> {
        let f = self
            .functions()
            .C_GetTokenInfo
            .ok_or(CkError::NullFunctionPointer)?;
        let mut info = CK_TOKEN_INFO::default();
        // SAFETY: the module fills the structure we own.
        check(unsafe { f(slot.id(), &mut info) }, Function::GetTokenInfo)?;
        Ok(decode_token_info(&info))
    }

    /// `C_GetMechanismList`, once (the raw numbers).
    pub(crate) fn mechanisms(&self, slot: Slot) -> Result<Vec<CK_MECHANISM_TYPE>, CkError> {
        let f = self
            .functions()
            .C_GetMechanismList
            .ok_or(CkError::NullFunctionPointer)?;
        let mut count: CK_ULONG = 0;
        // SAFETY: a NULL list asks for the count.
        check(
            unsafe { f(slot.id(), ptr::null_mut(), &mut count) },
            Function::GetMechanismList,
        )?;
        let count = count.min(MAX_MECHANISMS);
        let mut list = vec![0; count as usize];
        let mut got = count;
        // SAFETY: `list` has room for `count` entries and `got` says so.
        check(
            unsafe { f(slot.id(), list.as_mut_ptr(), &mut got) },
            Function::GetMechanismList,
        )?;
        list.truncate(got.min(count) as usize);
        Ok(list)
    }
}

pub(crate) fn decode_token_info(info: &CK_TOKEN_INFO) -> TokenInfo {
    let limit = |n: CK_ULONG| {
        (n != cryptoki_sys::CK_UNAVAILABLE_INFORMATION
            && n != cryptoki_sys::CK_EFFECTIVELY_INFINITE)
            .then_some(n)
    };
    TokenInfo {
        label: text(&info.label),
        manufacturer: text(&info.manufacturerID),
        model: text(&info.model),
        serial: text(&info.serialNumber),
        flags: info.flags,
        max_sessions: limit(info.ulMaxSessionCount),
    }
}

/// A fixed-size PKCS#11 text field: blank-padded by the standard, NUL-padded by some
/// modules (tpm2-pkcs11's model), not always UTF-8.
pub(crate) fn text(field: &[u8]) -> String {
    trim_field(&String::from_utf8_lossy(field)).to_owned()
}

/// Trims blanks and NULs at both ends (how RFC 7512 values are compared with token fields).
pub(crate) fn trim_field(value: &str) -> &str {
    value.trim_matches(|c: char| c == ' ' || c == '\0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opencryptoki_token_info_with_a_blank_clock_decodes() {
        let mut info = CK_TOKEN_INFO::default();
        info.label.copy_from_slice(&pad::<32>(b"ock", b' '));
        info.manufacturerID
            .copy_from_slice(&pad::<32>(b"IBM", b' '));
        info.model.copy_from_slice(&pad::<16>(b"IBM SoftTok", b' '));
        info.serialNumber.copy_from_slice(&pad::<16>(b"123", b' '));
        info.utcTime.copy_from_slice(b"        10:09:17");
        info.flags = CKF_TOKEN_INITIALIZED | CKF_LOGIN_REQUIRED | cryptoki_sys::CKF_CLOCK_ON_TOKEN;
        info.ulMaxSessionCount = cryptoki_sys::CK_EFFECTIVELY_INFINITE;
        let decoded = decode_token_info(&info);
        assert_eq!(decoded.label, "ock");
        assert_eq!(decoded.model, "IBM SoftTok");
        assert_eq!(decoded.serial, "123");
        assert!(decoded.initialized() && decoded.login_required());
        assert!(!decoded.user_pin_locked() && !decoded.user_pin_final_try());
        assert_eq!(decoded.max_sessions, None);
        // cryptoki's strict parser refuses the same structure: the reason this module exists.
        assert!(cryptoki::slot::TokenInfo::try_from(info).is_err());
    }

    #[test]
    fn nul_padded_fields_are_trimmed() {
        assert_eq!(text(&pad::<16>(b"SW   TPM", 0)), "SW   TPM");
        assert_eq!(text(b"  x \0\0"), "x");
        assert_eq!(trim_field("\0tok \0"), "tok");
    }

    fn pad<const N: usize>(value: &[u8], fill: u8) -> [u8; N] {
        let mut out = [fill; N];
        out[..value.len()].copy_from_slice(value);
        out
    }
}
