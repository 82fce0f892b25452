//! QEMU `-M microvm` backend.
//!
//! microvm has no PCI, so every device is virtio-mmio, discovered through ACPI (the
//! Debian cloud kernel lacks virtio-mmio command-line discovery, so ACPI stays on).
//!
//! QEMU runs under its seccomp filter ([`SANDBOX`]: no exec, no fork, no uid or
//! session changes, no obsolete or resource-control calls), which rules out
//! `-daemonize`: it forks and calls `setsid`, and QEMU 7.2 dies of SIGSYS there
//! (checked here). So the backend starts QEMU in a session of its own (guests
//! survive a daemon restart or `kill -9`, and a Ctrl-C at the daemon's terminal never
//! reaches them), with its own messages in `qemu.log`, and waits until QMP answers:
//! QMP is served from the main loop, which runs only once the machine is fully
//! built, so an answer means every device (disks, tap, agent socket) exists, and a
//! configuration error shows up as an exit with its message before `launch` returns.
//! The child is reaped by tokio once it exits; after a daemon restart it is
//! re-adopted from its handles like any running guest.
//!
//! The guest's tap reaches QEMU either by name (`ifname=`, when QEMU may open
//! `/dev/net/tun`) or, through [`Vmm::launch_with_tap`], as a descriptor the root
//! helper opened (`fd=`), which is what an unprivileged owner needs where
//! `/dev/net/tun` is root-only.
//!
//! Warm snapshots ([`migrate`]) go through descriptors as well: the sandbox's
//! `spawn=deny` kills QEMU 7.2 on an `exec:` migration (it forks a shell), so the
//! daemon opens the state file itself and hands QEMU the descriptor: over QMP
//! (`getfd`, then `migrate fd:NAME`) to save, inherited (`-incoming fd:N`) to
//! restore. QEMU never opens a path of the daemon's choosing for this, either.

mod migrate;
mod spawn;

use crate::accel::Accel;
use crate::process;
use crate::{Handles, MachineSpec, NetBackend, Vmm, VmmError};
use std::os::fd::{OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;

/// QEMU's seccomp sandbox for guests: `obsolete`, `elevateprivileges` (setuid and
/// friends, `setsid`), `spawn` (fork, exec) and `resourcecontrol` (scheduler and
/// affinity changes) system calls are refused, so a guest that escapes into QEMU
/// cannot run programs or change its identity. QEMU 7.2 accepts exactly these
/// options (its `-sandbox help` lists them).
pub const SANDBOX: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";
/// How long QEMU may take to build the machine and answer QMP (milliseconds
/// normally; this bounds a wedged start on a loaded host).
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

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
    /// QEMU's own messages (stdout and stderr).
    pub const LOG: &str = "qemu.log";
}

impl Qemu {
    /// Full argument list for `spec` with nothing inherited: QEMU opens the tap by
    /// name and boots cold (pure: unit-tested without QEMU).
    pub fn args(&self, spec: &MachineSpec) -> Vec<String> {
        self.args_for(spec, Inherited::default())
    }

    /// Full argument list for `spec` with the descriptors QEMU inherits: the guest's
    /// tap (`-netdev tap,fd=N` instead of a name) and the saved state to load
    /// (`-incoming fd:N`).
    pub fn args_for(&self, spec: &MachineSpec, fds: Inherited) -> Vec<String> {
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
            "-sandbox",
            SANDBOX,
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
            let netdev = match (n.unplugged, &n.backend, fds.tap) {
                // A hub with nothing else on it: frames go nowhere.
                (true, _, _) => "hubport,id=net0,hubid=0".to_string(),
                (false, NetBackend::Stream { socket }, _) => format!(
                    "stream,id=net0,server=off,addr.type=unix,addr.path={}",
                    socket.display()
                ),
                (
                    false,
                    NetBackend::User {
                        net,
                        host,
                        dns,
                        forwards,
                    },
                    _,
                ) => {
                    let mut s = format!("user,id=net0,net={net},host={host},dns={dns}");
                    for f in forwards {
                        s.push_str(&format!(
                            ",hostfwd=tcp:{}:{}-{}:{}",
                            f.host_ip, f.host_port, f.guest_ip, f.guest_port
                        ));
                    }
                    s
                }
                // QEMU refuses ifname=, script= and downscript= next to fd=.
                (false, NetBackend::Tap, Some(fd)) => format!("tap,id=net0,fd={fd}"),
                (false, NetBackend::Tap, None) => {
                    format!("tap,id=net0,ifname={},script=no,downscript=no", n.tap)
                }
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
        if let Some(fd) = fds.state {
            push(&["-incoming", &format!("fd:{fd}")]);
        }
        push(&["-pidfile", &p(files::PID)]);
        a
    }
}

/// Descriptors a launched QEMU inherits (numbers valid in the daemon at the fork).
#[derive(Debug, Clone, Copy, Default)]
pub struct Inherited {
    /// The guest's open tap.
    pub tap: Option<RawFd>,
    /// The saved state to load, open for reading.
    pub state: Option<RawFd>,
}

#[async_trait::async_trait]
impl Vmm for Qemu {
    fn name(&self) -> &'static str {
        "qemu"
    }

