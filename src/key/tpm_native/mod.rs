//! Native Rust TPM 2.0 backend: the same keys and behaviour as the tss-esapi backend, without
//! any C library, for the fully static (musl) binary.
//!
//! Commands are marshalled by the `tpm2-protocol` crate ([`commands`]) and carried by our own
//! [`transport`] to `/dev/tpmrm0`, `/dev/tpm0` or swtpm's TCP port. Authorisation uses password
//! sessions (TPM_RS_PW) only: the owner hierarchy's auth is empty, the key's auth is empty or read
//! from `--tpm-key-auth-file`.
//!
//! Every operation opens its own connection and flushes every transient object it loaded before
//! returning, so nothing is left behind in a TPM without a resource manager (swtpm, `/dev/tpm0`)
//! even if the process is killed between operations, and swtpm (which serves one client at a
//! time) is never held between signatures.
//!
//! Key creation under a persistent handle follows the usual provisioning: create the storage root
//! key from the standard template ([`commands::srk_template`]) under the owner hierarchy, create
//! the signing key under it (fixedTPM, fixedParent, sensitiveDataOrigin, userWithAuth, sign),
//! load it and make it persistent with TPM2_EvictControl.

pub mod commands;
pub mod transport;
use super::tss2pem;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tpm2_protocol::basic::TpmHandle;
use tpm2_protocol::data::{
    Tpm2bPrivate, Tpm2bPublic, TpmSu, TpmaObject, TpmsAuthCommand, TpmtPublic,
};
use tpm2_protocol::frame::{
    TpmCreateCommand, TpmCreatePrimaryCommand, TpmCreatePrimaryResponse, TpmCreateResponse,
    TpmEvictControlCommand, TpmEvictControlResponse, TpmFlushContextCommand,
    TpmFlushContextResponse, TpmFrame, TpmLoadCommand, TpmLoadResponse, TpmReadPublicCommand,
    TpmReadPublicResponse, TpmSignCommand, TpmSignResponse, TpmStartupCommand, TpmStartupResponse,
    TpmUnmarshalBody,
};

use super::uri::{PERSISTENT_MAX, PERSISTENT_MIN};
use super::{Algorithm, KeyError, KeyOptions, NodeKey, OpenMode};
use crate::secret::Secret;
use commands::{TpmCallError, RC_HANDLE_1, RC_INITIALIZE, RH_OWNER};
use transport::{Tcti, Transport, TransportError};

/// TSS2 key files are a few kilobytes at most.
const MAX_TSS2_FILE: u64 = 64 * 1024;
/// How often a command answered with TPM_RC_RETRY / YIELDED / TESTING is sent again.
const RETRIES: u32 = 12;

/// Why one TPM command failed.
#[derive(Debug)]
enum Failure {
    Transport(TransportError),
    Call(TpmCallError),
}

impl From<TransportError> for Failure {
    fn from(e: TransportError) -> Self {
        Failure::Transport(e)
    }
}

impl From<TpmCallError> for Failure {
    fn from(e: TpmCallError) -> Self {
        Failure::Call(e)
    }
}

impl Failure {
    fn rc(&self) -> Option<u32> {
        match self {
            Failure::Call(TpmCallError::Rc(rc)) => Some(*rc),
            _ => None,
        }
    }
}

/// One connection to a TPM, sending typed commands.
struct Tpm {
    transport: Transport,
    started: bool,
}

impl Tpm {
    fn connect(tcti: &Tcti) -> Result<Tpm, KeyError> {
        let transport = Transport::open(tcti).map_err(|e| transport_error(tcti, e))?;
        Ok(Tpm {
            transport,
            started: false,
        })
    }

    fn tcti(&self) -> &Tcti {
        self.transport.tcti()
    }

