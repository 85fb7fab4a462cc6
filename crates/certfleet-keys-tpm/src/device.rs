//! One owner thread per TPM: the TPM runs one command at a time and a tss-esapi `Context`
//! takes `&mut self` everywhere, so every command goes through a channel to the thread that
//! owns the context, and answers come back on a oneshot.
//!
//! Transient objects: the storage primary exists only while a key is created or loaded and
//! is flushed right after, on success and on error; loaded keys stay loaded while their
//! [`crate::TpmKey`] lives (at most [`MAX_LOADED`] at once, least recently used evicted;
//! swtpm without a resource manager has three object slots) and are flushed when it is
//! dropped and when the thread ends.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock, Weak, mpsc};
use std::thread::JoinHandle;

use tokio::sync::oneshot;
use tss_esapi::constants::CapabilityType;
use tss_esapi::constants::tss::{
    TPM2_HT_PERSISTENT, TPM2_HT_TRANSIENT, TPM2_RH_NULL, TPM2_ST_HASHCHECK,
};
use tss_esapi::handles::{KeyHandle, ObjectHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::dynamic_handles::Persistent;
use tss_esapi::interface_types::resource_handles::{Hierarchy, Provision};
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    CapabilityData, Digest, HashcheckTicket, Private, Public, Signature, SignatureScheme,
};
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;
use tss_esapi::{Context, TctiNameConf};

use crate::templates;

/// Loaded signing keys kept at once: with the primary needed while loading another key
/// that makes three transient objects, swtpm's limit.
pub(crate) const MAX_LOADED: usize = 2;

/// A TPM command that failed, before the caller names the key.
#[derive(Debug)]
pub(crate) struct Failure {
    pub operation: &'static str,
    pub detail: String,
    pub kind: FailureKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    Other,
    HandleNotFound,
    HandleInUse,
}

fn failure(operation: &'static str, e: tss_esapi::Error) -> Failure {
    let mut detail = e.to_string();
    if detail.contains("object memory") || detail.contains("OBJECT_MEMORY") {
        detail.push_str(
            " (the TPM has no free object slot: objects left loaded by another program? \
             `tpm2_flushcontext -t` frees them)",
        );
    }
    Failure {
        operation,
        detail,
        kind: FailureKind::Other,
    }
}

/// Where a key to load comes from.
#[derive(Debug, Clone)]
pub(crate) enum KeySource {
    Blob { public: Public, private: Private },
    Persistent(u32),
}

/// What a new key is kept as.
#[derive(Debug, Clone, Copy)]
pub(crate) enum NewKeyTarget {
    Blob,
    Persistent(u32),
}

pub(crate) struct Created {
    pub public: Public,
    pub private: Option<Private>,
}

type Reply<T> = oneshot::Sender<Result<T, Failure>>;

enum Request {
    Create {
        template: Public,
        target: NewKeyTarget,
        reply: Reply<Created>,
    },
    Load {
        source: KeySource,
        reply: Reply<(u64, Public)>,
    },
    Sign {
        id: u64,
        digest: Vec<u8>,
        scheme: SignatureScheme,
        reply: Reply<Signature>,
    },
    Unload {
        id: u64,
    },
    ListPersistent {
        reply: Reply<Vec<(u32, Public)>>,
    },
    CountTransient {
        reply: Reply<usize>,
    },
}

