//! The file backend: private keys in PEM files (`file:/abs/path.pem`).
//!
//! Reads PKCS#8 (`PRIVATE KEY`: P-256, P-384, RSA, Ed25519), SEC1 (`EC PRIVATE KEY`) and
//! PKCS#1 (`RSA PRIVATE KEY`); writes PKCS#8. Generated files are mode 0600 in directories
//! created 0700, written atomically, and never overwrite an existing file.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use der::Encode;
use der::pem::LineEnding;
use der::zeroize::Zeroizing;
use p256::elliptic_curve::pkcs8::AssociatedOid;
use p256::elliptic_curve::sec1::{FromEncodedPoint, ModulusSize, ToEncodedPoint};
use p256::elliptic_curve::{CurveArithmetic, PublicKey, SecretKey};
use p256::pkcs8::EncodePublicKey;
use pkcs8::EncodePrivateKey;
use rand_core::OsRng;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair,
    EcdsaSigningAlgorithm, RSA_PKCS1_SHA256, RsaKeyPair,
};

use crate::fs;
use crate::{Jwk, KeyAlgorithm, KeyBackend, KeyError, KeyRef, SigningKey};

mod pem;

/// Key files larger than this are certainly not a single PEM private key.
const MAX_KEY_FILE_BYTES: u64 = 1 << 20;

/// A private key loaded from (or generated into) a PEM file.
pub struct FileKey {
    key_ref: KeyRef,
    algorithm: KeyAlgorithm,
    jwk: Jwk,
    spki: Vec<u8>,
    signer: Signer,
}

enum Signer {
    /// P-256 and P-384 sign through ring: its assembly implementations are roughly ten times
    /// faster than the portable RustCrypto arithmetic, which showed up as most of a
    /// certfleet process's CPU time per certificate. RustCrypto still parses the keys.
    Ecdsa(EcdsaKeyPair),
    Ed25519(ed25519_dalek::SigningKey),
    /// RSA signs through ring, not the `rsa` crate: ring's private-key operation is
    /// constant-time and blinded, while `rsa` 0.9 is affected by the Marvin timing attack
    /// (RUSTSEC-2023-0071). `rsa` is only used to generate keys.
    Rsa(Arc<RsaKeyPair>),
}