    /// Sends `command` and parses the response as `R`. Busy answers are retried with a short
    /// back-off; a TPM that was never started (swtpm without `startup-clear`, `/dev/tpm0` before
    /// the kernel did it) gets one TPM2_Startup(CLEAR).
    fn call<C: TpmFrame, R: TpmUnmarshalBody>(
        &mut self,
        command: &C,
        sessions: &[TpmsAuthCommand],
    ) -> Result<R, Failure> {
        let frame = commands::build_command(command, sessions)?;
        let mut attempt = 0;
        loop {
            let response = self.transport.transact(&frame)?;
            match commands::parse_response::<R>(&response) {
                Err(TpmCallError::Rc(rc)) if commands::is_retry_rc(rc) && attempt < RETRIES => {
                    // swtpm answers the first ECDSA signature after it starts with
                    // TPM_RC_RETRY; an immediate resend succeeds. Then back off up to 200 ms
                    // for TPMs that are self-testing or busy (about 0.9 s in all).
                    log::debug!("{}: sending the command again", commands::describe_rc(rc));
                    if attempt > 0 {
                        let ms = (1u64 << (attempt - 1)).min(200);
                        std::thread::sleep(Duration::from_millis(ms));
                    }
                    attempt += 1;
                }
                Err(TpmCallError::Rc(RC_INITIALIZE)) if !self.started => {
                    self.started = true;
                    log::info!(
                        "TPM at {} was not started: sending TPM2_Startup(CLEAR)",
                        self.tcti()
                    );
                    let startup = TpmStartupCommand {
                        handles: [],
                        startup_type: TpmSu::Clear,
                    };
                    let f = commands::build_command(&startup, &[])?;
                    let r = self.transport.transact(&f)?;
                    commands::parse_response::<TpmStartupResponse>(&r)?;
                }
                other => return other.map_err(Failure::Call),
            }
        }
    }

    fn read_public(&mut self, handle: u32) -> Result<TpmtPublic, Failure> {
        let cmd = TpmReadPublicCommand {
            handles: [TpmHandle::new(handle)],
        };
        let resp: TpmReadPublicResponse = self.call(&cmd, &[])?;
        Ok(resp.out_public.inner)
    }

    /// Creates the SRK under the owner hierarchy (empty owner auth); returns its transient
    /// handle.
    fn create_srk(&mut self) -> Result<u32, Failure> {
        let cmd = TpmCreatePrimaryCommand {
            handles: [TpmHandle::new(RH_OWNER)],
            in_sensitive: commands::sensitive_create(b"")?,
            in_public: commands::tpm2b_public(commands::srk_template()),
            outside_info: Default::default(),
            creation_pcr: commands::no_pcrs(),
        };
        let resp: TpmCreatePrimaryResponse =
            self.call(&cmd, &[commands::password_session(b"")?])?;
        Ok(resp.handles[0].value())
    }

    fn create(
        &mut self,
        parent: u32,
        template: TpmtPublic,
        auth: &[u8],
    ) -> Result<(Tpm2bPrivate, Tpm2bPublic), Failure> {
        let cmd = TpmCreateCommand {
            handles: [TpmHandle::new(parent)],
            in_sensitive: commands::sensitive_create(auth)?,
            in_public: commands::tpm2b_public(template),
            outside_info: Default::default(),
            creation_pcr: commands::no_pcrs(),
        };
        let resp: TpmCreateResponse = self.call(&cmd, &[commands::password_session(b"")?])?;
        Ok((resp.out_private, resp.out_public))
    }

    fn load(
        &mut self,
        parent: u32,
        private: &Tpm2bPrivate,
        public: &Tpm2bPublic,
    ) -> Result<u32, Failure> {
        let cmd = TpmLoadCommand {
            handles: [TpmHandle::new(parent)],
            in_private: *private,
            in_public: public.clone(),
        };
        let resp: TpmLoadResponse = self.call(&cmd, &[commands::password_session(b"")?])?;
        Ok(resp.handles[0].value())
    }

