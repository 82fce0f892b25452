//! Exec sessions as the daemon uses them: stdin as an `AsyncWrite`, stdout and stderr
//! as `AsyncRead`s, signals, resizes, and the exit status.

use super::{AgentClient, ClientError};
use banger_channel::tokio::{Session, StreamReader, StreamWriter};
use banger_channel::{Command, Control, Exec, ExitStatus, Open, Stream, WinSize};

/// An exec request for a program and its arguments (root, default environment).
pub fn argv<I, S>(args: I) -> Exec
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    plain(Command::Argv(args.into_iter().map(Into::into).collect()))
}

/// An exec request for a `/bin/sh -c` line.
pub fn shell(line: impl Into<String>) -> Exec {
    plain(Command::Shell(line.into()))
}

fn plain(command: Command) -> Exec {
    Exec {
        command,
        env: Default::default(),
        clear_env: false,
        cwd: None,
        user: None,
        pty: None,
    }
}

/// A running process in the guest. Each of stdin, stdout, stderr and [`wait`] may be
/// driven from its own task; dropping the session (every clone of its parts) hangs the
/// process up.
///
/// [`wait`]: ExecSession::wait
#[derive(Debug, Clone)]
pub struct ExecSession {
    session: Session,
    pid: u32,
}

impl ExecSession {
    /// The process id in the guest.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The process's stdin; shut it down (`AsyncWriteExt::shutdown`) for end of file.
    pub fn stdin(&self) -> StreamWriter {
        self.session.writer(Stream::In)
    }

    /// The process's stdout (on a pty: the terminal's output).
    pub fn stdout(&self) -> StreamReader {
        self.session.reader(Stream::Out)
    }

    /// The process's stderr (empty on a pty).
    pub fn stderr(&self) -> StreamReader {
        self.session.reader(Stream::Err)
    }

    /// Deliver `signal` to the process group (on a pty: the terminal's foreground group).
    pub fn signal(&self, signal: i32) -> Result<(), ClientError> {
        Ok(self.session.send(&Control::Signal { signal })?)
    }

    /// Tell the pty its new size.
    pub fn resize(&self, rows: u16, cols: u16) -> Result<(), ClientError> {
        Ok(self
            .session
            .send(&Control::Resize(WinSize { rows, cols }))?)
    }

    /// Wait for the process to end. Its output streams ended before this returns, but
    /// read them concurrently: unread output holds the process up (flow control).
    pub async fn wait(&self) -> Result<ExitStatus, ClientError> {
        loop {
            match self.session.control().await? {
                Some(Control::Exit(x)) => return Ok(x),
                Some(Control::Error(e)) => return Err(ClientError::Refused(e)),
                Some(_) => continue,
                None => return Err(ClientError::NoAnswer),
            }
        }
    }

    /// The underlying channel session (to relay it elsewhere).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Hang the process up now.
    pub fn close(&self) {
        self.session.close();
    }
}

impl AgentClient {
    /// Start `req` in the guest; returns once the process runs (or why it could not:
    /// [`ClientError::Refused`] with the agent's [`banger_channel::ErrorKind`]).
    pub async fn exec(&self, req: Exec) -> Result<ExecSession, ClientError> {
        let session = self.open(&Open::Exec(req)).await?;
        match session.control().await? {
            Some(Control::Started { pid }) => Ok(ExecSession {
                session,
                pid: pid.unwrap_or(0),
            }),
            Some(Control::Error(e)) => Err(ClientError::Refused(e)),
            Some(c) => Err(ClientError::Unexpected {
                request: "exec",
                answer: format!("{c:?}"),
            }),
            None => Err(ClientError::NoAnswer),
        }
    }
}
