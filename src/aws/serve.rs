//! `hybridboot serve`: IMDSv2 on 127.0.0.1 (the socket loop around the pure [`imds`]) with Roles
//! Anywhere credentials refreshed by a background thread on the schedule of
//! [`refresh::next_delay`].

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::credentials::Credentials;
use super::session::{RolesAnywhereSettings, Session};
use super::{imds, refresh, rolesanywhere};
use crate::error::{cause_chain, Class, WithClass};
use crate::retry::RetryPolicy;
use anyhow::Context;

/// Longest time a client may take to send its request.
const SERVE_IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections handled at once; more wait in the kernel's backlog.
const SERVE_MAX_CONNECTIONS: usize = 16;

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
    let active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                log::warn!("accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        use std::sync::atomic::Ordering;
        if active.load(Ordering::SeqCst) >= SERVE_MAX_CONNECTIONS {
            drop(stream);
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let (imds, current, active) =
            (Arc::clone(&imds), Arc::clone(&current), Arc::clone(&active));
        std::thread::spawn(move || {
            if let Err(e) = serve_one(stream, &imds, &current) {
                log::debug!("IMDS connection: {e}");
            }
            active.fetch_sub(1, Ordering::SeqCst);
        });
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
    imds: &Mutex<imds::Imds>,
    current: &Mutex<Current>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(SERVE_IO_TIMEOUT))?;
    stream.set_write_timeout(Some(SERVE_IO_TIMEOUT))?;
    let deadline = std::time::Instant::now() + SERVE_IO_TIMEOUT;
    let cap = imds::MAX_HEAD_BYTES + imds::MAX_BODY_BYTES;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let response = loop {
        match imds::parse_request(&buf) {
            imds::Parse::Complete { request, .. } => {
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
            imds::Parse::Reject(r) => break r,
            imds::Parse::Incomplete => {}
        }
        if buf.len() >= cap || std::time::Instant::now() > deadline {
            return Ok(());
        }
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