    fn evict_control(&mut self, object: u32, persistent: u32) -> Result<(), Failure> {
        let cmd = TpmEvictControlCommand {
            handles: [TpmHandle::new(RH_OWNER), TpmHandle::new(object)],
            persistent_handle: TpmHandle::new(persistent),
        };
        let _: TpmEvictControlResponse = self.call(&cmd, &[commands::password_session(b"")?])?;
        Ok(())
    }

    fn sign(
        &mut self,
        key: u32,
        auth: &[u8],
        alg: Algorithm,
        digest: &[u8; 32],
    ) -> Result<Vec<u8>, Failure> {
        let cmd = TpmSignCommand {
            handles: [TpmHandle::new(key)],
            digest: commands::digest(digest),
            in_scheme: commands::sig_scheme(alg),
            validation: commands::null_hashcheck(),
        };
        let resp: TpmSignResponse = self.call(&cmd, &[commands::password_session(auth)?])?;
        commands::signature_bytes(&resp.signature, alg)
            .map_err(|m| Failure::Call(TpmCallError::Malformed(m)))
    }

    /// Flushes a transient object; failures are logged, not returned (cleanup must not mask the
    /// error that got us here).
    fn flush(&mut self, handle: u32) {
        let cmd = TpmFlushContextCommand {
            handles: [],
            flush_handle: TpmHandle::new(handle),
        };
        if let Err(e) = self.call::<_, TpmFlushContextResponse>(&cmd, &[]) {
            log::warn!(
                "could not flush transient TPM object 0x{handle:08x} at {}: {}",
                self.tcti(),
                failure_text(&e)
            );
        }
    }
}

fn failure_text(f: &Failure) -> String {
    match f {
        Failure::Transport(t) => t.to_string(),
        Failure::Call(c) => c.to_string(),
    }
}

fn transport_error(tcti: &Tcti, e: TransportError) -> KeyError {
    match e {
        TransportError::Unreachable(detail) => KeyError::TpmUnreachable {
            tcti: tcti.to_string(),
            detail,
        },
        other => KeyError::backend(format!("TPM at {tcti}"), other),
    }
}

/// Turns a failed command into the trait's error, naming the command and the TPM.
fn key_error(tcti: &Tcti, command: &str, f: Failure) -> KeyError {
    match f {
        Failure::Transport(t) => transport_error(tcti, t),
        Failure::Call(c) => KeyError::backend(format!("{command} on the TPM at {tcti}"), c),
    }
}

fn parse_tcti(opts: &KeyOptions) -> Result<Tcti, KeyError> {
    Tcti::parse(opts.tcti.as_deref()).map_err(|detail| {
        KeyError::backend(
            format!(
                "invalid TCTI {:?}",
                opts.tcti.as_deref().unwrap_or(transport::DEFAULT_TCTI)
            ),
            detail,
        )
    })
}

/// The key's auth value from `--tpm-key-auth-file` (empty when not given).
fn read_auth(opts: &KeyOptions) -> Result<Secret, KeyError> {
    if let Some(password) = &opts.tpm_auth {
        if password.expose().len() > 32 {
            return Err(KeyError::backend(
                "--tpm-key-password",
                "the auth value is longer than 32 bytes (the SHA-256 name algorithm's limit)",
            ));
        }
        return Ok(password.clone());
    }
    match &opts.tpm_auth_file {
        None => Ok(Secret::default()),
        Some(path) => {
            let s = Secret::from_file(path).map_err(|e| {
                KeyError::io(format!("reading TPM key auth file {}", path.display()), e)
            })?;
            if s.expose().len() > 32 {
                return Err(KeyError::backend(
                    format!("TPM key auth file {}", path.display()),
                    "the auth value is longer than 32 bytes (the SHA-256 name algorithm's limit)",
                ));
            }
            Ok(s)
        }
    }
}

/// Where the key lives.
#[derive(Clone)]
enum Location {
    /// A persistent handle in the owner hierarchy.
    Persistent(u32),
    /// A TSS2 PEM key file, loaded under its parent for each signature.
    Tss2 {
        path: PathBuf,
        parent: u32,
        public: Box<Tpm2bPublic>,
        private: Box<Tpm2bPrivate>,
    },
}