impl FileKey {
    /// Generates a new key of `alg` and writes it to `path` as PKCS#8 PEM (mode 0600,
    /// atomically, missing parent directories created 0700).
    ///
    /// Fails with [`KeyError::AlreadyExists`] rather than overwrite an existing file. RSA
    /// generation is slow (seconds for 4096 bits); call it from `spawn_blocking` in async
    /// code.
    pub fn generate(alg: KeyAlgorithm, path: &Path) -> Result<FileKey, KeyError> {
        // Checked up front so a doomed 4096-bit generation is not started; the write
        // itself re-checks atomically.
        if path.symlink_metadata().is_ok() {
            return Err(KeyError::AlreadyExists {
                path: path.to_owned(),
            });
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent, 0o700).map_err(|source| KeyError::Io {
                path: parent.to_owned(),
                source,
            })?;
        }
        let pem = generate_pem(alg)?;
        fs::write_atomic_new(path, pem.as_bytes(), 0o600).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                KeyError::AlreadyExists {
                    path: path.to_owned(),
                }
            } else {
                KeyError::Io {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        FileKey::from_pem(path, pem.as_bytes())
    }

    /// Loads the private key in the PEM file at `path`.
    ///
    /// Logs a warning (it does not fail) when the file is readable by group or others.
    pub fn load(path: &Path) -> Result<FileKey, KeyError> {
        let io_err = |source| KeyError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        if meta.len() > MAX_KEY_FILE_BYTES {
            return Err(KeyError::Parse {
                path: path.to_owned(),
                detail: format!("file of {} bytes is too large to be a key", meta.len()),
            });
        }
        if let Some(mode) = loose_mode(&meta) {
            tracing::warn!(
                path = %path.display(),
                mode = format_args!("{mode:03o}"),
                "private key file is accessible by group or others; run `chmod 600 {}`",
                path.display()
            );
        }
        let mut bytes = Zeroizing::new(Vec::with_capacity(meta.len() as usize));
        file.read_to_end(&mut bytes).map_err(io_err)?;
        FileKey::from_pem(path, &bytes)
    }

    /// Builds the key from PEM text that was read from (or is about to live at) `path`.
    fn from_pem(path: &Path, bytes: &[u8]) -> Result<FileKey, KeyError> {
        let key_ref = KeyRef::file(path)?;
        let (algorithm, jwk, spki, signer) = match pem::parse_private_key(path, bytes)? {
            pem::Parsed::P256(k, point) => ec_key(path, &k, point.as_deref(), &P256)?,
            pem::Parsed::P384(k, point) => ec_key(path, &k, point.as_deref(), &P384)?,
            pem::Parsed::Ed25519(key) => {
                let public = key.verifying_key();
                let spki = spki_der(path, public.to_public_key_der())?;
                let jwk = Jwk::okp("Ed25519", public.as_bytes());
                (KeyAlgorithm::Ed25519, jwk, spki, Signer::Ed25519(key))
            }
            pem::Parsed::Rsa { pkcs1, bits, n, e } => {
                let pair = RsaKeyPair::from_der(&pkcs1).map_err(|e| KeyError::Unsupported {
                    path: path.to_owned(),
                    detail: format!("RSA key rejected: {e}"),
                })?;
                let jwk = Jwk::rsa(&n, &e);
                let spki = rsa_spki(pair.public().as_ref()).map_err(|e| KeyError::Parse {
                    path: path.to_owned(),
                    detail: format!("cannot encode the RSA public key: {e}"),
                })?;
                (rsa_algorithm(bits), jwk, spki, Signer::Rsa(Arc::new(pair)))
            }
        };
        Ok(FileKey {
            key_ref,
            algorithm,
            jwk,
            spki,
            signer,
        })
    }
}

/// The file's permission bits if group or others have any access to it, else `None`
/// (also `None` when the file cannot be inspected, or on non-Unix systems).
pub fn loose_permissions(path: &Path) -> Option<u32> {
    std::fs::metadata(path).ok().as_ref().and_then(loose_mode)
}

#[cfg(unix)]
fn loose_mode(meta: &std::fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

#[cfg(not(unix))]
fn loose_mode(_meta: &std::fs::Metadata) -> Option<u32> {
    None
}

/// Odd RSA sizes (e.g. 2560 bits) report the largest listed size they reach; the JWS
/// algorithm is RS256 either way.
fn rsa_algorithm(bits: usize) -> KeyAlgorithm {
    match bits {
        ..3072 => KeyAlgorithm::Rsa2048,
        3072..4096 => KeyAlgorithm::Rsa3072,
        _ => KeyAlgorithm::Rsa4096,
    }
}

fn generate_pem(alg: KeyAlgorithm) -> Result<Zeroizing<String>, KeyError> {
    let failed = |detail: String| KeyError::Generate {
        algorithm: alg.to_string(),
        detail,
    };
    let pem = match alg {
        // ring's PKCS#8 carries the public point, so loading needs no scalar multiplication.
        KeyAlgorithm::EcP256 => return ec_pkcs8_pem(alg, &ECDSA_P256_SHA256_FIXED_SIGNING),
        KeyAlgorithm::EcP384 => return ec_pkcs8_pem(alg, &ECDSA_P384_SHA384_FIXED_SIGNING),
        KeyAlgorithm::Ed25519 => {
            // PKCS#8 v1 without the optional public key: what `openssl genpkey` writes and
            // every reader accepts.
            let key = ed25519_dalek::SigningKey::generate(&mut OsRng);
            ed25519_dalek::pkcs8::KeypairBytes {
                secret_key: key.to_bytes(),
                public_key: None,
            }
            .to_pkcs8_pem(LineEnding::LF)
        }
        KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
            let bits = match alg {
                KeyAlgorithm::Rsa2048 => 2048,
                KeyAlgorithm::Rsa3072 => 3072,
                _ => 4096,
            };
            let key = rsa::RsaPrivateKey::new(&mut OsRng, bits)
                .map_err(|e| failed(format!("RSA key generation failed: {e}")))?;
            key.to_pkcs8_pem(LineEnding::LF)
        }
    };
    pem.map_err(|e| failed(format!("PKCS#8 encoding failed: {e}")))
}

