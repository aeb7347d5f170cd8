//! Moving TPM command and response frames: to a Linux TPM character device (`/dev/tpmrm0`,
//! `/dev/tpm0`) or to swtpm's TCP server port.
//!
//! Both carry the plain TPM 2.0 command stream: write one command frame, read one response
//! frame. swtpm's `--server type=tcp` port does *not* use the Microsoft simulator framing (that is
//! why tpm2-tss's `mssim:` TCTI cannot talk to swtpm), so no framing is added here.
//!
//! Everything read from the TPM is untrusted: the response size field is checked against
//! [`MAX_RESPONSE`] before anything is allocated or read.

use std::fmt;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

/// Size of a TPM response header: tag (2), size (4), response code (4).
pub const HEADER_LEN: usize = 10;
/// The largest response accepted. TPMs answer at most `TPM_MAX_COMMAND_SIZE` (4096) bytes in
/// practice; anything claiming more is malformed.
pub const MAX_RESPONSE: usize = 8192;
/// The default TCTI when none is configured (the kernel's resource-managed device).
pub const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";

/// How long to wait for a TCP connection to a TPM simulator.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one command may take. RSA key generation on slow discrete TPMs can take tens of
/// seconds.
const IO_TIMEOUT: Duration = Duration::from_secs(120);

/// A parsed TCTI string, in tpm2-tss syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tcti {
    /// `device:/dev/tpmrm0` (a Linux TPM character device).
    Device(PathBuf),
    /// `swtpm:host=H,port=P` (swtpm's TCP server port, plain TPM command stream).
    Swtpm { host: String, port: u16 },
}

impl fmt::Display for Tcti {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tcti::Device(p) => write!(f, "device:{}", p.display()),
            Tcti::Swtpm { host, port } => write!(f, "swtpm:host={host},port={port}"),
        }
    }
}

impl Tcti {
    /// Parses a TCTI string; `None` or empty means [`DEFAULT_TCTI`]. Errors are one sentence
    /// saying what to write instead.
    pub fn parse(text: Option<&str>) -> Result<Tcti, String> {
        let text = text.map(str::trim).filter(|t| !t.is_empty());
        let text = text.unwrap_or(DEFAULT_TCTI);
        let (name, conf) = text.split_once(':').unwrap_or((text, ""));
        match name {
            "device" => {
                let path = conf.strip_prefix("path=").unwrap_or(conf);
                if path.is_empty() {
                    Ok(Tcti::Device(PathBuf::from("/dev/tpmrm0")))
                } else if path.starts_with('/') {
                    Ok(Tcti::Device(PathBuf::from(path)))
                } else {
                    Err(format!(
                        "the device TCTI needs an absolute path, e.g. device:/dev/tpmrm0 (got {path:?})"
                    ))
                }
            }
            "swtpm" => {
                let mut host = "localhost".to_string();
                let mut port = 2321u16;
                for part in conf.split(',').filter(|p| !p.is_empty()) {
                    match part.split_once('=') {
                        Some(("host", h)) if !h.is_empty() => host = h.to_string(),
                        Some(("port", p)) => {
                            port = p.parse().ok().filter(|p| *p != 0).ok_or_else(|| {
                                format!("swtpm port {p:?} is not a TCP port number")
                            })?
                        }
                        _ => {
                            return Err(format!(
                                "unknown swtpm TCTI option {part:?}: use swtpm:host=127.0.0.1,port=2321"
                            ))
                        }
                    }
                }
                Ok(Tcti::Swtpm { host, port })
            }
            "mssim" => Err("the mssim TCTI (Microsoft simulator framing) is not supported by the native TPM backend, and swtpm does not speak it either: for swtpm use swtpm:host=..,port=..".into()),
            "tabrmd" => Err("the tabrmd TCTI (D-Bus resource manager) is not supported by the native TPM backend: use device:/dev/tpmrm0, the kernel's resource manager".into()),
            _ => Err(format!(
                "unknown TCTI {name:?}: use device:/dev/tpmrm0, device:/dev/tpm0 or swtpm:host=..,port=.."
            )),
        }
    }
}

/// Why a transport failed.
#[derive(Debug)]
pub enum TransportError {
    /// The TPM could not be reached at all (device missing, connection refused, timeout):
    /// retrying later may help.
    Unreachable(String),
    /// The TPM device exists but this user may not open it.
    PermissionDenied(String),
    /// The peer answered something that is not a TPM response frame.
    Malformed(String),
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::Unreachable(m)
            | TransportError::PermissionDenied(m)
            | TransportError::Malformed(m) => f.write_str(m),
        }
    }
}