/// The handle to one TPM's owner thread; the thread ends (flushing what it loaded) when
/// the last handle is dropped.
#[derive(Debug)]
pub(crate) struct TpmDevice {
    tcti: String,
    tx: Mutex<Option<mpsc::Sender<Request>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn devices() -> &'static Mutex<HashMap<String, Weak<TpmDevice>>> {
    static DEVICES: OnceLock<Mutex<HashMap<String, Weak<TpmDevice>>>> = OnceLock::new();
    DEVICES.get_or_init(Mutex::default)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl TpmDevice {
    /// The owner thread for `tcti`, started (and connected) if none runs (blocking).
    pub(crate) fn open(tcti: &str) -> Result<Arc<TpmDevice>, String> {
        let mut all = lock(devices());
        if let Some(device) = all.get(tcti).and_then(Weak::upgrade) {
            return Ok(device);
        }
        if let Some(path) = tcti.strip_prefix("device:")
            && !std::path::Path::new(path.split(',').next().unwrap_or(path)).exists()
        {
            return Err(format!("{path} does not exist"));
        }
        let conf = TctiNameConf::from_str(tcti).map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("certfleet-tpm".to_owned())
            .spawn(move || match Context::new(conf) {
                Ok(ctx) => {
                    let _ = ready_tx.send(Ok(()));
                    Owner::new(ctx).serve(rx);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                }
            })
            .map_err(|e| format!("cannot start the TPM thread: {e}"))?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(detail)) => {
                let _ = thread.join();
                return Err(detail);
            }
            Err(_) => {
                let _ = thread.join();
                return Err("the TPM thread ended while connecting".to_owned());
            }
        }
        let device = Arc::new(TpmDevice {
            tcti: tcti.to_owned(),
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        });
        all.insert(tcti.to_owned(), Arc::downgrade(&device));
        Ok(device)
    }

    pub(crate) fn tcti(&self) -> &str {
        &self.tcti
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, Failure> {
        let gone = |detail: &str| Failure {
            operation: "command",
            detail: detail.to_owned(),
            kind: FailureKind::Other,
        };
        let (reply, answer) = oneshot::channel();
        {
            let tx = lock(&self.tx);
            let tx = tx
                .as_ref()
                .ok_or_else(|| gone("the TPM thread has stopped"))?;
            tx.send(make(reply))
                .map_err(|_| gone("the TPM thread has stopped"))?;
        }
        answer
            .await
            .map_err(|_| gone("the TPM thread ended without answering"))?
    }

    pub(crate) async fn create(
        &self,
        template: Public,
        target: NewKeyTarget,
    ) -> Result<Created, Failure> {
        self.call(|reply| Request::Create {
            template,
            target,
            reply,
        })
        .await
    }

    pub(crate) async fn load(&self, source: KeySource) -> Result<(u64, Public), Failure> {
        self.call(|reply| Request::Load { source, reply }).await
    }

    pub(crate) async fn sign(
        &self,
        id: u64,
        digest: Vec<u8>,
        scheme: SignatureScheme,
    ) -> Result<Signature, Failure> {
        self.call(|reply| Request::Sign {
            id,
            digest,
            scheme,
            reply,
        })
        .await
    }

    pub(crate) async fn list_persistent(&self) -> Result<Vec<(u32, Public)>, Failure> {
        self.call(|reply| Request::ListPersistent { reply }).await
    }

    /// Transient objects loaded in the TPM right now (by anyone), for tests.
    pub(crate) async fn count_transient(&self) -> Result<usize, Failure> {
        self.call(|reply| Request::CountTransient { reply }).await
    }

    /// Forgets a key (flushing it if loaded); never blocks.
    pub(crate) fn unload(&self, id: u64) {
        if let Some(tx) = lock(&self.tx).as_ref() {
            let _ = tx.send(Request::Unload { id });
        }
    }
}

impl TpmDevice {
    /// Ends the owner thread, which flushes everything it loaded, and waits for it. Keys
    /// of this TPM fail afterwards ("the TPM thread has stopped").
    fn stop(&self) {
        // Closing the channel ends the thread.
        lock(&self.tx).take();
        if let Some(thread) = lock(&self.thread).take() {
            let _ = thread.join();
        }
    }
}

/// Stops every TPM owner thread of this process (blocking), flushing every object it
/// loaded, even while keys are still held: call it at the end of every command, on error
/// paths and on signals, so a TPM without a resource manager keeps no object of ours.
/// Returns how many TPM connections were closed.
pub fn shutdown() -> usize {
    let devices: Vec<Arc<TpmDevice>> = lock(devices())
        .drain()
        .filter_map(|(_, device)| device.upgrade())
        .collect();
    for device in &devices {
        device.stop();
    }
    devices.len()
}

impl Drop for TpmDevice {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Entry {
    source: KeySource,
    /// The loaded object: a transient handle to flush, or a persistent one to close.
    loaded: Option<KeyHandle>,
    last_used: u64,
}

/// State of the owner thread.
struct Owner {
    ctx: Context,
    keys: HashMap<u64, Entry>,
    next_id: u64,
    tick: u64,
}

impl Owner {
    fn new(ctx: Context) -> Owner {
        Owner {
            ctx,
            keys: HashMap::new(),
            next_id: 1,
            tick: 0,
        }
    }

