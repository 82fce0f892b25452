//! QEMU `-M microvm` backend.
//!
//! microvm has no PCI, so every device is virtio-mmio, discovered through ACPI (the
//! Debian cloud kernel lacks virtio-mmio command-line discovery, so ACPI stays on).
//! QEMU daemonizes itself (`-daemonize`): it reports configuration errors
//! synchronously on stderr, then detaches into its own session, so guests survive a
//! daemon restart and are never our zombies.

use crate::accel::Accel;
use crate::process;
use crate::{Handles, MachineSpec, Vmm, VmmError};
use std::path::Path;
use std::time::Duration;

/// Name of the guest agent's virtio-serial port (the host–guest contract).
pub const AGENT_PORT: &str = banger_contract::agent::VIRTIO_PORT;

/// The QEMU backend.
#[derive(Debug, Clone)]
pub struct Qemu {
    /// qemu-system-x86_64 binary.
    pub binary: String,
    /// Accelerator decided by the probe.
    pub accel: Accel,
    /// Host TSC rate for `tsc_early_khz`.
    pub tsc_khz: u64,
}

/// File names inside a VM's runtime directory.
pub mod files {
    /// QMP socket.
    pub const QMP: &str = "qmp.sock";
    /// Agent channel socket.
    pub const AGENT: &str = "agent.sock";
    /// Serial console log.
    pub const CONSOLE: &str = crate::CONSOLE_LOG;
    /// QEMU pid file.
    pub const PID: &str = "qemu.pid";
}

impl Qemu {
    /// Full argument list for `spec` (pure: unit-tested without QEMU).
    pub fn args(&self, spec: &MachineSpec) -> Vec<String> {
        let rt = &spec.runtime_dir;
        let p = |f: &str| rt.join(f).display().to_string();
        let mut a: Vec<String> = vec![];
        let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
        push(&[
            "-name",
            &format!("banger-{},process=banger-{}", spec.id, spec.id),
        ]);
        push(&["-M", "microvm,pit=on,pic=on,rtc=on"]);
        match self.accel {
            Accel::Kvm => push(&["-accel", "kvm", "-cpu", "host"]),
            Accel::Tcg => push(&["-accel", "tcg,thread=multi", "-cpu", "max"]),
        }
        push(&[
            "-smp",
            &spec.cpus.to_string(),
            "-m",
            &format!("{}M", spec.memory_mib),
        ]);
        push(&[
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ]);
        // Appending (the daemon rotates the log under the VMM: `crate::console`).
        push(&[
            "-chardev",
            &format!("file,id=console,path={},append=on", p(files::CONSOLE)),
            "-serial",
            "chardev:console",
        ]);
        push(&["-kernel", &spec.kernel.display().to_string()]);
        if let Some(i) = &spec.initrd {
            push(&["-initrd", &i.display().to_string()]);
        }
        let cmdline = format!(
            "console=ttyS0 reboot=t panic=-1 quiet {} tsc_early_khz={} tsc=reliable {}",
            crate::NO_PCI_ARGS,
            self.tsc_khz,
            spec.cmdline.trim()
        );
        push(&["-append", cmdline.trim()]);
        for (i, d) in spec.disks.iter().enumerate() {
            let ro = if d.read_only { ",readonly=on" } else { "" };
            push(&[
                "-drive",
                &format!(
                    "id=disk{i},file={},format=raw,if=none,cache=none,aio=threads{ro}",
                    d.path.display()
                ),
            ]);
            push(&["-device", &format!("virtio-blk-device,drive=disk{i}")]);
        }
        if let Some(n) = &spec.net {
            let netdev = if n.unplugged {
                // A hub with nothing else on it: frames go nowhere.
                "hubport,id=net0,hubid=0".to_string()
            } else {
                format!("tap,id=net0,ifname={},script=no,downscript=no", n.tap)
            };
            push(&["-netdev", &netdev]);
            push(&[
                "-device",
                &format!("virtio-net-device,netdev=net0,mac={}", n.mac),
            ]);
        }
        push(&["-device", "virtio-serial-device"]);
        push(&[
            "-chardev",
            &format!(
                "socket,id=agent,path={},server=on,wait=off",
                p(files::AGENT)
            ),
        ]);
        push(&[
            "-device",
            &format!("virtserialport,chardev=agent,name={AGENT_PORT}"),
        ]);
        push(&[
            "-qmp",
            &format!("unix:{},server=on,wait=off", p(files::QMP)),
        ]);
        if let Some(state) = &spec.restore {
            // QEMU 7.2 takes `exec:` (not `file:`) for migration; the command runs
            // under /bin/sh, so the path is quoted.
            push(&["-incoming", &format!("exec:cat {}", shell_quote(state))]);
        }
        push(&["-pidfile", &p(files::PID), "-daemonize"]);
        a
    }
}