enum Channel {
    Device(std::fs::File),
    Tcp(TcpStream),
}

/// One open connection to a TPM. Commands are strictly sequential.
pub struct Transport {
    tcti: Tcti,
    channel: Channel,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Transport({})", self.tcti)
    }
}

impl Transport {
    /// Opens the device or connects to the simulator.
    pub fn open(tcti: &Tcti) -> Result<Transport, TransportError> {
        let channel = match tcti {
            Tcti::Device(path) => {
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .map_err(|e| match e.kind() {
                        std::io::ErrorKind::PermissionDenied => TransportError::PermissionDenied(
                            format!(
                                "permission denied opening {} (run as root or as a member of the group owning it, usually tss)",
                                path.display()
                            ),
                        ),
                        _ => TransportError::Unreachable(format!(
                            "cannot open {}: {e}",
                            path.display()
                        )),
                    })?;
                Channel::Device(file)
            }
            Tcti::Swtpm { host, port } => {
                let addrs: Vec<_> = (host.as_str(), *port)
                    .to_socket_addrs()
                    .map_err(|e| {
                        TransportError::Unreachable(format!("cannot resolve {host}: {e}"))
                    })?
                    .collect();
                let mut last = None;
                let mut stream = None;
                for addr in addrs {
                    match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                        Ok(s) => {
                            stream = Some(s);
                            break;
                        }
                        Err(e) => last = Some(e.to_string()),
                    }
                }
                let stream = stream.ok_or_else(|| {
                    TransportError::Unreachable(format!(
                        "cannot connect to {host}:{port}: {}",
                        last.unwrap_or_else(|| "no address".into())
                    ))
                })?;
                let _ = stream.set_nodelay(true);
                stream
                    .set_read_timeout(Some(IO_TIMEOUT))
                    .and_then(|_| stream.set_write_timeout(Some(IO_TIMEOUT)))
                    .map_err(|e| TransportError::Unreachable(format!("socket setup: {e}")))?;
                Channel::Tcp(stream)
            }
        };
        Ok(Transport {
            tcti: tcti.clone(),
            channel,
        })
    }

    /// The TCTI this transport talks to.
    pub fn tcti(&self) -> &Tcti {
        &self.tcti
    }

    /// Sends one command frame and returns the response frame (header checked for size only).
    pub fn transact(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        let io = |what: &str, e: std::io::Error| {
            TransportError::Unreachable(format!("{what} {}: {e}", self.tcti))
        };
        match &mut self.channel {
            Channel::Device(file) => {
                // The kernel driver takes the whole command in one write and returns the whole
                // response in one read.
                file.write_all(command)
                    .map_err(|e| io("writing a command to", e))?;
                let mut buf = vec![0u8; MAX_RESPONSE];
                let n = file
                    .read(&mut buf)
                    .map_err(|e| io("reading a response from", e))?;
                buf.truncate(n);
                check_frame_size(&buf)?;
                Ok(buf)
            }
            Channel::Tcp(stream) => {
                stream
                    .write_all(command)
                    .map_err(|e| io("sending a command to", e))?;
                let mut header = [0u8; HEADER_LEN];
                stream
                    .read_exact(&mut header)
                    .map_err(|e| io("reading a response header from", e))?;
                let size = declared_size(&header)?;
                let mut buf = Vec::with_capacity(size);
                buf.extend_from_slice(&header);
                buf.resize(size, 0);
                stream
                    .read_exact(&mut buf[HEADER_LEN..])
                    .map_err(|e| io("reading a response body from", e))?;
                Ok(buf)
            }
        }
    }
}

/// The size a response header declares, if it is plausible.
fn declared_size(header: &[u8]) -> Result<usize, TransportError> {
    if header.len() < HEADER_LEN {
        return Err(TransportError::Malformed(format!(
            "TPM response of {} bytes is shorter than a header",
            header.len()
        )));
    }
    let size = u32::from_be_bytes([header[2], header[3], header[4], header[5]]) as usize;
    if !(HEADER_LEN..=MAX_RESPONSE).contains(&size) {
        return Err(TransportError::Malformed(format!(
            "TPM response declares {size} bytes (allowed {HEADER_LEN}..={MAX_RESPONSE})"
        )));
    }
    Ok(size)
}