/// A curve as a file key uses it: the algorithm, the JWK `crv`, ring's signing algorithm.
struct Curve(KeyAlgorithm, &'static str, &'static EcdsaSigningAlgorithm);

const P256: Curve = Curve(
    KeyAlgorithm::EcP256,
    "P-256",
    &ECDSA_P256_SHA256_FIXED_SIGNING,
);
const P384: Curve = Curve(
    KeyAlgorithm::EcP384,
    "P-384",
    &ECDSA_P384_SHA384_FIXED_SIGNING,
);

/// The parts of an EC key on curve `C`: the file's public point if it has one (ring checks
/// it against the scalar), else the one derived.
fn ec_key<C>(
    path: &Path,
    secret: &SecretKey<C>,
    point: Option<&[u8]>,
    &Curve(algorithm, crv, signing): &Curve,
) -> Result<(KeyAlgorithm, Jwk, Vec<u8>, Signer), KeyError>
where
    C: CurveArithmetic + AssociatedOid,
    C::AffinePoint: FromEncodedPoint<C> + ToEncodedPoint<C>,
    C::FieldBytesSize: ModulusSize,
{
    let public = match point.map(PublicKey::<C>::from_sec1_bytes) {
        Some(Ok(public)) => public,
        _ => secret.public_key(),
    };
    let point = public.to_encoded_point(false);
    let (x, y) = ec_coordinates(path, point.x(), point.y())?;
    let spki = spki_der(path, public.to_public_key_der())?;
    let signer = ecdsa_signer(path, signing, &secret.to_bytes(), point.as_bytes())?;
    Ok((algorithm, Jwk::ec(crv, x, y), spki, signer))
}

fn ec_coordinates<'a, T: AsRef<[u8]>>(
    path: &Path,
    x: Option<&'a T>,
    y: Option<&'a T>,
) -> Result<(&'a [u8], &'a [u8]), KeyError> {
    match (x, y) {
        (Some(x), Some(y)) => Ok((x.as_ref(), y.as_ref())),
        // An uncompressed encoding of a valid public key always has both coordinates.
        _ => Err(KeyError::Parse {
            path: path.to_owned(),
            detail: "EC public key is the point at infinity".to_owned(),
        }),
    }
}

fn spki_der(path: &Path, der: Result<der::Document, spki::Error>) -> Result<Vec<u8>, KeyError> {
    der.map(|d| d.as_bytes().to_vec())
        .map_err(|e| KeyError::Parse {
            path: path.to_owned(),
            detail: format!("cannot encode the public key: {e}"),
        })
}

/// SubjectPublicKeyInfo for an RSA `RSAPublicKey` DER (rsaEncryption, NULL parameters).
fn rsa_spki(rsa_public_key_der: &[u8]) -> der::Result<Vec<u8>> {
    spki::SubjectPublicKeyInfoOwned {
        algorithm: spki::AlgorithmIdentifierOwned {
            oid: const_oid::db::rfc5912::RSA_ENCRYPTION,
            parameters: Some(der::Any::null()),
        },
        subject_public_key: der::asn1::BitString::from_bytes(rsa_public_key_der)?,
    }
    .to_der()
}

