//! `hybridboot serve`: IMDSv2 on 127.0.0.1 (the socket loop around the pure [`imds`]) with Roles
//! Anywhere credentials refreshed by a background thread on the schedule of
//! [`refresh::next_delay`].
//!
//! Requests whose `Host` is not a loopback name with this port or the IMDS address are refused
//! before anything else ([`imds::check_host`]: DNS rebinding). Idle clients cannot lock others
//! out (slowloris): a client has [`SERVE_HEAD_TIMEOUT`] to send its whole request, and when
//! [`SERVE_MAX_CONNECTIONS`] are open a new connection closes the one that has waited longest
//! for its request head, so a client that sends its request at once is served however many idle
//! sockets are open.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::credentials::Credentials;
use super::session::{RolesAnywhereSettings, Session};
use super::{imds, refresh, rolesanywhere};
use crate::error::{cause_chain, Class, WithClass};
use crate::retry::RetryPolicy;
use anyhow::Context;

/// Longest time a client may take to send its whole request (SDKs send it at once).
pub const SERVE_HEAD_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest time writing a response may take.
const SERVE_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections handled at once; beyond that a new one evicts the longest-waiting idle one.
pub const SERVE_MAX_CONNECTIONS: usize = 64;

/// The open connections: how many, and those still waiting for their request head (the ones
/// that may be evicted), oldest first.
#[derive(Default)]
struct Connections {
    active: usize,
    next_id: u64,
    waiting: Vec<(u64, TcpStream)>,
}

fn lock(c: &Mutex<Connections>) -> std::sync::MutexGuard<'_, Connections> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}

impl Connections {
    /// Admits a new connection: `None` when it must be dropped. At the limit, the connection
    /// waiting longest for its request head is shut down to make room.
    fn admit(&mut self, stream: &TcpStream) -> Option<u64> {
        if self.active >= SERVE_MAX_CONNECTIONS {
            if self.waiting.is_empty() || self.active >= 2 * SERVE_MAX_CONNECTIONS {
                return None;
            }
            let (_, oldest) = self.waiting.remove(0);
            let _ = oldest.shutdown(Shutdown::Both);
            log::debug!(
                "IMDS: {SERVE_MAX_CONNECTIONS} connections open: closed the longest idle one"
            );
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        if let Ok(clone) = stream.try_clone() {
            self.waiting.push((id, clone));
        }
        self.active += 1;
        Some(id)
    }

    /// The connection's request head is in: it can no longer be evicted.
    fn head_done(&mut self, id: u64) {
        self.waiting.retain(|(i, _)| *i != id);
    }

    fn closed(&mut self, id: u64) {
        self.head_done(id);
        self.active = self.active.saturating_sub(1);
    }
}

#[derive(Default)]
struct Current {
    credentials: Option<Credentials>,
    last_updated: Option<SystemTime>,
}

/// Emulates IMDSv2 on 127.0.0.1 with Roles Anywhere credentials refreshed in the background.
/// When no valid credentials are at hand the answer is an error status, never empty or expired
/// keys.
pub fn serve(settings: &RolesAnywhereSettings, port: u16) -> anyhow::Result<()> {
    let session = settings.prepare()?;
    drop(session.open_key()?);
    let role_name = settings
        .role_arn
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or("hybridboot")
        .to_string();
    let listener = TcpListener::bind(("127.0.0.1", port))
        .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))
        .with_class(Class::Operator)?;
    let port = listener.local_addr()?.port();
    log::info!("serving IMDSv2 on http://127.0.0.1:{port}/ (role {role_name})");

    let current: Arc<Mutex<Current>> = Arc::default();
    {
        let current = Arc::clone(&current);
        std::thread::spawn(move || refresher(session, current));
    }
    let imds = Arc::new(Mutex::new(imds::Imds::new(role_name)));
    let conns: Arc<Mutex<Connections>> = Arc::default();
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                log::warn!("accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let Some(id) = lock(&conns).admit(&stream) else {
            drop(stream);
            continue;
        };
        let (imds, current, mine) = (Arc::clone(&imds), Arc::clone(&current), Arc::clone(&conns));
        let spawned = std::thread::Builder::new().spawn(move || {
            let head_done = || lock(&mine).head_done(id);
            if let Err(e) = serve_one(stream, port, &imds, &current, head_done) {
                log::debug!("IMDS connection: {e}");
            }
            lock(&mine).closed(id);
        });
        if let Err(e) = spawned {
            log::warn!("IMDS: cannot start a connection thread: {e}");
            lock(&conns).closed(id);
        }
    }
    Ok(())
}

fn refresher(session: Session, current: Arc<Mutex<Current>>) {
    let policy = RetryPolicy {
        max_attempts: 2,
        ..rolesanywhere::interactive_policy()
    };
    let mut failures = 0u32;
    loop {
        let expiration = match session.fetch(&policy) {
            Ok(c) => {
                failures = 0;
                let exp = c.expiration;
                let mut cur = current.lock().unwrap_or_else(|p| p.into_inner());
                cur.credentials = Some(c);
                cur.last_updated = Some(SystemTime::now());
                exp
            }
            Err(e) => {
                failures += 1;
                let cur = current.lock().unwrap_or_else(|p| p.into_inner());
                log::error!(
                    "{}; serving the previous credentials while they are valid",
                    cause_chain(&e)
                );
                cur.credentials.as_ref().and_then(|c| c.expiration)
            }
        };
        std::thread::sleep(refresh::next_delay(SystemTime::now(), expiration, failures));
    }
}

fn serve_one(
    mut stream: TcpStream,
    port: u16,
    imds: &Mutex<imds::Imds>,
    current: &Mutex<Current>,
    head_done: impl FnOnce(),
) -> std::io::Result<()> {
    stream.set_write_timeout(Some(SERVE_WRITE_TIMEOUT))?;
    let deadline = Instant::now() + SERVE_HEAD_TIMEOUT;
    let cap = imds::MAX_HEAD_BYTES + imds::MAX_BODY_BYTES;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let response = loop {
        match imds::parse_request(&buf) {
            imds::Parse::Complete { request, .. } => {
                head_done();
                if let Some(refused) = imds::check_host(&request, port) {
                    log::debug!(
                        "IMDS {} {} -> {} (Host)",
                        request.method,
                        request.path,
                        refused.status
                    );
                    break refused;
                }
                let cur = current.lock().unwrap_or_else(|p| p.into_inner());
                let view = imds::CredentialView {
                    credentials: cur.credentials.as_ref(),
                    last_updated: cur.last_updated.unwrap_or(SystemTime::UNIX_EPOCH),
                };
                let mut imds = imds.lock().unwrap_or_else(|p| p.into_inner());
                let r = imds.handle(&request, SystemTime::now(), view, imds::random_token);
                log::debug!("IMDS {} {} -> {}", request.method, request.path, r.status);
                break r;
            }
            imds::Parse::Reject(r) => {
                head_done();
                break r;
            }
            imds::Parse::Incomplete => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if buf.len() >= cap || left.is_zero() {
            return Ok(());
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        let take = n.min(cap - buf.len());
        buf.extend_from_slice(&chunk[..take]);
    };
    stream.write_all(&response.to_bytes())?;
    stream.flush()
}