    fn serve(mut self, rx: mpsc::Receiver<Request>) {
        // Ends when every sender is gone.
        for request in rx {
            match request {
                Request::Create {
                    template,
                    target,
                    reply,
                } => {
                    let _ = reply.send(self.create(template, target));
                }
                Request::Load { source, reply } => {
                    let _ = reply.send(self.load(source));
                }
                Request::Sign {
                    id,
                    digest,
                    scheme,
                    reply,
                } => {
                    let _ = reply.send(self.sign(id, digest, scheme));
                }
                Request::Unload { id } => {
                    if let Some(entry) = self.keys.remove(&id) {
                        self.release(&entry);
                    }
                }
                Request::ListPersistent { reply } => {
                    let _ = reply.send(self.list_persistent());
                }
                Request::CountTransient { reply } => {
                    let _ = reply.send(self.handles(TPM2_HT_TRANSIENT).map(|h| h.len()));
                }
            }
        }
        let entries: Vec<Entry> = self.keys.drain().map(|(_, e)| e).collect();
        for entry in &entries {
            self.release(entry);
        }
    }

    /// Creates the owner-hierarchy storage primary, runs `f` with it, and flushes it
    /// whatever `f` returned.
    fn with_primary<T>(
        &mut self,
        f: impl FnOnce(&mut Context, KeyHandle) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let template = templates::storage_primary().map_err(|e| failure("primary template", e))?;
        let primary = with_auth(&mut self.ctx, |c| {
            c.create_primary(Hierarchy::Owner, template, None, None, None, None)
        })
        .map_err(|e| failure("CreatePrimary", e))?
        .key_handle;
        let result = f(&mut self.ctx, primary);
        if let Err(e) = self.ctx.flush_context(primary.into()) {
            tracing::warn!("flushing the TPM storage primary failed: {e}");
        }
        result
    }

    fn create(&mut self, template: Public, target: NewKeyTarget) -> Result<Created, Failure> {
        let created = self.with_primary(|ctx, primary| {
            let created = with_auth(ctx, |c| c.create(primary, template, None, None, None, None))
                .map_err(|e| failure("Create", e))?;
            let NewKeyTarget::Persistent(handle) = target else {
                return Ok(created);
            };
            let (private, public) = (created.out_private.clone(), created.out_public.clone());
            let loaded = with_auth(ctx, |c| c.load(primary, private, public))
                .map_err(|e| failure("Load", e))?;
            let persisted = persist(ctx, loaded.into(), handle);
            if let Err(e) = ctx.flush_context(loaded.into()) {
                tracing::warn!("flushing a TPM key failed: {e}");
            }
            persisted.map(|()| created)
        })?;
        Ok(Created {
            public: created.out_public,
            private: matches!(target, NewKeyTarget::Blob).then_some(created.out_private),
        })
    }

    fn load(&mut self, source: KeySource) -> Result<(u64, Public), Failure> {
        let handle = self.load_object(&source)?;
        let public = match self.ctx.read_public(handle) {
            Ok((public, _, _)) => public,
            Err(e) => {
                self.release(&Entry {
                    source,
                    loaded: Some(handle),
                    last_used: 0,
                });
                return Err(failure("ReadPublic", e));
            }
        };
        let id = self.next_id;
        self.next_id += 1;
        self.tick += 1;
        self.keys.insert(
            id,
            Entry {
                source,
                loaded: Some(handle),
                last_used: self.tick,
            },
        );
        Ok((id, public))
    }

    fn load_object(&mut self, source: &KeySource) -> Result<KeyHandle, Failure> {
        match source {
            KeySource::Persistent(handle) => {
                let tpm_handle = PersistentTpmHandle::new(*handle)
                    .map(TpmHandle::Persistent)
                    .map_err(|e| failure("handle", e))?;
                self.ctx
                    .tr_from_tpm_public(tpm_handle)
                    .map(KeyHandle::from)
                    .map_err(|e| Failure {
                        kind: FailureKind::HandleNotFound,
                        ..failure("ReadPublic", e)
                    })
            }
            KeySource::Blob { public, private } => {
                self.evict_to(MAX_LOADED - 1);
                let (public, private) = (public.clone(), private.clone());
                self.with_primary(|ctx, primary| {
                    with_auth(ctx, |c| c.load(primary, private, public))
                        .map_err(|e| failure("Load", e))
                })
            }
        }
    }