/// Checks that a whole frame read at once is exactly as long as its header says.
pub fn check_frame_size(frame: &[u8]) -> Result<(), TransportError> {
    let size = declared_size(frame)?;
    if size != frame.len() {
        return Err(TransportError::Malformed(format!(
            "TPM response declares {size} bytes but {} arrived",
            frame.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcti_strings_parse_like_tpm2_tss() {
        assert_eq!(
            Tcti::parse(None).unwrap(),
            Tcti::Device("/dev/tpmrm0".into())
        );
        assert_eq!(
            Tcti::parse(Some("device:/dev/tpm0")).unwrap(),
            Tcti::Device("/dev/tpm0".into())
        );
        assert_eq!(
            Tcti::parse(Some("device:")).unwrap(),
            Tcti::Device("/dev/tpmrm0".into())
        );
        assert_eq!(
            Tcti::parse(Some("swtpm:host=127.0.0.1,port=2400")).unwrap(),
            Tcti::Swtpm {
                host: "127.0.0.1".into(),
                port: 2400
            }
        );
        assert_eq!(
            Tcti::parse(Some("swtpm:")).unwrap(),
            Tcti::Swtpm {
                host: "localhost".into(),
                port: 2321
            }
        );
        assert_eq!(
            Tcti::parse(Some("swtpm:host=h,port=1"))
                .unwrap()
                .to_string(),
            "swtpm:host=h,port=1"
        );
    }

    #[test]
    fn unsupported_tctis_say_what_to_use() {
        let e = Tcti::parse(Some("mssim:host=localhost,port=2321")).unwrap_err();
        assert!(e.contains("mssim") && e.contains("swtpm:host="), "{e}");
        assert!(Tcti::parse(Some("tabrmd:")).unwrap_err().contains("tpmrm0"));
        assert!(Tcti::parse(Some("swtpm:port=x")).is_err());
        assert!(Tcti::parse(Some("swtpm:port=0")).is_err());
        assert!(Tcti::parse(Some("swtpm:bogus=1")).is_err());
        assert!(Tcti::parse(Some("device:dev/tpm0")).is_err());
        assert!(Tcti::parse(Some("libtpms")).is_err());
    }

    #[test]
    fn response_sizes_are_bounded() {
        let mut frame = vec![0x80, 0x01, 0, 0, 0, 10, 0, 0, 0, 0];
        check_frame_size(&frame).unwrap();
        frame.push(0);
        assert!(check_frame_size(&frame).is_err());
        assert!(check_frame_size(&[0x80, 0x01, 0, 0]).is_err());
        // A header claiming 4 GiB is refused before anything is allocated.
        assert!(declared_size(&[0x80, 0x01, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]).is_err());
        assert!(declared_size(&[0x80, 0x01, 0, 0, 0, 9, 0, 0, 0, 0]).is_err());
    }

    /// A character-device stand-in: a datagram socket pair keeps message boundaries, so each
    /// read returns exactly one "response", as the kernel's TPM device does.
    fn fake_device(answer: Vec<u8>) -> (Transport, std::thread::JoinHandle<Vec<u8>>) {
        let (ours, theirs) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let file = |s| std::fs::File::from(std::os::fd::OwnedFd::from(s));
        let (ours, theirs) = (file(ours), file(theirs));
        let server = std::thread::spawn(move || {
            let mut theirs = theirs;
            let mut buf = vec![0u8; 4096];
            let n = theirs.read(&mut buf).unwrap();
            theirs.write_all(&answer).unwrap();
            buf.truncate(n);
            buf
        });
        let t = Transport {
            tcti: Tcti::Device("/dev/fake-tpm".into()),
            channel: Channel::Device(ours),
        };
        (t, server)
    }

    #[test]
    fn device_channel_writes_one_command_and_reads_one_response() {
        let command = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7b, 0, 8];
        let answer = vec![0x80, 0x01, 0, 0, 0, 12, 0, 0, 0, 0, 0, 0];
        let (mut t, server) = fake_device(answer.clone());
        assert_eq!(t.transact(&command).unwrap(), answer);
        assert_eq!(server.join().unwrap(), command);

        // A response shorter than its size field is refused.
        let (mut t, _server) = fake_device(vec![0x80, 0x01, 0, 0, 0, 40, 0, 0, 0, 0]);
        let e = t.transact(&command).unwrap_err();
        assert!(matches!(e, TransportError::Malformed(_)), "{e}");
    }

    #[test]
    fn refused_connection_is_unreachable() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let err = Transport::open(&Tcti::Swtpm {
            host: "127.0.0.1".into(),
            port,
        })
        .unwrap_err();
        assert!(matches!(err, TransportError::Unreachable(_)), "{err}");
        let err = Transport::open(&Tcti::Device("/nonexistent/tpmrm0".into())).unwrap_err();
        assert!(matches!(err, TransportError::Unreachable(_)), "{err}");
    }
}
