//! Firecracker backend.
//!
//! Firecracker takes no configuration on its command line: it starts with only an API
//! socket (`--api-sock`), is configured through HTTP PUTs (machine-config, boot-source,
//! drives, network-interfaces, vsock, logger, metrics), and boots on the
//! `InstanceStart` action. The request bodies are plain serde types, one file per API
//! resource as in Firecracker's own `vmm_config/`; [`Firecracker::configure_requests`]
//! builds the whole sequence as data, so tests check every body against Firecracker's
//! OpenAPI spec (`tests/fixtures/firecracker-v1.14.1.yaml`) without a Firecracker.
//!
//! Like QEMU, Firecracker is not daemonized: we spawn it in its own process group
//! (so a Ctrl-C at the daemon's terminal does not reach it) with its stdout, which
//! carries the guest's serial console, going to the console log. When the daemon
//! exits, the process is re-parented and a restarted daemon re-adopts it from its
//! [`Handles`] like a QEMU guest. Firecracker boots only an ELF vmlinux: the daemon
//! passes the one `banger_image::vmlinux::vmlinux_path` extracts.
//!
//! System mode (a root daemon starting guests through Firecracker's `jailer`) needs the
//! per-VM chroot staged first: see [`jailer`].

pub mod actions;
pub mod boot_source;
pub mod client;
pub mod drive;
pub mod jailer;
pub mod logger;
pub mod machine_config;
pub mod metrics;
pub mod net;
pub mod snapshot;
pub mod vsock;

use crate::accel::Accel;
use crate::process;
use crate::{Handles, MachineSpec, Vmm, VmmError};
use actions::{ActionType, InstanceActionInfo};
use boot_source::BootSource;
use client::{ApiClient, ApiError, ApiRequest};
use drive::{CacheType, Drive};
use logger::{LogLevel, Logger};
use machine_config::{MachineConfig, MAX_VCPUS};
use metrics::Metrics;
use net::NetworkInterface;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vsock::Vsock;

/// Longest path a unix socket address can hold (`sun_path` is 108 bytes with its NUL).
pub const MAX_SOCKET_PATH: usize = 107;
/// How long Firecracker may take to open its API socket after spawning (it takes
/// milliseconds; this only bounds a wedged start).
pub const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `kill` waits for the guest to act on Ctrl+Alt+Del before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(3);
/// `iface_id` of the guest's only network interface.
pub const IFACE_ID: &str = "eth0";

/// File names inside a VM's runtime directory.
pub mod files {
    /// Firecracker API socket.
    pub const API: &str = "firecracker.sock";
    /// Host side of the guest's vsock (the agent channel).
    pub const VSOCK: &str = "vsock.sock";
    /// Guest serial console (Firecracker's stdout and stderr).
    pub const CONSOLE: &str = crate::CONSOLE_LOG;
    /// Firecracker's own log.
    pub const LOG: &str = "firecracker.log";
    /// Firecracker's metrics, when enabled.
    pub const METRICS: &str = "firecracker.metrics";
}

/// `drive_id` of the `i`-th disk of a [`MachineSpec`] (attach order = `/dev/vdX` order).
pub fn drive_id(i: usize) -> String {
    format!("disk{i}")
}