/// `path` as one single-quoted shell word.
fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// How often snapshot saves and loads are polled.
const MIGRATION_POLL: Duration = Duration::from_millis(20);

/// QEMU's migration of `h`'s guest to the file `state`: pause, stream, check.
async fn save_state(h: &Handles, state: &Path, timeout: Duration) -> Result<(), VmmError> {
    use serde_json::json;
    let qmp = &h.control_socket;
    let step = Duration::from_secs(5);
    let err = |e: crate::qmp::QmpError| VmmError::Control {
        path: qmp.clone(),
        reason: e.to_string(),
    };
    // The state file is the daemon's alone: create it 0600 before QEMU's `cat` opens it.
    create_private(state)?;
    crate::qmp::execute(qmp, "stop", step).await.map_err(err)?;
    // The default bandwidth cap (128 MiB/s) would make a 1 GiB guest's save take
    // seconds for nothing: the guest is paused and the file is local.
    crate::qmp::execute_with(
        qmp,
        "migrate-set-parameters",
        Some(json!({ "max-bandwidth": 8u64 << 30 })),
        step,
    )
    .await
    .map_err(err)?;
    let uri = format!("exec:cat > {}", shell_quote(state));
    crate::qmp::execute_with(qmp, "migrate", Some(json!({ "uri": uri })), step)
        .await
        .map_err(err)?;
    let started = std::time::Instant::now();
    loop {
        let r = crate::qmp::execute(qmp, "query-migrate", step)
            .await
            .map_err(err)?;
        match r["status"].as_str().unwrap_or("") {
            "completed" => return Ok(()),
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
        tokio::time::sleep(MIGRATION_POLL).await;
    }
}

/// Create (or truncate) `path` with mode 0600.
fn create_private(path: &Path) -> Result<(), VmmError> {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map(drop)
        .map_err(|e| VmmError::Io {
            what: format!("create {}", path.display()),
            source: e,
        })
}

/// Wait until QEMU has loaded the incoming state, then `cont`. QEMU 7.2 exits when
/// the stream is corrupt or truncated, which is seen here as the process gone.
async fn load_state(h: &Handles, timeout: Duration) -> Result<(), VmmError> {
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
        tokio::time::sleep(MIGRATION_POLL).await;
    }
}

/// The pid QEMU wrote; 0 and 1 are never a VMM's.
fn read_pid(path: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
    (pid > 1).then_some(pid)
}

