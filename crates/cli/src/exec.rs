//! Running a command in a VM through its guest agent: `vm.exec` on a dedicated RPC
//! connection, which the daemon then turns into one relayed `banger-channel` session
//! (stdin, stdout, stderr, signals, window size, exit status).
//!
//! With a pseudo-terminal (an interactive shell on a terminal) the local terminal is
//! put in raw mode, so ctrl-c and friends travel as bytes to the guest's terminal,
//! which delivers them to its foreground job; window-size changes follow as `resize`
//! messages. Without one, ctrl-c, SIGTERM and SIGHUP are forwarded as signals to the
//! process group in the guest, and banger waits for its exit status.

use crate::daemon;
use anyhow::{bail, Context};
use banger_channel::tokio::{Config, Connection, Session};
use banger_channel::{Command, Control, ErrorKind, ExitStatus, Stream, WinSize};
use banger_model::Layout;
use banger_rpc::{VmExec, VmExecParams};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Read};
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::signal::unix::{signal, SignalKind};

/// How long the daemon may take to speak the channel after answering `vm.exec`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Exit status when the program does not exist in the guest (as a shell says).
const EXIT_NOT_FOUND: i32 = 127;
/// Exit status when the program cannot be executed (as a shell says).
const EXIT_NOT_EXECUTABLE: i32 = 126;
/// Exit status when banger (or the agent) failed before the command ran.
const EXIT_BANGER_FAILED: i32 = 125;

/// What to run.
#[derive(Debug, Clone)]
pub struct Request {
    /// Program and arguments, shell line, or login shell.
    pub command: Command,
    /// Working directory in the guest (default: the image's, else the user's home).
    pub cwd: Option<String>,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Run it on a pseudo-terminal sized like ours.
    pub pty: bool,
    /// Prefix the image's entrypoint (`vm run`, like `docker run`).
    pub entrypoint: bool,
}

impl Request {
    /// The command for `argv` with ssh's meaning, which `vm ssh` and `vm run` always
    /// had: one argument is a shell line, several are a program and its arguments,
    /// none is a login shell.
    pub fn from_argv(argv: &[String]) -> Self {
        let command = match argv {
            [] => Command::LoginShell,
            [one] => Command::Shell(one.clone()),
            many => Command::Argv(many.to_vec()),
        };
        Self {
            command,
            cwd: None,
            env: BTreeMap::new(),
            pty: false,
            entrypoint: false,
        }
    }

    /// Use a pseudo-terminal when a person is at a terminal: stdin is one, and either
    /// the command is a shell or stdout is one too (`ssh -t`'s rule).
    pub fn pty_if_interactive(mut self) -> Self {
        self.pty = std::io::stdin().is_terminal()
            && (matches!(self.command, Command::LoginShell) || std::io::stdout().is_terminal());
        self
    }
}

/// Where the command's stdin comes from.
pub enum Input {
    /// banger's own stdin.
    Inherit,
    /// Nothing (end of file at once).
    Null,
    /// A reader, read on its own thread (a tar stream being produced).
    Reader(Box<dyn Read + Send>),
}

/// An output sink of the command.
pub type Sink<'a> = &'a mut (dyn AsyncWrite + Unpin + Send);

/// Run `req` in VM `vm`; stdout goes to `out`, stderr to banger's stderr. Returns the
/// exit status as a shell reports it (128 + n for signal n; 127/126 when the program
/// is missing or not executable; 125 when the agent refused to start it).
pub async fn run(vm: &str, req: Request, input: Input, out: Sink<'_>) -> anyhow::Result<i32> {
    run_to(vm, req, input, out, &mut tokio::io::stderr()).await
}