/// Why the Firecracker backend could not start or stop a guest.
#[derive(Debug, thiserror::Error)]
pub enum FirecrackerError {
    /// The machine description is outside what Firecracker accepts.
    #[error("this VM cannot run on Firecracker: {0}")]
    InvalidSpec(String),
    /// The kernel is not an ELF vmlinux.
    #[error("{0} is not an ELF vmlinux, and Firecracker cannot boot a compressed bzImage: extract it first (banger does this with banger_image::vmlinux::vmlinux_path)")]
    NotVmlinux(PathBuf),
    /// A socket path does not fit in a unix socket address.
    #[error("socket path {path} is {len} bytes, more than the {MAX_SOCKET_PATH} a unix socket address holds: use a shorter runtime directory (BANGER_HOME or XDG_RUNTIME_DIR)")]
    SocketPathTooLong {
        /// The path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
    },
    /// The firecracker binary is not there.
    #[error("{0} is not installed: install Firecracker (a release binary from its GitHub releases, or your distribution's package) or use the QEMU backend")]
    Missing(String),
    /// A file in the runtime directory could not be prepared.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Firecracker exited before the guest was started.
    #[error("firecracker exited during startup ({status}); its last output:\n{output}")]
    Exited {
        /// Exit status.
        status: String,
        /// Tail of the console log (Firecracker's stdout and stderr).
        output: String,
    },
    /// The API socket never answered.
    #[error(
        "firecracker did not answer on {socket} within {waited:?}; its last output:\n{output}"
    )]
    NotReady {
        /// API socket.
        socket: PathBuf,
        /// How long we waited.
        waited: Duration,
        /// Tail of the console log.
        output: String,
    },
    /// An API request failed (Firecracker's fault message included).
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl From<FirecrackerError> for VmmError {
    fn from(e: FirecrackerError) -> VmmError {
        match e {
            FirecrackerError::Io { what, source } => VmmError::Io { what, source },
            // VmmError::Missing's text names QEMU's package, and Control would repeat
            // the socket path our messages already carry: keep our own text.
            other => VmmError::Launch(other.to_string()),
        }
    }
}

/// The Firecracker backend.
#[derive(Debug, Clone)]
pub struct Firecracker {
    /// firecracker binary (a name looked up in PATH, or a path).
    pub binary: String,
    /// Level of Firecracker's own log (`firecracker.log` in the runtime directory).
    pub log_level: LogLevel,
    /// Whether to have Firecracker append its JSON metrics to `firecracker.metrics`
    /// every minute. Off by default: the runtime directory is usually on tmpfs and the
    /// file only grows.
    pub metrics: bool,
}

impl Default for Firecracker {
    fn default() -> Firecracker {
        Firecracker {
            binary: "firecracker".into(),
            log_level: LogLevel::Info,
            metrics: false,
        }
    }
}

fn check_socket_path(path: &Path) -> Result<(), FirecrackerError> {
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(FirecrackerError::SocketPathTooLong {
            path: path.to_path_buf(),
            len,
        });
    }
    Ok(())
}

