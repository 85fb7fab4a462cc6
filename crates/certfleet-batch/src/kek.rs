//! The fleet's key-encryption key (KEK): generated certificate keys are stored in a
//! server-backed store sealed with AES-256-GCM (ring), so the node that finalizes or deploys
//! a certificate does not need the node that generated its key.
//!
//! The KEK text (read by the CLI from a 0600 file) holds one or more keys, one per line, 64
//! hexadecimal characters each (32 bytes); `#` lines are comments. The **first** key seals;
//! every listed key opens. A sealed key names the KEK that sealed it by an 8-byte id (the
//! first bytes of SHA-256 of the key), so rotation is: put the new key first on every node,
//! keep the old one listed until every stored key sealed with it has been replaced (renewed),
//! then remove it (docs/scale-out.md).
//!
//! Sealed format: `CFK1` ‖ KEK id (8) ‖ nonce (12, random) ‖ ciphertext ‖ tag (16). The
//! associated data binds a sealed key to its job, so a row copied to another job fails to
//! open.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

use crate::store::JobId;

const MAGIC: &[u8; 4] = b"CFK1";
const ID_LEN: usize = 8;

/// Why a KEK could not be read or a key not be sealed or opened. Never holds key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KekError {
    #[error(
        "key-encryption key, line {line}: expected 64 hexadecimal characters (32 bytes), found {found} characters"
    )]
    BadLine { line: usize, found: usize },
    #[error(
        "key-encryption key: the file holds no key (expected a line of 64 hexadecimal characters)"
    )]
    Empty,
    #[error("sealed key of job {job}: not in the certfleet sealed-key format (CFK1)")]
    BadFormat { job: JobId },
    #[error(
        "sealed key of job {job}: sealed with key-encryption key {kek_id}, which this node does not hold (listed: {held})"
    )]
    UnknownKek {
        job: JobId,
        kek_id: String,
        held: String,
    },
    #[error(
        "sealed key of job {job}: authentication failed (wrong key-encryption key, or the row was altered)"
    )]
    Open { job: JobId },
    #[error("sealing a key failed (system random source)")]
    Seal,
}

/// One or more KEKs; the first seals.
pub struct Kek {
    keys: Vec<([u8; ID_LEN], LessSafeKey)>,
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kek")
            .field("ids", &self.ids())
            .finish_non_exhaustive()
    }
}

impl Kek {
    /// Parses the KEK text (see the module documentation).
    pub fn parse(text: &str) -> Result<Kek, KekError> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bytes = decode_hex(line).ok_or(KekError::BadLine {
                line: i + 1,
                found: line.chars().count(),
            })?;
            let id = kek_id(&bytes);
            let unbound = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| KekError::BadLine {
                line: i + 1,
                found: line.len(),
            })?;
            keys.push((id, LessSafeKey::new(unbound)));
        }
        if keys.is_empty() {
            return Err(KekError::Empty);
        }
        Ok(Kek { keys })
    }

    /// A new random KEK line (`certfleet batch kek-generate`).
    pub fn generate_line() -> Result<String, KekError> {
        let mut k = [0u8; 32];
        SystemRandom::new()
            .fill(&mut k)
            .map_err(|_| KekError::Seal)?;
        Ok(k.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The ids of the held keys (hex), the sealing one first.
    pub fn ids(&self) -> Vec<String> {
        self.keys.iter().map(|(id, _)| hex(id)).collect()
    }

    /// Seals `plaintext` (a PEM private key) for `job`.
    pub fn seal(&self, job: JobId, plaintext: &[u8]) -> Result<Vec<u8>, KekError> {
        let (id, key) = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| KekError::Seal)?;
        let mut buf = plaintext.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(job)),
            &mut buf,
        )
        .map_err(|_| KekError::Seal)?;
        let mut out = Vec::with_capacity(MAGIC.len() + ID_LEN + NONCE_LEN + buf.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        Ok(out)
    }

    /// Opens a key sealed for `job`.
    pub fn open(&self, job: JobId, sealed: &[u8]) -> Result<Vec<u8>, KekError> {
        let head = MAGIC.len() + ID_LEN + NONCE_LEN;
        if sealed.len() < head + 16 || &sealed[..MAGIC.len()] != MAGIC {
            return Err(KekError::BadFormat { job });
        }
        let id = &sealed[MAGIC.len()..MAGIC.len() + ID_LEN];
        let Some((_, key)) = self.keys.iter().find(|(k, _)| k == id) else {
            return Err(KekError::UnknownKek {
                job,
                kek_id: hex(id),
                held: self.ids().join(", "),
            });
        };
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&sealed[MAGIC.len() + ID_LEN..head]);
        let mut buf = sealed[head..].to_vec();
        let plain = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(job)),
                &mut buf,
            )
            .map_err(|_| KekError::Open { job })?;
        Ok(plain.to_vec())
    }
}

fn aad(job: JobId) -> Vec<u8> {
    format!("certfleet job key {}", job.0).into_bytes()
}

fn kek_id(key: &[u8]) -> [u8; ID_LEN] {
    let d = Sha256::digest(key);
    let mut id = [0u8; ID_LEN];
    id.copy_from_slice(&d[..ID_LEN]);
    id
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const B: &str = "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn sealed_keys_open_for_their_job_only() {
        let kek = Kek::parse(A).expect("must succeed");
        let sealed = kek
            .seal(JobId(7), b"-----BEGIN PRIVATE KEY-----")
            .expect("must succeed");
        assert!(
            !sealed.windows(5).any(|w| w == b"BEGIN"),
            "not in the clear"
        );
        assert_eq!(
            kek.open(JobId(7), &sealed).expect("must succeed"),
            b"-----BEGIN PRIVATE KEY-----"
        );
        assert_eq!(
            kek.open(JobId(8), &sealed),
            Err(KekError::Open { job: JobId(8) })
        );
        let mut altered = sealed.clone();
        *altered.last_mut().expect("must succeed") ^= 1;
        assert_eq!(
            kek.open(JobId(7), &altered),
            Err(KekError::Open { job: JobId(7) })
        );
    }

    #[test]
    fn rotation_seals_with_the_first_and_opens_with_any_listed() {
        let old = Kek::parse(A).expect("must succeed");
        let sealed_old = old.seal(JobId(1), b"old key").expect("must succeed");
        let rotated = Kek::parse(&format!("# new first\n{B}\n{A}\n")).expect("must succeed");
        assert_eq!(
            rotated.open(JobId(1), &sealed_old).expect("must succeed"),
            b"old key"
        );
        let sealed_new = rotated.seal(JobId(1), b"new key").expect("must succeed");
        let err = old.open(JobId(1), &sealed_new).expect_err("must fail");
        assert!(
            matches!(&err, KekError::UnknownKek { kek_id, .. } if *kek_id == rotated.ids()[0]),
            "{err}"
        );
        assert!(!err.to_string().contains(B), "no key material in errors");
    }

    #[test]
    fn bad_kek_text_is_refused_naming_the_line() {
        assert_eq!(
            Kek::parse("\n# only a comment\n").expect_err("must fail"),
            KekError::Empty
        );
        assert_eq!(
            Kek::parse(&format!("{A}\nzz")).expect_err("must fail"),
            KekError::BadLine { line: 2, found: 2 }
        );
        assert_eq!(Kek::generate_line().expect("must succeed").len(), 64);
    }
}