/// A signing key inside a TPM, used through the native Rust client.
pub struct NativeTpmKey {
    tcti: Tcti,
    location: Location,
    algorithm: Algorithm,
    spki: Vec<u8>,
    auth: Secret,
}

impl std::fmt::Debug for NativeTpmKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeTpmKey")
            .field("key", &self.describe())
            .field("algorithm", &self.algorithm)
            .field("auth", &self.auth)
            .finish()
    }
}

impl NativeTpmKey {
    /// Opens the key at a persistent handle; with [`OpenMode::CreateIfAbsent`] creates it there
    /// (under the SRK) when the handle is empty.
    pub fn open_persistent(
        handle: u32,
        opts: &KeyOptions,
        mode: OpenMode,
    ) -> Result<NativeTpmKey, KeyError> {
        if !(PERSISTENT_MIN..=PERSISTENT_MAX).contains(&handle) {
            return Err(KeyError::HandleOutOfRange {
                handle: format!("0x{handle:08x}"),
            });
        }
        let reference = format!("handle:0x{handle:08x}");
        let tcti = parse_tcti(opts)?;
        let auth = read_auth(opts)?;
        let mut tpm = Tpm::connect(&tcti)?;
        let public = match tpm.read_public(handle) {
            Ok(public) => public,
            Err(f) if f.rc() == Some(RC_HANDLE_1) => match mode {
                OpenMode::Existing => return Err(KeyError::NotFound { reference }),
                OpenMode::CreateIfAbsent(alg) => {
                    log::info!("creating a {alg} key at {reference} in the TPM at {tcti}");
                    create_persistent(&mut tpm, handle, alg, auth.expose().as_bytes())?;
                    tpm.read_public(handle)
                        .map_err(|f| key_error(&tcti, "TPM2_ReadPublic", f))?
                }
            },
            Err(f) => return Err(key_error(&tcti, "TPM2_ReadPublic", f)),
        };
        let kp = commands::key_public(&public).map_err(|e| KeyError::Unsupported {
            reference: reference.clone(),
            detail: e.0,
        })?;
        if let OpenMode::CreateIfAbsent(requested) = mode {
            if requested != kp.algorithm {
                return Err(KeyError::AlgorithmMismatch {
                    reference,
                    existing: kp.algorithm,
                    requested,
                });
            }
        }
        Ok(NativeTpmKey {
            tcti,
            location: Location::Persistent(handle),
            algorithm: kp.algorithm,
            spki: kp.spki,
            auth,
        })
    }