/// Firecracker's `--id`: alphanumerics and hyphens, at most 64 characters.
fn instance_id(vm_id: &str) -> Option<String> {
    let id = format!("banger-{vm_id}");
    (id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')).then_some(id)
}

impl Firecracker {
    /// Command line of the firecracker process (pure). The API socket path in it is
    /// what [`Vmm::is_alive`] recognises the process by after pid reuse.
    pub fn args(&self, spec: &MachineSpec) -> Vec<String> {
        let mut a = vec![
            "--api-sock".to_string(),
            spec.runtime_dir.join(files::API).display().to_string(),
        ];
        if let Some(id) = instance_id(&spec.id) {
            a.extend(["--id".to_string(), id]);
        }
        a
    }

    /// The full pre-boot configuration for `spec`, in the order it is sent (pure).
    ///
    /// The logger (and metrics, when enabled) in the runtime directory `rt`: the first
    /// requests of a boot and of a snapshot load alike.
    fn logging_requests(&self, rt: &std::path::Path) -> Result<Vec<ApiRequest>, FirecrackerError> {
        let mut reqs = vec![ApiRequest::put(
            "/logger",
            &Logger {
                log_path: rt.join(files::LOG),
                level: Some(self.log_level),
                show_level: Some(true),
                show_log_origin: Some(false),
            },
        )?];
        if self.metrics {
            reqs.push(ApiRequest::put(
                "/metrics",
                &Metrics {
                    metrics_path: rt.join(files::METRICS),
                },
            )?);
        }
        Ok(reqs)
    }

    /// Logger first, so Firecracker's complaints about later requests land in its log;
    /// then machine, kernel, disks, network and vsock. `InstanceStart`
    /// ([`Firecracker::start_request`]) follows separately.
    pub fn configure_requests(
        &self,
        spec: &MachineSpec,
    ) -> Result<Vec<ApiRequest>, FirecrackerError> {
        if spec.cpus == 0 || spec.cpus > MAX_VCPUS {
            return Err(FirecrackerError::InvalidSpec(format!(
                "{} vCPUs requested; Firecracker supports 1 to {MAX_VCPUS}",
                spec.cpus
            )));
        }
        if spec.memory_mib == 0 {
            return Err(FirecrackerError::InvalidSpec(
                "0 MiB of memory requested".into(),
            ));
        }
        let rt = &spec.runtime_dir;
        let api = rt.join(files::API);
        let vsock_path = rt.join(files::VSOCK);
        check_socket_path(&api)?;
        check_socket_path(&vsock_path)?;

        let mut reqs = self.logging_requests(rt)?;
        reqs.push(ApiRequest::put(
            "/machine-config",
            &MachineConfig {
                vcpu_count: spec.cpus,
                mem_size_mib: spec.memory_mib,
                smt: None,
                track_dirty_pages: None,
                huge_pages: None,
            },
        )?);
        reqs.push(ApiRequest::put(
            "/boot-source",
            &BootSource {
                kernel_image_path: spec.kernel.clone(),
                boot_args: Some(boot_source::boot_args(&spec.cmdline)),
                initrd_path: spec.initrd.clone(),
            },
        )?);
        for (i, d) in spec.disks.iter().enumerate() {
            let id = drive_id(i);
            reqs.push(ApiRequest::put(
                format!("/drives/{id}"),
                &Drive {
                    drive_id: id.clone(),
                    path_on_host: d.path.clone(),
                    // banger's initrd finds its disks by label and mounts the root
                    // itself; only without an initrd must the kernel mount the first
                    // disk (Firecracker then adds root=/dev/vda).
                    is_root_device: i == 0 && spec.initrd.is_none(),
                    is_read_only: d.read_only,
                    // Writable disks hold the user's work: pass guest flushes on.
                    cache_type: (!d.read_only).then_some(CacheType::Writeback),
                    partuuid: None,
                    io_engine: None,
                },
            )?);
        }
        if let Some(n) = &spec.net {
            if n.backend != crate::NetBackend::Tap {
                return Err(FirecrackerError::InvalidSpec(
                    "Firecracker attaches guests through a tap only; rootless mode (passt or \
                     user-mode networking) runs VMs under QEMU: use --vmm qemu"
                        .into(),
                ));
            }
            reqs.push(ApiRequest::put(
                format!("/network-interfaces/{IFACE_ID}"),
                &NetworkInterface {
                    iface_id: IFACE_ID.into(),
                    host_dev_name: n.tap.clone(),
                    guest_mac: Some(n.mac.clone()),
                },
            )?);
        }
        reqs.push(ApiRequest::put(
            "/vsock",
            &Vsock {
                guest_cid: vsock::GUEST_CID,
                uds_path: vsock_path,
            },
        )?);
        Ok(reqs)
    }

    /// `PUT /actions {"action_type": "InstanceStart"}`.
    pub fn start_request() -> Result<ApiRequest, FirecrackerError> {
        Ok(ApiRequest::put(
            "/actions",
            &InstanceActionInfo {
                action_type: ActionType::InstanceStart,
            },
        )?)
    }

    /// `PUT /actions {"action_type": "SendCtrlAltDel"}`.
    pub fn stop_request() -> Result<ApiRequest, FirecrackerError> {
        Ok(ApiRequest::put(
            "/actions",
            &InstanceActionInfo {
                action_type: ActionType::SendCtrlAltDel,
            },
        )?)
    }

    /// Every request this backend can send for `spec`, in order: configuration,
    /// start, stop. What the contract tests validate.
    pub fn all_requests(&self, spec: &MachineSpec) -> Result<Vec<ApiRequest>, FirecrackerError> {
        let mut r = self.configure_requests(spec)?;
        r.push(Firecracker::start_request()?);
        r.push(Firecracker::stop_request()?);
        Ok(r)
    }

    /// Spawn firecracker, configure it and start the guest. On any failure after the
    /// spawn the process is killed, so nothing is left running.
    pub async fn start(&self, spec: &MachineSpec) -> Result<Handles, FirecrackerError> {
        // A warm restore loads the saved state instead of configuring and booting.
        let (requests, start) = match &spec.restore {
            Some(state) => (self.restore_requests(spec, state)?, None),
            None => (
                self.configure_requests(spec)?,
                Some(Firecracker::start_request()?),
            ),
        };
        if !is_elf_file(&spec.kernel) {
            return Err(FirecrackerError::NotVmlinux(spec.kernel.clone()));
        }
        let rt = &spec.runtime_dir;
        let io = |what: String| move |source| FirecrackerError::Io { what, source };
        let api = rt.join(files::API);
        let vsock_path = rt.join(files::VSOCK);
        for stale in [&api, &vsock_path] {
            match std::fs::remove_file(stale) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io(format!("remove stale socket {}", stale.display()))(e))
                }
                _ => {}
            }
        }
        // Firecracker opens the log and metrics files without creating them.
        let mut created = vec![files::LOG];
        if self.metrics {
            created.push(files::METRICS);
        }
        for f in created {
            let p = rt.join(f);
            std::fs::File::create(&p).map_err(io(format!("create {}", p.display())))?;
        }
        let console_path = rt.join(files::CONSOLE);
        // Appending, so the daemon can rotate it under firecracker (`crate::console`).
        let console = crate::console::create_for_append(&console_path)
            .map_err(io(format!("create {}", console_path.display())))?;
        let console_err = console
            .try_clone()
            .map_err(io(format!("duplicate {}", console_path.display())))?;

        let mut child = tokio::process::Command::new(&self.binary)
            .args(self.args(spec))
            .stdin(std::process::Stdio::null())
            .stdout(console)
            .stderr(console_err)
            .process_group(0)
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => FirecrackerError::Missing(self.binary.clone()),
                _ => FirecrackerError::Io {
                    what: format!("run {}", self.binary),
                    source: e,
                },
            })?;
        let pid = child.id().unwrap_or(0);

        let result = async {
            let client = ApiClient::new(&api)?;
            wait_ready(&client, &mut child, &console_path, READY_TIMEOUT).await?;
            for r in &requests {
                client.send(r).await?;
            }
            if let Some(start) = &start {
                client.send(start).await?;
            }
            Ok::<(), FirecrackerError>(())
        }
        .await;
        if let Err(e) = result {
            let _ = child.start_kill();
            let _ = child.wait().await;
            let _ = std::fs::remove_file(&api);
            let _ = std::fs::remove_file(&vsock_path);
            return Err(e);
        }
        // Dropping a tokio Child neither kills nor leaks it: tokio reaps it in the
        // background once it exits.
        drop(child);
        tracing::info!(pid, api = %api.display(), "firecracker guest started");
        let start_time = process::start_time(pid)
            .filter(|_| process::alive_with_tag(pid, &api.display().to_string()));
        Ok(Handles {
            backend: "firecracker".into(),
            pid,
            start_time,
            tag: None,
            control_socket: api,
            agent_socket: vsock_path,
            console_log: console_path,
            accel: Accel::Kvm,
        })
    }

    /// Ask the guest to stop with Ctrl+Alt+Del, then SIGKILL after [`STOP_GRACE`].
    pub async fn stop(&self, h: &Handles) -> Result<(), FirecrackerError> {
        let id = h.identity();
        if !id.alive() {
            return Ok(());
        }
        if let Ok(client) = ApiClient::with_timeout(&h.control_socket, Duration::from_secs(1)) {
            if let Ok(req) = Firecracker::stop_request() {
                if client.send(&req).await.is_ok() && id.wait_exit(STOP_GRACE).await {
                    return Ok(());
                }
            }
        }
        id.signal(libc::SIGKILL);
        if id.wait_exit(Duration::from_secs(5)).await {
            Ok(())
        } else {
            Err(FirecrackerError::Io {
                what: format!("kill firecracker pid {}", h.pid),
                source: std::io::Error::other("process still running after SIGKILL"),
            })
        }
    }
}