impl fmt::Debug for FileKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the private key.
        f.debug_struct("FileKey")
            .field("key_ref", &self.key_ref)
            .field("algorithm", &self.algorithm)
            .field("thumbprint", &self.jwk.thumbprint())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl SigningKey for FileKey {
    fn key_ref(&self) -> &KeyRef {
        &self.key_ref
    }

    fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    fn public_jwk(&self) -> &Jwk {
        &self.jwk
    }

    fn public_key_der(&self) -> &[u8] {
        &self.spki
    }

    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        use p256::ecdsa::signature::Signer as _;
        let failed = |detail: String| KeyError::Sign {
            key_ref: self.key_ref.to_string(),
            detail,
        };
        // ECDSA and Ed25519 take tens of microseconds: sign inline. An RSA private-key
        // operation takes ~1 ms (2048) to ~10 ms (4096), long enough to stall other tasks
        // on this runtime worker when many orders sign at once, so it runs on the
        // blocking pool (inline when there is no Tokio runtime).
        match &self.signer {
            // The FIXED algorithms return r || s, exactly the JWS encoding.
            Signer::Ecdsa(pair) => pair
                .sign(&ring::rand::SystemRandom::new(), message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| failed("ECDSA signing failed".to_owned())),
            Signer::Ed25519(key) => key
                .try_sign(message)
                .map(|s| s.to_bytes().to_vec())
                .map_err(|e| failed(e.to_string())),
            Signer::Rsa(pair) => {
                let pair = Arc::clone(pair);
                let message = message.to_vec();
                let sign = move || rsa_sign(&pair, &message);
                match tokio::runtime::Handle::try_current() {
                    Ok(handle) => handle
                        .spawn_blocking(sign)
                        .await
                        .map_err(|e| failed(format!("signing task failed: {e}")))?,
                    Err(_) => sign(),
                }
                .map_err(|e| failed(format!("RSA signing failed: {e}")))
            }
        }
    }
}

/// A new EC key as PKCS#8 PEM, generated by ring.
fn ec_pkcs8_pem(
    alg: KeyAlgorithm,
    signing: &'static ring::signature::EcdsaSigningAlgorithm,
) -> Result<Zeroizing<String>, KeyError> {
    let failed = |detail: String| KeyError::Generate {
        algorithm: alg.to_string(),
        detail,
    };
    let doc = EcdsaKeyPair::generate_pkcs8(signing, &ring::rand::SystemRandom::new())
        .map_err(|e| failed(format!("EC key generation failed: {e}")))?;
    der::pem::encode_string("PRIVATE KEY", LineEnding::LF, doc.as_ref())
        .map(Zeroizing::new)
        .map_err(|e| failed(format!("PEM encoding failed: {e}")))
}

fn ecdsa_signer(
    path: &Path,
    alg: &'static ring::signature::EcdsaSigningAlgorithm,
    scalar: &[u8],
    uncompressed_point: &[u8],
) -> Result<Signer, KeyError> {
    EcdsaKeyPair::from_private_key_and_public_key(
        alg,
        scalar,
        uncompressed_point,
        &ring::rand::SystemRandom::new(),
    )
    .map(Signer::Ecdsa)
    .map_err(|e| KeyError::Parse {
        path: path.to_owned(),
        detail: format!("EC key rejected: {e}"),
    })
}

fn rsa_sign(pair: &RsaKeyPair, message: &[u8]) -> Result<Vec<u8>, ring::error::Unspecified> {
    let mut signature = vec![0; pair.public().modulus_len()];
    let rng = ring::rand::SystemRandom::new();
    pair.sign(&RSA_PKCS1_SHA256, &rng, message, &mut signature)?;
    Ok(signature)
}

/// Loads `file:` references.
#[derive(Clone, Copy, Debug, Default)]
pub struct FileBackend;

impl FileBackend {
    pub fn new() -> FileBackend {
        FileBackend
    }
}

#[async_trait]
impl KeyBackend for FileBackend {
    fn scheme(&self) -> &'static str {
        "file"
    }

    async fn load(&self, key_ref: &KeyRef) -> Result<Arc<dyn SigningKey>, KeyError> {
        let path: PathBuf = key_ref.file_path().ok_or_else(|| KeyError::InvalidRef {
            value: key_ref.to_string(),
            expected: "file:/path/key.pem",
        })?;
        // Reading a small file and validating an RSA key block briefly: keep it off the
        // async workers.
        let load = move || FileKey::load(&path);
        let key = match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle
                .spawn_blocking(load)
                .await
                .map_err(|e| KeyError::Backend {
                    key_ref: key_ref.to_string(),
                    detail: format!("loading task failed: {e}"),
                })??,
            Err(_) => load()?,
        };
        Ok(Arc::new(key))
    }
}

#[cfg(test)]
mod tests;