/// [`run`] with the command's stderr going to `err`.
pub async fn run_to(
    vm: &str,
    req: Request,
    input: Input,
    out: Sink<'_>,
    err: Sink<'_>,
) -> anyhow::Result<i32> {
    let layout = Layout::for_client();
    let client = daemon::connect(&layout).await?;
    let pty = req.pty.then(terminal_size);
    let params = VmExecParams {
        name: vm.to_string(),
        command: req.command,
        env: req.env,
        cwd: req.cwd,
        user: None,
        pty,
        entrypoint: req.entrypoint,
    };
    let (res, io) = client.call_upgrade::<VmExec>(&params, |_| {}).await?;
    let conn = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        Connection::handshake(io, Config::client(software())),
    )
    .await
    .map_err(|_| anyhow::anyhow!("the daemon did not start the exec channel in time"))?
    .context("starting the exec channel with the daemon")?;
    let s = conn.attach(res.session)?;
    match s.control().await? {
        Some(Control::Started { .. }) => {}
        Some(Control::Error(e)) => {
            anstream::eprintln!("banger: {}", e.message);
            return Ok(match e.kind {
                ErrorKind::NotFound => EXIT_NOT_FOUND,
                ErrorKind::NotExecutable => EXIT_NOT_EXECUTABLE,
                _ => EXIT_BANGER_FAILED,
            });
        }
        Some(other) => bail!("the guest agent answered {other:?} instead of starting the command"),
        None => bail!("the exec session ended before the command started"),
    }
    let _raw = if pty.is_some() {
        RawMode::enter()
    } else {
        None
    };
    let status = drive(&s, input, out, err, pty.is_some()).await;
    s.close();
    conn.close("the command ended");
    match status {
        Ok(x) => Ok(exit_code(&x)),
        // Our reader went away (`| head`): the guest process is hung up with the
        // session; end quietly, as a process killed by SIGPIPE would.
        Err(e) if is_broken_pipe(&e) => Ok(128 + libc::SIGPIPE),
        Err(e) => Err(e),
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn software() -> String {
    format!("banger {}", banger_buildinfo::VERSION)
}

/// Pump stdin, stdout and stderr, forward signals and resizes, and wait for the exit.
async fn drive(
    s: &Session,
    input: Input,
    out: Sink<'_>,
    err: Sink<'_>,
    pty: bool,
) -> anyhow::Result<ExitStatus> {
    let stdin = pump_in(s, input);
    let stdout = async {
        while let Some(chunk) = s.read(Stream::Out).await? {
            out.write_all(&chunk).await?;
            out.flush().await?;
        }
        anyhow::Ok(())
    };
    let stderr = async {
        while let Some(chunk) = s.read(Stream::Err).await? {
            err.write_all(&chunk).await?;
            err.flush().await?;
        }
        anyhow::Ok(())
    };
    let signals = forward_signals(s, pty);
    let outputs = async {
        let (o, e) = tokio::join!(stdout, stderr);
        o.context("relaying the command's output")?;
        e.context("relaying the command's error output")?;
        loop {
            match s.control().await? {
                Some(Control::Exit(x)) => return anyhow::Ok(x),
                Some(Control::Error(e)) => bail!("{}", e.message),
                Some(_) => continue,
                None => bail!("the exec session ended without an exit status"),
            }
        }
    };
    tokio::select! {
        r = outputs => r,
        // These only end on a failure to set up; the outputs decide otherwise.
        () = stdin => std::future::pending().await,
        e = signals => Err(e),
    }
}

/// Copy `input` into the session's stdin, then send its end. Reading happens on a
/// plain thread: a blocked read of a terminal must not keep the runtime from exiting.
async fn pump_in(s: &Session, input: Input) {
    let reader: Box<dyn Read + Send> = match input {
        Input::Null => {
            let _ = s.eof(Stream::In);
            return std::future::pending().await;
        }
        Input::Inherit => Box::new(std::io::stdin()),
        Input::Reader(r) => r,
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    std::thread::spawn(move || {
        let mut reader = reader;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    while let Some(chunk) = rx.recv().await {
        if s.write_all(Stream::In, &chunk).await.is_err() {
            return std::future::pending().await;
        }
    }
    let _ = s.eof(Stream::In);
    std::future::pending().await
}

/// Forward what the user does to the guest until a failure (returned): window sizes
/// on a pty; ctrl-c, SIGTERM and SIGHUP as signals otherwise (on a pty, ctrl-c is a
/// byte the guest's terminal turns into SIGINT for its foreground job).
async fn forward_signals(s: &Session, pty: bool) -> anyhow::Error {
    let setup = || -> std::io::Result<_> {
        Ok((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
            signal(SignalKind::hangup())?,
            signal(SignalKind::window_change())?,
        ))
    };
    let (mut int, mut term, mut hup, mut winch) = match setup() {
        Ok(s) => s,
        Err(e) => return anyhow::Error::new(e).context("watching for signals"),
    };
    loop {
        let msg = tokio::select! {
            _ = int.recv() => (!pty).then_some(Control::Signal { signal: libc::SIGINT }),
            _ = term.recv() => Some(Control::Signal { signal: libc::SIGTERM }),
            _ = hup.recv() => Some(Control::Signal { signal: libc::SIGHUP }),
            _ = winch.recv() => pty.then(|| Control::Resize(terminal_size())),
        };
        if let Some(m) = msg {
            // A session that ended is noticed by the output side.
            let _ = s.send(&m);
        }
    }
}

/// The exit status as a shell reports it.
fn exit_code(x: &ExitStatus) -> i32 {
    match (x.code, x.signal) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        (None, None) => EXIT_BANGER_FAILED,
    }
}

/// The local terminal's size (80x24 when it has none).
fn terminal_size() -> WinSize {
    for fd in [libc::STDOUT_FILENO, libc::STDIN_FILENO, libc::STDERR_FILENO] {
        // SAFETY: TIOCGWINSZ writes a winsize into the struct we pass.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_row > 0 {
            return WinSize {
                rows: ws.ws_row,
                cols: ws.ws_col,
            };
        }
    }
    WinSize { rows: 24, cols: 80 }
}

/// The terminal in raw mode while an interactive session runs; restored on drop.
struct RawMode(libc::termios);

impl RawMode {
    fn enter() -> Option<Self> {
        // SAFETY: tcgetattr fills the termios we pass; fd 0 is ours.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut t) } != 0 {
            return None;
        }
        let saved = t;
        // SAFETY: cfmakeraw edits the struct; tcsetattr applies it to our terminal.
        unsafe {
            libc::cfmakeraw(&mut t);
            if libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t) != 0 {
                return None;
            }
        }
        Some(RawMode(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the attributes saved by `enter`.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_keeps_sshs_meaning_and_statuses_read_like_a_shells() {
        assert_eq!(Request::from_argv(&[]).command, Command::LoginShell);
        assert_eq!(
            Request::from_argv(&["cd /tmp && ls".into()]).command,
            Command::Shell("cd /tmp && ls".into())
        );
        assert_eq!(
            Request::from_argv(&["sh".into(), "-c".into(), "exit 3".into()]).command,
            Command::Argv(vec!["sh".into(), "-c".into(), "exit 3".into()])
        );
        let x = |code, signal| ExitStatus {
            code,
            signal,
            core_dumped: false,
        };
        assert_eq!(exit_code(&x(Some(3), None)), 3);
        assert_eq!(exit_code(&x(None, Some(2))), 130);
    }
}
