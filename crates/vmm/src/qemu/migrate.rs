//! Warm snapshots with QEMU: its migration stream to and from a file the daemon
//! opened, passed as a descriptor (see [`super`] for why not `exec:`).

use crate::{Handles, VmmError};
use serde_json::json;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

/// How often snapshot saves and loads are polled.
const POLL: Duration = Duration::from_millis(20);
/// The name the state file's descriptor has inside QEMU between `getfd` and `migrate`.
const FD_NAME: &str = "banger-state";

/// QEMU's migration of `h`'s guest to the file `state`: pause, stream, check, fsync.
pub(super) async fn save_state(
    h: &Handles,
    state: &Path,
    timeout: Duration,
) -> Result<(), VmmError> {
    let qmp = &h.control_socket;
    let step = Duration::from_secs(5);
    let err = |e: crate::qmp::QmpError| VmmError::Control {
        path: qmp.clone(),
        reason: e.to_string(),
    };
    // The state file is the daemon's alone: created 0600 here, QEMU only gets the
    // descriptor.
    let file = create_private(state)?;
    let theirs: OwnedFd = file.try_clone().map_err(io(state, "duplicate"))?.into();
    crate::qmp::execute(qmp, "stop", step).await.map_err(err)?;
    crate::qmp::execute_with_fd(
        qmp,
        theirs,
        vec![
            ("getfd", Some(json!({ "fdname": FD_NAME }))),
            // The default bandwidth cap (128 MiB/s) would make a 1 GiB guest's save
            // take seconds for nothing: the guest is paused and the file is local.
            (
                "migrate-set-parameters",
                Some(json!({ "max-bandwidth": 8u64 << 30 })),
            ),
            ("migrate", Some(json!({ "uri": format!("fd:{FD_NAME}") }))),
        ],
        step,
    )
    .await
    .map_err(err)?;
    let started = std::time::Instant::now();
    loop {
        let r = crate::qmp::execute(qmp, "query-migrate", step)
            .await
            .map_err(err)?;
        match r["status"].as_str().unwrap_or("") {
            "completed" => break,
            "failed" | "cancelled" => {
                return Err(VmmError::Snapshot(format!(
                    "QEMU could not save the guest's state: {}",
                    r["error-desc"].as_str().unwrap_or("no reason given")
                )))
            }
            _ => {}
        }
        if started.elapsed() > timeout {
            return Err(VmmError::Snapshot(format!(
                "QEMU did not finish saving the guest's state within {timeout:?}"
            )));
        }
        tokio::time::sleep(POLL).await;
    }
    // On disk before the daemon publishes the snapshot.
    file.sync_all().map_err(io(state, "fsync"))
}

/// Open the saved state `path` for QEMU to read (`-incoming fd:N`), refusing a
/// symbolic link in its place.
pub(super) fn open_state(path: &Path) -> Result<OwnedFd, VmmError> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map(OwnedFd::from)
        .map_err(io(path, "open"))
}

/// Create (or replace) `path` with mode 0600, never through a link.
fn create_private(path: &Path) -> Result<File, VmmError> {
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path, "create"))
}

fn io<'a>(path: &'a Path, verb: &'a str) -> impl Fn(std::io::Error) -> VmmError + 'a {
    move |source| VmmError::Io {
        what: format!("{verb} {}", path.display()),
        source,
    }
}

/// Wait until QEMU has loaded the incoming state, then `cont`. QEMU 7.2 exits when
/// the stream is corrupt or truncated, which is seen here as the process gone.
pub(super) async fn load_state(h: &Handles, timeout: Duration) -> Result<(), VmmError> {
    let qmp = &h.control_socket;
    let started = std::time::Instant::now();
    let gone = || {
        VmmError::Snapshot(
            "QEMU could not load the saved state (a corrupt or truncated snapshot file?) and exited"
                .into(),
        )
    };
    loop {
        if !h.vmm_alive() {
            return Err(gone());
        }
        let r = crate::qmp::execute(qmp, "query-status", Duration::from_secs(5)).await;
        match r {
            Ok(v) => match v["status"].as_str().unwrap_or("") {
                "inmigrate" => {}
                "running" => return Ok(()),
                "paused" | "prelaunch" | "postmigrate" => {
                    crate::qmp::execute(qmp, "cont", Duration::from_secs(5))
                        .await
                        .map_err(|e| VmmError::Control {
                            path: qmp.clone(),
                            reason: e.to_string(),
                        })?;
                    return Ok(());
                }
                other => {
                    return Err(VmmError::Snapshot(format!(
                        "QEMU is in state {other:?} after loading the saved state"
                    )))
                }
            },
            // QEMU exiting closes the socket mid-exchange.
            Err(_) if !h.vmm_alive() => return Err(gone()),
            Err(_) => {}
        }
        if started.elapsed() > timeout {
            return Err(VmmError::Snapshot(format!(
                "QEMU did not load the saved state within {timeout:?}"
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}