fn is_elf_file(path: &Path) -> bool {
    let mut head = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && &head == b"\x7fELF"
}

/// Last lines of the console log, for errors. Reads at most its last 64 KiB: the
/// log is written by the guest.
pub fn output_tail(path: &Path, lines: usize) -> String {
    let text = String::from_utf8_lossy(&crate::console::tail(path, 64 << 10)).into_owned();
    let all: Vec<&str> = text.lines().collect();
    let tail = all[all.len().saturating_sub(lines)..].join("\n");
    if tail.trim().is_empty() {
        "(no output)".into()
    } else {
        tail
    }
}

/// Poll until the API answers `GET /`, failing early if firecracker exits.
async fn wait_ready(
    client: &ApiClient,
    child: &mut tokio::process::Child,
    console: &Path,
    timeout: Duration,
) -> Result<(), FirecrackerError> {
    let t = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(FirecrackerError::Exited {
                status: status.to_string(),
                output: output_tail(console, 20),
            });
        }
        if client.socket().exists() && client.get_json("/").await.is_ok() {
            return Ok(());
        }
        if t.elapsed() > timeout {
            return Err(FirecrackerError::NotReady {
                socket: client.socket().to_path_buf(),
                waited: timeout,
                output: output_tail(console, 20),
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[async_trait::async_trait]
impl Vmm for Firecracker {
    fn name(&self) -> &'static str {
        "firecracker"
    }

    async fn launch(&self, spec: &MachineSpec) -> Result<Handles, VmmError> {
        Ok(self.start(spec).await?)
    }

    async fn kill(&self, h: &Handles) -> Result<(), VmmError> {
        Ok(self.stop(h).await?)
    }

    fn is_alive(&self, h: &Handles, _vm_id: &str) -> bool {
        h.vmm_alive()
    }

    async fn snapshot(&self, h: &Handles, state: &Path, timeout: Duration) -> Result<(), VmmError> {
        Firecracker::send_all(h, &Firecracker::snapshot_requests(state)?, timeout).await
    }

    async fn resume(&self, h: &Handles, timeout: Duration) -> Result<(), VmmError> {
        Firecracker::send_all(h, &[Firecracker::resume_request()?], timeout).await
    }

    /// The API and vsock sockets (Firecracker does not remove them when it exits);
    /// `console.log` and Firecracker's own log stay with the VM's logs.
    fn cleanup(&self, runtime_dir: &Path) {
        crate::remove_files(runtime_dir, &[files::API, files::VSOCK, files::METRICS]);
    }

    async fn kill_orphans(&self, runtime_dir: &Path) -> usize {
        process::kill_tagged(&orphan_tag(runtime_dir), Duration::from_secs(5)).await
    }
}

/// What only the command line of this VM's Firecracker contains: `--api-sock` and
/// the path as whole arguments (the command line's NUL separators included), so that
/// `kill_orphans` never hits a process that merely names the socket.
fn orphan_tag(runtime_dir: &Path) -> String {
    format!("--api-sock\0{}\0", runtime_dir.join(files::API).display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleanup_removes_both_sockets_and_keeps_the_logs() {
        let d = tempfile::tempdir().unwrap();
        for f in [files::API, files::VSOCK, files::CONSOLE, files::LOG] {
            std::fs::write(d.path().join(f), "").unwrap();
        }
        Firecracker::default().cleanup(d.path());
        let mut left: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [files::CONSOLE, files::LOG]);
    }

    #[test]
    fn the_orphan_tag_matches_the_launched_command_line_only() {
        let rt = std::path::PathBuf::from("/run/banger/vms/abc123");
        let spec = MachineSpec {
            id: "abc123".into(),
            cpus: 1,
            memory_mib: 128,
            kernel: "/img/vmlinux".into(),
            initrd: None,
            cmdline: String::new(),
            disks: vec![],
            net: None,
            runtime_dir: rt.clone(),
            restore: None,
        };
        // /proc/<pid>/cmdline: each argument ends with a NUL.
        let mut cmdline = String::from("firecracker\0");
        for a in Firecracker::default().args(&spec) {
            cmdline.push_str(&a);
            cmdline.push('\0');
        }
        assert!(cmdline.contains(&orphan_tag(&rt)), "{cmdline:?}");
        let tail = format!("tail\0-f\0{}\0", rt.join(files::API).display());
        assert!(!tail.contains(&orphan_tag(&rt)));
    }
}