    /// Opens a TSS2 PEM key file. The file must exist (TPM-wrapped key files are made by
    /// tpm2-openssl or tpm2-tools); with [`OpenMode::CreateIfAbsent`] its algorithm must match.
    pub fn open_tss2_pem(
        path: &Path,
        opts: &KeyOptions,
        mode: OpenMode,
    ) -> Result<NativeTpmKey, KeyError> {
        let reference = format!("file:{}", path.display());
        let unsupported = |detail: String| KeyError::Unsupported {
            reference: reference.clone(),
            detail,
        };
        let mut text = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_TSS2_FILE + 1).read_to_end(&mut text))
            .map_err(|e| KeyError::io(format!("reading TSS2 key file {}", path.display()), e))?;
        if text.len() as u64 > MAX_TSS2_FILE {
            return Err(unsupported("file larger than 64 KiB".into()));
        }
        let key = tss2pem::parse_pem(&text).map_err(|e| unsupported(e.to_string()))?;
        // The shared parser strips the TPM2B size prefixes; the marshaller wants them back.
        let public = commands::unmarshal_public(&tpm2b(&key.public))
            .map_err(|e| unsupported(format!("pubkey field: {e}")))?;
        let private = commands::unmarshal_private(&tpm2b(&key.private))
            .map_err(|e| unsupported(format!("privkey field: {e}")))?;
        let kp = commands::key_public(&public.inner).map_err(|e| unsupported(e.0))?;
        if let OpenMode::CreateIfAbsent(requested) = mode {
            if requested != kp.algorithm {
                return Err(KeyError::AlgorithmMismatch {
                    reference,
                    existing: kp.algorithm,
                    requested,
                });
            }
        }
        let parent_ok =
            key.parent == RH_OWNER || (PERSISTENT_MIN..=PERSISTENT_MAX).contains(&key.parent);
        if !parent_ok {
            return Err(unsupported(format!(
                "parent handle 0x{:08x} is neither the owner SRK (0x40000001) nor a persistent key",
                key.parent
            )));
        }
        // Like the tss-esapi backend: a file that claims an auth value (tpm2_encodeobject writes
        // emptyAuth FALSE unless told otherwise) is tried with the auth file, or with an empty
        // value and a warning; a wrong value ends in a clear TPM_RC_AUTH_FAIL.
        let auth = read_auth(opts)?;
        if !key.empty_auth && opts.tpm_auth_file.is_none() {
            log::warn!(
                "TPM key file {reference} says it has an auth value; pass --tpm-key-auth-file if signing fails"
            );
        }
        let tcti = parse_tcti(opts)?;
        let key = NativeTpmKey {
            tcti,
            location: Location::Tss2 {
                path: path.to_path_buf(),
                parent: key.parent,
                public: Box::new(public),
                private: Box::new(private),
            },
            algorithm: kp.algorithm,
            spki: kp.spki,
            auth,
        };
        // Load it once now, so a key from another TPM or parent fails at open, not at first use.
        key.with_loaded(|_, _| Ok(()))?;
        Ok(key)
    }

    /// Runs `f` with the key usable at a handle: a persistent key directly, a TSS2 key loaded
    /// under its parent (created from the SRK template when the parent is the owner hierarchy)
    /// and flushed afterwards.
    fn with_loaded<T>(
        &self,
        f: impl FnOnce(&mut Tpm, u32) -> Result<T, KeyError>,
    ) -> Result<T, KeyError> {
        let mut tpm = Tpm::connect(&self.tcti)?;
        match &self.location {
            Location::Persistent(handle) => f(&mut tpm, *handle),
            Location::Tss2 {
                parent,
                public,
                private,
                ..
            } => {
                let (parent_handle, transient_parent) = if *parent == RH_OWNER {
                    let srk = tpm
                        .create_srk()
                        .map_err(|e| key_error(&self.tcti, "TPM2_CreatePrimary (SRK)", e))?;
                    (srk, true)
                } else {
                    (*parent, false)
                };
                let loaded = tpm.load(parent_handle, private, public);
                if transient_parent {
                    tpm.flush(parent_handle);
                }
                let loaded = loaded.map_err(|e| self.load_error(e))?;
                let result = f(&mut tpm, loaded);
                tpm.flush(loaded);
                result
            }
        }
    }

    fn load_error(&self, f: Failure) -> KeyError {
        // TPM_RC_VALUE on the private blob usually means it was made under another parent (the
        // TPM_RC_INTEGRITY text already says so).
        let hint = match f.rc().map(commands::rc_base) {
            Some(0x084) => " (was the key file made for another TPM or another parent key?)",
            _ => "",
        };
        let path = match &self.location {
            Location::Tss2 { path, .. } => path.display().to_string(),
            Location::Persistent(h) => format!("0x{h:08x}"),
        };
        match key_error(&self.tcti, "TPM2_Load", f) {
            KeyError::Backend { context, detail } => KeyError::Backend {
                context: format!("loading TSS2 key {path}: {context}"),
                detail: format!("{detail}{hint}"),
            },
            other => other,
        }
    }
}