#[async_trait::async_trait]
impl Vmm for Qemu {
    fn name(&self) -> &'static str {
        "qemu"
    }

    async fn launch(&self, spec: &MachineSpec) -> Result<Handles, VmmError> {
        let rt = &spec.runtime_dir;
        for f in [files::QMP, files::AGENT, files::PID] {
            let _ = std::fs::remove_file(rt.join(f));
        }
        // QEMU appends (append=on), so a new boot's log is emptied here.
        let console = rt.join(files::CONSOLE);
        crate::console::create_for_append(&console).map_err(|e| VmmError::Io {
            what: format!("create {}", console.display()),
            source: e,
        })?;
        let out = tokio::process::Command::new(&self.binary)
            .args(self.args(spec))
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => VmmError::Missing(self.binary.clone()),
                _ => VmmError::Io {
                    what: format!("run {}", self.binary),
                    source: e,
                },
            })?;
        if !out.status.success() {
            let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return Err(VmmError::Launch(if msg.is_empty() {
                out.status.to_string()
            } else {
                msg
            }));
        }
        let pid_path = rt.join(files::PID);
        let pid = read_pid(&pid_path).ok_or_else(|| {
            let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if !msg.is_empty() {
                VmmError::Launch(msg)
            } else if spec.restore.is_some() {
                // QEMU daemonized, refused the saved state and exited (removing its pid
                // file); its message went to the daemonized child's /dev/null.
                VmmError::Snapshot(
                    "QEMU exited while loading the saved state (a corrupt or incompatible snapshot)"
                        .into(),
                )
            } else {
                VmmError::NoPid(pid_path.clone())
            }
        })?;
        let control_socket = rt.join(files::QMP);
        // Recorded only while the pid still runs our QEMU (tagged by its QMP path).
        let start_time = process::start_time(pid)
            .filter(|_| process::alive_with_tag(pid, &control_socket.display().to_string()));
        Ok(Handles {
            backend: "qemu".into(),
            pid,
            start_time,
            control_socket,
            agent_socket: rt.join(files::AGENT),
            console_log: rt.join(files::CONSOLE),
            accel: self.accel,
        })
    }

    async fn kill(&self, h: &Handles) -> Result<(), VmmError> {
        let id = h.identity();
        if !id.alive() {
            return Ok(());
        }
        // Ask QEMU to quit (flushes its block layer), then insist.
        let _ = crate::qmp::execute(&h.control_socket, "quit", Duration::from_secs(2)).await;
        if id.wait_exit(Duration::from_secs(3)).await {
            return Ok(());
        }
        id.signal(libc::SIGKILL);
        if id.wait_exit(Duration::from_secs(5)).await {
            Ok(())
        } else {
            Err(VmmError::Io {
                what: format!("kill QEMU pid {}", h.pid),
                source: std::io::Error::other("process still running after SIGKILL"),
            })
        }
    }

    fn is_alive(&self, h: &Handles, _vm_id: &str) -> bool {
        h.vmm_alive()
    }

    async fn snapshot(&self, h: &Handles, state: &Path, timeout: Duration) -> Result<(), VmmError> {
        save_state(h, state, timeout).await
    }

    async fn resume(&self, h: &Handles, timeout: Duration) -> Result<(), VmmError> {
        load_state(h, timeout).await
    }

    fn cleanup(&self, runtime_dir: &Path) {
        crate::remove_files(runtime_dir, &[files::QMP, files::AGENT, files::PID]);
    }

    async fn kill_orphans(&self, runtime_dir: &Path) -> usize {
        process::kill_tagged(&orphan_tag(runtime_dir), Duration::from_secs(5)).await
    }
}