    async fn launch(&self, spec: &MachineSpec) -> Result<Handles, VmmError> {
        self.spawn(spec, None).await
    }

    fn takes_tap_fd(&self) -> bool {
        true
    }

    async fn launch_with_tap(&self, spec: &MachineSpec, tap: OwnedFd) -> Result<Handles, VmmError> {
        self.spawn(spec, Some(tap)).await
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
        migrate::save_state(h, state, timeout).await
    }

    async fn resume(&self, h: &Handles, timeout: Duration) -> Result<(), VmmError> {
        migrate::load_state(h, timeout).await
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
                backend: Default::default(),
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
        assert!(a.contains(&format!("-sandbox {SANDBOX}")));
        assert!(
            !a.contains("-daemonize"),
            "the sandbox forbids fork and setsid"
        );
        // A passed tap replaces the name (QEMU refuses both).
        let fds = Inherited {
            tap: Some(7),
            state: None,
        };
        let f = q.args_for(&spec(), fds).join(" ");
        assert!(f.contains("-netdev tap,id=net0,fd=7 "), "{f}");
        assert!(!f.contains("ifname="), "{f}");
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
    fn a_restore_loads_the_inherited_state_and_a_template_reaches_no_network() {
        let q = Qemu {
            binary: "q".into(),
            accel: Accel::Tcg,
            tsc_khz: 1,
        };
        let mut s = spec();
        assert!(!q.args(&s).contains(&"-incoming".to_string()));
        s.restore = Some(PathBuf::from("/state/it's here/state.bin"));
        let fds = Inherited {
            tap: None,
            state: Some(9),
        };
        let a = q.args_for(&s, fds);
        let i = a.iter().position(|x| x == "-incoming").unwrap();
        // A descriptor, never a command: the sandbox forbids exec.
        assert_eq!(a[i + 1], "fd:9");
        assert!(!a.join(" ").contains("exec:"));
        s.net.as_mut().unwrap().unplugged = true;
        let a = q
            .args_for(
                &s,
                Inherited {
                    tap: Some(7),
                    state: None,
                },
            )
            .join(" ");
        assert!(a.contains("-netdev hubport,id=net0,hubid=0"), "{a}");
        assert!(!a.contains("ifname=") && !a.contains("fd=7"), "{a}");
        // The device (and its MAC) is there all the same: the restored machine has it.
        assert!(a.contains("virtio-net-device,netdev=net0,mac=06:ba:ac:1e:00:02"));
    }

    #[test]
    fn rootless_backends_replace_the_tap() {
        let q = Qemu {
            binary: "qemu-system-x86_64".into(),
            accel: Accel::Tcg,
            tsc_khz: 2599998,
        };
        let mut s = spec();
        s.net.as_mut().unwrap().backend = NetBackend::Stream {
            socket: "/run/vm/passt.sock".into(),
        };
        let a = q.args(&s).join(" ");
        assert!(
            a.contains(
                "-netdev stream,id=net0,server=off,addr.type=unix,addr.path=/run/vm/passt.sock "
            ),
            "{a}"
        );
        assert!(!a.contains("tap,"), "{a}");
        s.net.as_mut().unwrap().backend = NetBackend::User {
            net: "172.30.0.0/24".into(),
            host: "172.30.0.1".parse().unwrap(),
            dns: "172.30.0.254".parse().unwrap(),
            forwards: vec![crate::HostForward {
                host_ip: "127.0.0.1".parse().unwrap(),
                host_port: 18080,
                guest_ip: "172.30.0.2".parse().unwrap(),
                guest_port: 8080,
            }],
        };
        let a = q.args(&s).join(" ");
        assert!(
            a.contains("-netdev user,id=net0,net=172.30.0.0/24,host=172.30.0.1,dns=172.30.0.254,hostfwd=tcp:127.0.0.1:18080-172.30.0.2:8080 "),
            "{a}"
        );
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