/// Provisions a signing key at `handle`: SRK, create, load, evict control; flushes the
/// transient objects whatever happens.
fn create_persistent(
    tpm: &mut Tpm,
    handle: u32,
    alg: Algorithm,
    auth: &[u8],
) -> Result<(), KeyError> {
    let tcti = tpm.tcti().clone();
    let srk = tpm
        .create_srk()
        .map_err(|e| key_error(&tcti, "TPM2_CreatePrimary (SRK)", e))?;
    // noDA exactly when the key has no auth value (as the tss-esapi backend: nothing to guess,
    // and DA protection would count every power cut during use as a failed try).
    let mut template = commands::signing_key_template(alg);
    if auth.is_empty() {
        template.object_attributes |= TpmaObject::NO_DA;
    }
    let result = (|| {
        let (private, public) = tpm
            .create(srk, template, auth)
            .map_err(|e| key_error(&tcti, "TPM2_Create", e))?;
        let loaded = tpm
            .load(srk, &private, &public)
            .map_err(|e| key_error(&tcti, "TPM2_Load", e))?;
        let persisted = match tpm.evict_control(loaded, handle) {
            // Another process (a concurrent first boot) made a key there in the meantime: use
            // it; the caller reads it back and checks its algorithm.
            Err(f) if f.rc() == Some(commands::RC_NV_DEFINED) => {
                log::info!(
                    "handle 0x{handle:08x} was filled by another process meanwhile: using that key"
                );
                Ok(())
            }
            other => other.map_err(|e| key_error(&tcti, "TPM2_EvictControl", e)),
        };
        tpm.flush(loaded);
        persisted
    })();
    tpm.flush(srk);
    result
}

impl NodeKey for NativeTpmKey {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    fn public_key_der(&self) -> &[u8] {
        &self.spki
    }

    fn sign_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>, KeyError> {
        self.with_loaded(|tpm, handle| {
            tpm.sign(
                handle,
                self.auth.expose().as_bytes(),
                self.algorithm,
                digest,
            )
            .map_err(|e| key_error(&self.tcti, "TPM2_Sign", e))
        })
    }

    fn describe(&self) -> String {
        match &self.location {
            Location::Persistent(h) => format!("TPM handle 0x{h:08x} at {} (native)", self.tcti),
            Location::Tss2 { path, .. } => {
                format!("TSS2 key {} at {} (native)", path.display(), self.tcti)
            }
        }
    }
}

