//! The root helper's server: its socket, who may talk to it, and one reply per
//! request line.
//!
//! Every connection's peer is read with SO_PEERCRED; only root and the configured
//! owner are served (anyone else gets one refusal and the connection is closed).
//! Requests are bounded lines ([`MAX_REQUEST_LINE`]); an idle connection is closed
//! after [`IDLE_TIMEOUT`]; at most [`MAX_CONNECTIONS`] are served at once. Every
//! request is logged with the caller's uid and pid and its outcome: the helper's log
//! is the audit trail of everything done as root on banger's behalf.

mod net;
mod overlap;

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use banger_model::Subnet;
use futures::StreamExt;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};

use crate::config::HelperConfig;
use crate::records::Book;
use crate::wire::{send_with_fd, HelperOp, Reply, Request, MAX_REQUEST_LINE};
use crate::HelperError;

/// A connection that sends nothing for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections served at once; more wait to be accepted.
pub const MAX_CONNECTIONS: usize = 32;

/// The helper's state: its config and its record of links.
#[derive(Debug)]
pub struct Server {
    /// The config it was started with.
    pub config: HelperConfig,
    subnet: Subnet,
    book: tokio::sync::Mutex<Book>,
    /// This host's systemd-resolved, when it runs one.
    resolved: Option<banger_host::Resolved>,
    /// The bridge's resolved settings, applied once per bridge.
    link_dns: banger_host::LinkDns,
}

impl Server {
    /// Open the link record and reconcile it with the links that exist.
    pub async fn new(config: HelperConfig) -> Result<Server, HelperError> {
        let book = Book::open(&config.runtime_dir)?;
        let server = Server {
            subnet: config.subnet(),
            config,
            book: tokio::sync::Mutex::new(book),
            resolved: banger_host::Resolved::detect(Path::new(banger_host::RESOLVECTL)),
            link_dns: banger_host::LinkDns::default(),
        };
        server.reconcile().await?;
        Ok(server)
    }

    /// Carry out one request for `caller` (uid). The descriptor, if any, goes with
    /// the reply.
    pub async fn handle(
        &self,
        caller: u32,
        req: Request,
    ) -> Result<(Reply, Option<OwnedFd>), HelperError> {
        match req {
            Request::Priv(op) => {
                op.validate()?;
                self.check_scope(&op, caller)?;
                self.run_priv(op, caller).await?;
                Ok((Reply::ok(), None))
            }
            Request::Helper(HelperOp::Ping {}) => Ok((
                Reply {
                    network: Some(crate::wire::Network {
                        bridge: self.config.bridge.clone(),
                        subnet: self.subnet,
                    }),
                    ..Reply::ok()
                },
                None,
            )),
            Request::Helper(HelperOp::ListTaps {}) => {
                let taps = self.list_taps(caller).await;
                Ok((
                    Reply {
                        taps: Some(taps),
                        ..Reply::ok()
                    },
                    None,
                ))
            }
            Request::Helper(HelperOp::OpenTap { name }) => {
                let fd = self.open_tap(&name, caller).await?;
                Ok((
                    Reply {
                        fd: true,
                        ..Reply::ok()
                    },
                    Some(fd),
                ))
            }
            Request::Helper(HelperOp::LaunchJailed { spec }) => {
                if spec.restore.is_some() {
                    // Jailed restores are not offered: a state file path from a client
                    // is never handed to a VMM.
                    return Err(HelperError::BadRequest(
                        "launch_jailed does not restore snapshots; boot the machine instead".into(),
                    ));
                }
                if let Some(n) = &spec.net {
                    crate::validate::tap_name(&n.tap)?;
                    let book = self.book.lock().await;
                    let rec = self.owned_tap(&book.links, &n.tap, caller).await?;
                    if rec.owner_uid != self.config.owner_uid {
                        return Err(HelperError::NotYours {
                            name: n.tap.clone(),
                            owner: rec.owner_uid,
                            caller: self.config.owner_uid,
                        });
                    }
                }
                let launched = crate::jail::launch(&self.config, &spec).await?;
                Ok((
                    Reply {
                        jail: Some(launched),
                        ..Reply::ok()
                    },
                    None,
                ))
            }
            Request::Helper(HelperOp::CleanupJail { vm_id }) => {
                crate::jail::cleanup(&self.config, &vm_id)?;
                Ok((Reply::ok(), None))
            }
            Request::Helper(HelperOp::BindDns { gateway, proto }) => {
                // Only the configured gateway, only port 53: the owner gets no other
                // privileged port and no address outside banger's subnet.
                let configured = self.subnet.gateway();
                if gateway != configured {
                    return Err(HelperError::NotConfigured {
                        what: "gateway",
                        asked: gateway.to_string(),
                        configured: configured.to_string(),
                    });
                }
                let addr = std::net::SocketAddr::from((gateway, 53));
                let fd = banger_host::dns_socket(addr, proto, true).map_err(|source| {
                    HelperError::DnsBind {
                        addr,
                        proto,
                        source,
                    }
                })?;
                Ok((
                    Reply {
                        fd: true,
                        ..Reply::ok()
                    },
                    Some(fd),
                ))
            }
        }
    }
}