    fn sign(
        &mut self,
        id: u64,
        digest: Vec<u8>,
        scheme: SignatureScheme,
    ) -> Result<Signature, Failure> {
        self.tick += 1;
        let tick = self.tick;
        let (loaded, source) = match self.keys.get_mut(&id) {
            Some(e) => {
                e.last_used = tick;
                (e.loaded, e.source.clone())
            }
            None => {
                return Err(Failure {
                    operation: "Sign",
                    detail: "the key is not registered with the TPM thread".to_owned(),
                    kind: FailureKind::Other,
                });
            }
        };
        let handle = match loaded {
            Some(h) => h,
            None => {
                let h = self.load_object(&source)?;
                if let Some(e) = self.keys.get_mut(&id) {
                    e.loaded = Some(h);
                }
                h
            }
        };
        let digest = Digest::try_from(digest).map_err(|e| failure("digest", e))?;
        let ticket = HashcheckTicket::try_from(TPMT_TK_HASHCHECK {
            tag: TPM2_ST_HASHCHECK,
            hierarchy: TPM2_RH_NULL,
            digest: Default::default(),
        })
        .map_err(|e| failure("ticket", e))?;
        with_auth(&mut self.ctx, |c| c.sign(handle, digest, scheme, ticket))
            .map_err(|e| failure("Sign", e))
    }

    /// Flushes least recently used loaded blob keys until at most `keep` remain.
    fn evict_to(&mut self, keep: usize) {
        loop {
            let loaded: Vec<(u64, u64)> = self
                .keys
                .iter()
                .filter(|(_, e)| e.loaded.is_some() && matches!(e.source, KeySource::Blob { .. }))
                .map(|(id, e)| (*id, e.last_used))
                .collect();
            if loaded.len() <= keep {
                return;
            }
            let Some((oldest, _)) = loaded.into_iter().min_by_key(|(_, used)| *used) else {
                return;
            };
            if let Some(handle) = self.keys.get_mut(&oldest).and_then(|e| e.loaded.take())
                && let Err(e) = self.ctx.flush_context(handle.into())
            {
                tracing::warn!("flushing a TPM key failed: {e}");
            }
        }
    }

    /// Flushes a loaded transient key, or closes the ESYS handle of a persistent one.
    fn release(&mut self, entry: &Entry) {
        let Some(handle) = entry.loaded else { return };
        let result = match entry.source {
            KeySource::Blob { .. } => self.ctx.flush_context(handle.into()),
            KeySource::Persistent(_) => {
                let mut object: ObjectHandle = handle.into();
                self.ctx.tr_close(&mut object)
            }
        };
        if let Err(e) = result {
            tracing::warn!("releasing a TPM key failed: {e}");
        }
    }

    fn handles(&mut self, kind: u8) -> Result<Vec<u32>, Failure> {
        let kind = u32::from(kind);
        let first = kind << 24;
        let (data, _more) = self
            .ctx
            .get_capability(CapabilityType::Handles, first, 64)
            .map_err(|e| failure("GetCapability", e))?;
        let CapabilityData::Handles(list) = data else {
            return Ok(Vec::new());
        };
        Ok(list
            .into_inner()
            .into_iter()
            .map(u32::from)
            .filter(|h| h >> 24 == kind)
            .collect())
    }

    fn list_persistent(&mut self) -> Result<Vec<(u32, Public)>, Failure> {
        let mut keys = Vec::new();
        for handle in self.handles(TPM2_HT_PERSISTENT)? {
            let entry = Entry {
                source: KeySource::Persistent(handle),
                loaded: Some(self.load_object(&KeySource::Persistent(handle))?),
                last_used: 0,
            };
            let public = entry.loaded.map(|h| self.ctx.read_public(h));
            self.release(&entry);
            if let Some(Ok((public, _, _))) = public {
                keys.push((handle, public));
            }
        }
        Ok(keys)
    }
}

/// Runs a command that needs authorization. Objects and the owner hierarchy have empty
/// auth, which a password session carries at no cost; commands without authorization
/// (ReadPublic, FlushContext, GetCapability) must run without a session.
fn with_auth<T>(ctx: &mut Context, f: impl FnOnce(&mut Context) -> T) -> T {
    ctx.execute_with_session(Some(AuthSession::Password), f)
}

/// Makes the loaded key `object` persistent at `handle` (owner authorization).
fn persist(ctx: &mut Context, object: ObjectHandle, handle: u32) -> Result<(), Failure> {
    let persistent = PersistentTpmHandle::new(handle).map_err(|e| failure("handle", e))?;
    match with_auth(ctx, |c| {
        c.evict_control(Provision::Owner, object, Persistent::Persistent(persistent))
    }) {
        Ok(mut new) => {
            let _ = ctx.tr_close(&mut new);
            Ok(())
        }
        Err(e) => {
            let detail = e.to_string();
            let in_use = detail.contains("NV_DEFINED") || detail.contains("already defined");
            Err(Failure {
                kind: if in_use {
                    FailureKind::HandleInUse
                } else {
                    FailureKind::Other
                },
                ..failure("EvictControl", e)
            })
        }
    }
}