/// What only the command line of this VM's QEMU contains: its QMP argument, whole
/// (`unix:` and `,server=on` around the path), so that `kill_orphans` never hits a
/// process that merely names the socket (a `tail` or `pgrep` of it).
fn orphan_tag(runtime_dir: &Path) -> String {
    format!("unix:{},server=on", runtime_dir.join(files::QMP).display())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DiskSpec, NetSpec};
    use std::path::PathBuf;

    fn spec() -> MachineSpec {
        MachineSpec {
            id: "abc123".into(),
            cpus: 2,
            memory_mib: 1024,
            kernel: "/img/vmlinuz".into(),
            initrd: Some("/img/initrd.img".into()),
            cmdline: "banger.ip=172.30.0.2/24".into(),
            disks: vec![
                DiskSpec {
                    path: "/img/rootfs.ext4".into(),
                    read_only: true,
                },
                DiskSpec {
                    path: "/vm/overlay.ext4".into(),
                    read_only: false,
                },
            ],
            net: Some(NetSpec {
                tap: "bgrabc123".into(),
                mac: "06:ba:ac:1e:00:02".into(),
                unplugged: false,
            }),
            runtime_dir: PathBuf::from("/run/vm"),
            restore: None,
        }
    }

    #[test]
    fn tcg_args_carry_the_measured_boot_requirements() {
        let q = Qemu {
            binary: "qemu-system-x86_64".into(),
            accel: Accel::Tcg,
            tsc_khz: 2599998,
        };
        let a = q.args(&spec()).join(" ");
        assert!(a.contains("-M microvm,pit=on,pic=on,rtc=on"));
        assert!(a.contains("-accel tcg,thread=multi"));
        assert!(a.contains("tsc_early_khz=2599998 tsc=reliable"));
        assert!(a.contains(crate::NO_PCI_ARGS));
        assert!(a.contains("banger.ip=172.30.0.2/24"));
        assert!(a.contains(
            "file=/img/rootfs.ext4,format=raw,if=none,cache=none,aio=threads,readonly=on"
        ));
        assert!(!a.contains("overlay.ext4,format=raw,if=none,cache=none,aio=threads,readonly=on"));
        assert!(a.contains("ifname=bgrabc123,script=no,downscript=no"));
        assert!(a.contains("name=org.banger.agent"));
        assert!(a.contains("-qmp unix:/run/vm/qmp.sock,server=on,wait=off"));
        assert!(a.contains(
            "-chardev file,id=console,path=/run/vm/console.log,append=on -serial chardev:console"
        ));
        assert!(a.ends_with("-daemonize"));
    }

    #[test]
    fn the_orphan_tag_matches_the_launched_command_line_only() {
        let q = Qemu {
            binary: "q".into(),
            accel: Accel::Tcg,
            tsc_khz: 1,
        };
        let cmdline = q.args(&spec()).join("\0");
        let rt = PathBuf::from("/run/vm");
        assert!(cmdline.contains(&orphan_tag(&rt)), "{cmdline}");
        let tail = format!("tail\0-f\0{}", rt.join(files::QMP).display());
        assert!(!tail.contains(&orphan_tag(&rt)));
    }

    #[test]
    fn a_restore_loads_the_state_and_a_template_reaches_no_network() {
        let q = Qemu {
            binary: "q".into(),
            accel: Accel::Tcg,
            tsc_khz: 1,
        };
        let mut s = spec();
        assert!(!q.args(&s).contains(&"-incoming".to_string()));
        s.restore = Some(PathBuf::from("/state/it's here/state.bin"));
        let a = q.args(&s);
        let i = a.iter().position(|x| x == "-incoming").unwrap();
        assert_eq!(a[i + 1], r"exec:cat '/state/it'\''s here/state.bin'");
        assert!(a.ends_with(&["-daemonize".to_string()]));
        s.net.as_mut().unwrap().unplugged = true;
        let a = q.args(&s).join(" ");
        assert!(a.contains("-netdev hubport,id=net0,hubid=0"), "{a}");
        assert!(!a.contains("ifname="), "{a}");
        // The device (and its MAC) is there all the same: the restored machine has it.
        assert!(a.contains("virtio-net-device,netdev=net0,mac=06:ba:ac:1e:00:02"));
    }

    #[test]
    fn kvm_uses_host_cpu() {
        let q = Qemu {
            binary: "q".into(),
            accel: Accel::Kvm,
            tsc_khz: 1,
        };
        assert!(q.args(&spec()).join(" ").contains("-accel kvm -cpu host"));
    }

    #[test]
    fn cleanup_removes_sockets_and_keeps_the_console() {
        let d = tempfile::tempdir().unwrap();
        for f in [files::QMP, files::AGENT, files::PID, files::CONSOLE] {
            std::fs::write(d.path().join(f), "").unwrap();
        }
        let q = Qemu {
            binary: "q".into(),
            accel: Accel::Tcg,
            tsc_khz: 1,
        };
        q.cleanup(d.path());
        let left: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [files::CONSOLE]);
    }
}
