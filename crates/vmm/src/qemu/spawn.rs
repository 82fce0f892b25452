//! Starting QEMU in a session of its own with the descriptors it inherits (see the
//! module docs of [`super`] for why there is no `-daemonize`).

use super::{files, Inherited, Qemu, READY_TIMEOUT};
use crate::{process, Handles, MachineSpec, VmmError};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

impl Qemu {
    /// Start QEMU for `spec` in its own session and wait until QMP answers; `tap`,
    /// when given, is inherited as the guest's tap, and `spec.restore`'s state file
    /// is opened here (read-only) and inherited for `-incoming fd:N`.
    pub(super) async fn spawn(
        &self,
        spec: &MachineSpec,
        tap: Option<OwnedFd>,
    ) -> Result<Handles, VmmError> {
        let rt = &spec.runtime_dir;
        for f in [files::QMP, files::AGENT, files::PID] {
            let _ = std::fs::remove_file(rt.join(f));
        }
        let io = |what: String| move |source| VmmError::Io { what, source };
        // QEMU appends (append=on), so a new boot's log is emptied here.
        let console = rt.join(files::CONSOLE);
        crate::console::create_for_append(&console)
            .map_err(io(format!("create {}", console.display())))?;
        let log_path = rt.join(files::LOG);
        let log = std::fs::File::create(&log_path)
            .map_err(io(format!("create {}", log_path.display())))?;
        let log_err = log
            .try_clone()
            .map_err(io(format!("duplicate {}", log_path.display())))?;
        // The daemon's own file, opened without following a link planted in its place.
        let state = match &spec.restore {
            Some(path) => Some(super::migrate::open_state(path)?),
            None => None,
        };
        let fds = Inherited {
            tap: tap.as_ref().map(AsRawFd::as_raw_fd),
            state: state.as_ref().map(AsRawFd::as_raw_fd),
        };
        let inherit: Vec<i32> = [fds.tap, fds.state].into_iter().flatten().collect();
        let mut cmd = tokio::process::Command::new(&self.binary);
        cmd.args(self.args_for(spec, fds))
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log_err);
        // SAFETY: between fork and exec only async-signal-safe calls (setsid, fcntl)
        // on descriptor numbers taken before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The descriptors are close-on-exec in the daemon; QEMU inherits them.
                for &fd in &inherit {
                    if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => VmmError::Missing(self.binary.clone()),
            _ => VmmError::Io {
                what: format!("run {}", self.binary),
                source: e,
            },
        })?;
        // QEMU holds the tap and the state now; the daemon's copies go.
        drop(tap);
        drop(state);
        let pid = child.id().unwrap_or(0);
        let control_socket = rt.join(files::QMP);
        let t = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let msg = crate::firecracker::output_tail(&log_path, 20);
                return Err(if spec.restore.is_some() {
                    VmmError::Snapshot(format!(
                        "QEMU exited ({status}) while loading the saved state (a corrupt or \
                         incompatible snapshot?): {msg}"
                    ))
                } else {
                    VmmError::Launch(format!("QEMU exited ({status}): {msg}"))
                });
            }
            let answer =
                crate::qmp::execute(&control_socket, "query-status", Duration::from_millis(500))
                    .await;
            if answer.is_ok() {
                break;
            }
            if t.elapsed() > READY_TIMEOUT {
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Err(VmmError::Launch(format!(
                    "QEMU did not answer on {} within {READY_TIMEOUT:?}; its output: {}",
                    control_socket.display(),
                    crate::firecracker::output_tail(&log_path, 20)
                )));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        // Dropping a tokio Child neither kills nor leaks it: tokio reaps it once it
        // exits.
        drop(child);
        // Recorded only while the pid still runs our QEMU (tagged by its QMP path).
        let start_time = process::start_time(pid)
            .filter(|_| process::alive_with_tag(pid, &control_socket.display().to_string()));
        Ok(Handles {
            backend: "qemu".into(),
            pid,
            start_time,
            tag: None,
            control_socket,
            agent_socket: rt.join(files::AGENT),
            console_log: rt.join(files::CONSOLE),
            accel: self.accel,
        })
    }
}