/// Bind the helper's socket at `path`: its directory is created root-owned 0755 if
/// missing, a stale socket nobody answers on is replaced (a live one is refused), and
/// the socket is left 0600 and owned by `owner` (root reaches it anyway).
pub fn bind(path: &Path, owner: u32) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_public_dir(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!(
                        "another banger-helper answers on {}; stop it first",
                        path.display()
                    ),
                ));
            }
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; move it away",
                    path.display()
                ),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    std::os::unix::fs::lchown(path, Some(owner), None)?;
    listener.set_nonblocking(true)?;
    UnixListener::from_std(listener)
}

/// Create `dir` (and missing parents) 0755 whatever the umask, so the owner can
/// reach the socket inside; an existing directory is left as it is.
pub(crate) fn create_public_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_public_dir(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Serve connections until `shutdown` completes.
pub async fn serve(
    listener: UnixListener,
    server: Arc<Server>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            () = &mut shutdown => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => {
                let server = server.clone();
                tokio::spawn(async move {
                    connection(stream, &server).await;
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting a helper connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection(stream: UnixStream, server: &Server) {
    let (uid, pid) = match stream.peer_cred() {
        Ok(c) => (c.uid(), c.pid()),
        Err(e) => {
            tracing::warn!(error = %e, "could not read a helper client's credentials; closing");
            return;
        }
    };
    let (read, mut write) = stream.into_split();
    if uid != 0 && uid != server.config.owner_uid {
        let e = HelperError::Unauthorized {
            uid,
            owner: server.config.owner_uid,
        };
        tracing::warn!(uid, pid, "refused a helper connection from another user");
        let _ = send(&mut write, &Reply::err(&e), None).await;
        return;
    }
    let mut lines = FramedRead::new(read, LinesCodec::new_with_max_length(MAX_REQUEST_LINE));
    loop {
        let next = match tokio::time::timeout(IDLE_TIMEOUT, lines.next()).await {
            Err(_) | Ok(None) => return,
            Ok(Some(n)) => n,
        };
        let line = match next {
            Ok(line) => line,
            Err(LinesCodecError::MaxLineLengthExceeded) => {
                tracing::warn!(uid, pid, "refused an oversized helper request");
                let _ = send(
                    &mut write,
                    &Reply::err(&HelperError::TooLong(MAX_REQUEST_LINE)),
                    None,
                )
                .await;
                return;
            }
            Err(LinesCodecError::Io(e)) => {
                if e.kind() == std::io::ErrorKind::InvalidData {
                    let bad = HelperError::BadRequest("the request is not valid UTF-8".into());
                    let _ = send(&mut write, &Reply::err(&bad), None).await;
                }
                return;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let (reply, fd) = match Request::parse(&line) {
            Err(e) => {
                tracing::warn!(uid, pid, error = %e, "refused a malformed helper request");
                (Reply::err(&e), None)
            }
            Ok(req) => {
                let name = req.name();
                match server.handle(uid, req).await {
                    Ok(r) => {
                        tracing::info!(uid, pid, op = name, "helper request done");
                        r
                    }
                    Err(e) => {
                        tracing::warn!(uid, pid, op = name, error = %e, "helper request refused or failed");
                        (Reply::err(&e), None)
                    }
                }
            }
        };
        if send(&mut write, &reply, fd.as_ref()).await.is_err() {
            return;
        }
    }
}

/// Write one reply line, with `fd` attached to its first bytes.
async fn send(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    reply: &Reply,
    fd: Option<&OwnedFd>,
) -> std::io::Result<()> {
    let line = reply.to_line();
    let bytes = line.as_bytes();
    let Some(fd) = fd else {
        return write.write_all(bytes).await;
    };
    let sock: &UnixStream = write.as_ref();
    let sent = loop {
        sock.writable().await?;
        match sock.try_io(Interest::WRITABLE, || {
            send_with_fd(sock.as_fd(), bytes, Some(fd.as_fd()))
        }) {
            Ok(n) => break n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    };
    write.write_all(&bytes[sent..]).await
}

/// Run the whole helper: bind, serve until SIGINT/SIGTERM, remove the socket.
pub async fn run(config: HelperConfig, socket: &Path) -> Result<(), anyhow::Error> {
    use anyhow::Context;
    let server = Arc::new(
        Server::new(config)
            .await
            .context("opening the helper's link record")?,
    );
    let listener = bind(socket, server.config.owner_uid)
        .with_context(|| format!("binding the helper socket {}", socket.display()))?;
    tracing::info!(
        socket = %socket.display(),
        owner = server.config.owner_uid,
        bridge = %server.config.bridge,
        subnet = %server.config.subnet,
        version = crate::wire::VERSION,
        "banger-helper ready"
    );
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {},
        }
        tracing::info!("banger-helper stopping (taps, NAT and guests stay)");
    };
    serve(listener, server, shutdown).await;
    let _ = std::fs::remove_file(socket);
    Ok(())
}