/// `bytes` with its TPM2B big-endian u16 size prefix (the parser caps the fields far below 64 KiB).
fn tpm2b(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 2);
    out.extend_from_slice(&(bytes.len().min(u16::MAX as usize) as u16).to_be_bytes());
    out.extend_from_slice(bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Classify;

    #[test]
    fn out_of_range_handles_and_bad_tctis_fail_before_any_io() {
        let opts = KeyOptions::default();
        let e = NativeTpmKey::open_persistent(0x8000_0000, &opts, OpenMode::Existing).unwrap_err();
        assert!(matches!(e, KeyError::HandleOutOfRange { .. }), "{e}");
        let opts = KeyOptions {
            tcti: Some("mssim:host=127.0.0.1,port=1".into()),
            ..Default::default()
        };
        let e = NativeTpmKey::open_persistent(0x8100_0001, &opts, OpenMode::Existing).unwrap_err();
        assert!(e.to_string().contains("swtpm:host="), "{e}");
    }

    #[test]
    fn unreachable_tpm_is_transient() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let opts = KeyOptions {
            tcti: Some(format!("swtpm:host=127.0.0.1,port={port}")),
            ..Default::default()
        };
        let e = NativeTpmKey::open_persistent(0x8100_0001, &opts, OpenMode::Existing).unwrap_err();
        assert!(matches!(e, KeyError::TpmUnreachable { .. }), "{e}");
        assert!(e.is_transient());
    }

    /// A fake TPM on loopback: answers each received command frame with the next canned
    /// response and records the command codes it saw.
    fn fake_tpm(responses: Vec<Vec<u8>>) -> (Tcti, std::thread::JoinHandle<Vec<u32>>) {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut seen = Vec::new();
            for r in responses {
                let mut header = [0u8; 10];
                if s.read_exact(&mut header).is_err() {
                    break;
                }
                let size = u32::from_be_bytes(header[2..6].try_into().unwrap()) as usize;
                let mut rest = vec![0u8; size - 10];
                s.read_exact(&mut rest).unwrap();
                seen.push(u32::from_be_bytes(header[6..10].try_into().unwrap()));
                s.write_all(&r).unwrap();
            }
            seen
        });
        (
            Tcti::Swtpm {
                host: "127.0.0.1".into(),
                port,
            },
            handle,
        )
    }

    fn flush_cmd() -> TpmFlushContextCommand {
        TpmFlushContextCommand {
            handles: [],
            flush_handle: TpmHandle::new(0x8000_0000),
        }
    }

    const OK: [u8; 10] = [0x80, 0x01, 0, 0, 0, 10, 0, 0, 0, 0];

    #[test]
    fn busy_answers_are_retried_and_an_unstarted_tpm_is_started() {
        let retry = vec![0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x09, 0x22];
        let init = vec![0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x01, 0x00];
        let (tcti, server) = fake_tpm(vec![
            retry.clone(),
            retry,
            OK.to_vec(),
            init,
            OK.to_vec(),
            OK.to_vec(),
        ]);
        let mut tpm = Tpm::connect(&tcti).unwrap();
        let _: TpmFlushContextResponse = tpm.call(&flush_cmd(), &[]).unwrap();
        let _: TpmFlushContextResponse = tpm.call(&flush_cmd(), &[]).unwrap();
        drop(tpm);
        // FlushContext 0x165 three times, then again after Startup 0x144.
        assert_eq!(
            server.join().unwrap(),
            vec![0x165, 0x165, 0x165, 0x165, 0x144, 0x165]
        );
    }

    #[test]
    fn malformed_or_cut_responses_are_errors() {
        // A size field of 4 GiB, a body that never arrives, a wrong tag, and a success response
        // whose body does not match the command.
        let huge = vec![0x80, 0x01, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
        let (tcti, _server) = fake_tpm(vec![huge]);
        let mut tpm = Tpm::connect(&tcti).unwrap();
        let e = tpm
            .call::<_, TpmFlushContextResponse>(&flush_cmd(), &[])
            .unwrap_err();
        assert!(
            matches!(e, Failure::Transport(TransportError::Malformed(_))),
            "{e:?}"
        );

        let cut = vec![0x80, 0x01, 0, 0, 0, 40, 0, 0, 0, 0, 1, 2];
        let (tcti, server) = fake_tpm(vec![cut]);
        let mut tpm = Tpm::connect(&tcti).unwrap();
        let handle =
            std::thread::spawn(move || tpm.call::<_, TpmFlushContextResponse>(&flush_cmd(), &[]));
        server.join().unwrap(); // the fake closes the connection after 12 bytes
        let e = handle.join().unwrap().unwrap_err();
        let e = key_error(&tcti, "TPM2_FlushContext", e);
        assert!(matches!(e, KeyError::TpmUnreachable { .. }), "{e}");

        let bad_tag = vec![0x12, 0x34, 0, 0, 0, 10, 0, 0, 0, 0];
        let (tcti, _server) = fake_tpm(vec![bad_tag]);
        let mut tpm = Tpm::connect(&tcti).unwrap();
        assert!(tpm
            .call::<_, TpmFlushContextResponse>(&flush_cmd(), &[])
            .is_err());

        // ReadPublic answered with an empty success: not a public area.
        let (tcti, _server) = fake_tpm(vec![OK.to_vec()]);
        let mut tpm = Tpm::connect(&tcti).unwrap();
        let e = tpm.read_public(0x8100_0001).unwrap_err();
        assert!(
            matches!(e, Failure::Call(TpmCallError::Malformed(_))),
            "{e:?}"
        );
    }

    /// Marshals a success response with one (empty) password-session acknowledgement, as a TPM
    /// answers a command that carried a password session.
    fn session_response<R: TpmFrame>(resp: &R) -> Vec<u8> {
        use tpm2_protocol::data::{TpmRc, TpmRcBase, TpmaSession, TpmsAuthResponse};
        let mut buf = vec![0u8; 4096];
        let mut w = tpm2_protocol::TpmWriter::new(&mut buf);
        let ack = TpmsAuthResponse {
            nonce: Default::default(),
            session_attributes: TpmaSession::CONTINUE_SESSION,
            hmac: Default::default(),
        };
        tpm2_protocol::frame::tpm_marshal_response(
            resp,
            TpmRc::Fmt0(TpmRcBase::Success),
            &[ack],
            &mut w,
        )
        .unwrap();
        let n = w.len();
        buf.truncate(n);
        buf
    }

    #[test]
    fn provisioning_sends_the_standard_sequence_and_tolerates_a_concurrent_creator() {
        use tpm2_protocol::data::{TpmRh, TpmSt, TpmtTkCreation};
        let srk_public = commands::tpm2b_public(commands::srk_template());
        let ticket = TpmtTkCreation {
            tag: TpmSt::Creation,
            hierarchy: TpmRh::Owner,
            digest: Default::default(),
        };
        let name = tpm2_protocol::data::Tpm2bName::try_from(&[0u8, 0x0b, 1, 2, 3][..]).unwrap();
        let create_primary = session_response(&TpmCreatePrimaryResponse {
            handles: [TpmHandle::new(0x8000_0000)],
            out_public: srk_public.clone(),
            creation_data: Default::default(),
            creation_hash: Default::default(),
            creation_ticket: ticket,
            name,
        });
        let create = session_response(&TpmCreateResponse {
            handles: [],
            out_private: tpm2_protocol::data::Tpm2bPrivate::try_from(&[7u8; 100][..]).unwrap(),
            out_public: commands::tpm2b_public(commands::signing_key_template(
                Algorithm::EcdsaP256,
            )),
            creation_data: Default::default(),
            creation_hash: Default::default(),
            creation_ticket: ticket,
        });
        let load = session_response(&TpmLoadResponse {
            handles: [TpmHandle::new(0x8000_0001)],
            name,
        });
        let missing = vec![0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x01, 0x8b];
        let nv_defined = vec![0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x01, 0x4c];
        let existing = include_bytes!("testdata/readpublic-ecdsa-p256.bin").to_vec();
        let (tcti, server) = fake_tpm(vec![
            missing,
            create_primary,
            create,
            load,
            nv_defined,
            OK.to_vec(),
            OK.to_vec(),
            existing,
        ]);
        let opts = KeyOptions {
            tcti: Some(tcti.to_string()),
            ..Default::default()
        };
        let key = NativeTpmKey::open_persistent(
            0x8100_0001,
            &opts,
            OpenMode::CreateIfAbsent(Algorithm::EcdsaP256),
        )
        .unwrap();
        assert_eq!(
            key.public_key_der(),
            include_bytes!("testdata/ecdsa-p256.spki.der")
        );
        // ReadPublic, CreatePrimary, Create, Load, EvictControl, FlushContext (key, then SRK),
        // ReadPublic.
        assert_eq!(
            server.join().unwrap(),
            vec![0x173, 0x131, 0x153, 0x157, 0x120, 0x165, 0x165, 0x173]
        );
    }

    #[test]
    fn debug_output_hides_the_auth_value() {
        let key = NativeTpmKey {
            tcti: Tcti::Device("/dev/tpmrm0".into()),
            location: Location::Persistent(0x8100_0001),
            algorithm: Algorithm::EcdsaP256,
            spki: vec![],
            auth: Secret::new("s3cret-auth-value"),
        };
        let shown = format!("{key:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }
}
