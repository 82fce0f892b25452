//! The two systemd units of a system install, rendered from the layout (pure).
//!
//! - `bangerd-root.service`: `banger-helper`, as root, with the capabilities its
//!   operations need and nothing else.
//! - `bangerd.service`: `bangerd` as the owner, with the state, cache and runtime
//!   directories systemd creates for it (0700, the owner's).
//!
//! Both: `KillMode=process` so a stop or restart signals only the service's own
//! process and guests (QEMU, jailed Firecracker, children in the unit's cgroup) keep
//! running; `RuntimeDirectoryPreserve=yes` so the sockets and per-VM runtime files of
//! running guests survive a restart (the Go banger lost re-adoption without it);
//! `SendSIGKILL=no` because systemd otherwise SIGKILLs whatever is left in the cgroup
//! after the stop timeout, guests included.
//!
//! Two directives differ from the obvious hardening, on purpose:
//! - `bangerd.service` keeps `NoNewPrivileges=no`: image builds run mmdebstrap in
//!   unshare mode, which maps the user's subordinate ids through Debian's setuid (or
//!   file-capability) `newuidmap`/`newgidmap`; no-new-privileges would make them
//!   fail. The capability bounding set limits what any child can gain to exactly
//!   CAP_SETUID and CAP_SETGID (what those two tools use). For the same reason it has
//!   none of the seccomp-based directives ([`IMPLY_NO_NEW_PRIVILEGES`]): systemd turns
//!   no-new-privileges on for a `User=` service that has any of them.
//! - with Firecracker's jailer configured, the helper may write below `/var/lib` as a
//!   whole: it hard-links each guest's disks from the owner's state directory into the
//!   jail, and a hard link cannot cross the separate mounts `ReadWritePaths=` would make
//!   of `/var/lib/banger` and `/var/lib/banger-jail` (EXDEV).

use crate::layout::SystemLayout;

/// Capabilities of the helper without Firecracker: links, taps and nftables, giving
/// its socket to the owner, and binding the guests' DNS port 53 (`bind_dns`).
pub const HELPER_CAPS: &[&str] = &["CAP_NET_ADMIN", "CAP_CHOWN", "CAP_NET_BIND_SERVICE"];
/// What the jailer needs on top (mount namespace and pivot_root, chroot, device nodes,
/// uid/gid change, chown) and the helper for the guest's files (hard links of files
/// it does not own, reading the owner's state directory, stopping a jailer that hangs).
pub const JAILER_CAPS: &[&str] = &[
    "CAP_SYS_ADMIN",
    "CAP_SYS_CHROOT",
    "CAP_MKNOD",
    "CAP_SETUID",
    "CAP_SETGID",
    "CAP_FOWNER",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_KILL",
];
/// The helper's sandbox without a jailer (the jailer needs namespaces, mounts,
/// device nodes and `/dev/kvm`, so it gets none of this): it only opens
/// `/dev/net/tun` (`open_tap`), makes no setuid files and no namespaces, and needs
/// no other user's processes in `/proc`. The system calls are systemd's
/// `@system-service` set (netlink, ioctl, chown and bind are in it). Checked under a
/// real systemd by the e2e section `system_install`, whose probe calls every kind of
/// operation the helper serves there.
pub const HELPER_SANDBOX: &str = "ProtectControlGroups=yes\n\
     MemoryDenyWriteExecute=yes\n\
     RestrictNamespaces=yes\n\
     RestrictSUIDSGID=yes\n\
     DevicePolicy=closed\n\
     DeviceAllow=/dev/net/tun rw\n\
     ProtectProc=invisible\n\
     SystemCallFilter=@system-service\n\
     SystemCallErrorNumber=EPERM\n";

/// The daemon's bounding set (see the module docs).
pub const DAEMON_CAPS: &[&str] = &["CAP_SETUID", "CAP_SETGID"];

/// Directives `banger doctor` expects in both units.
pub const COMMON_HARDENING: &[&str] = &[
    "ProtectSystem=strict",
    "PrivateTmp=yes",
    "KillMode=process",
    "RuntimeDirectoryPreserve=yes",
    "UMask=0077",
];
/// Directives `banger doctor` expects in the helper's unit only. Most are seccomp
/// filters or imply one, which systemd pairs with no-new-privileges in a service
/// without CAP_SYS_ADMIN: fine for the helper, not for the daemon (see
/// [`IMPLY_NO_NEW_PRIVILEGES`]).
pub const HELPER_HARDENING: &[&str] = &[
    "NoNewPrivileges=yes",
    "ProtectHome=yes",
    "LockPersonality=yes",
    "RestrictRealtime=yes",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectClock=yes",
    "ProtectHostname=yes",
    "SystemCallArchitectures=native",
];
/// Directives `banger doctor` expects in the daemon's unit only.
pub const DAEMON_HARDENING: &[&str] = &[
    "ProtectHome=read-only",
    "NoNewPrivileges=no",
    "ProtectControlGroups=yes",
];

/// Directives after which systemd sets no-new-privileges on a service that runs
/// without CAP_SYS_ADMIN (any `User=` service), whatever `NoNewPrivileges=` says
/// (systemd.exec(5); checked under systemd 252: `NoNewPrivs: 1` in bangerd's status
/// with `NoNewPrivileges=no` and these set). The daemon needs privileges to be gainable
/// for mmdebstrap's setuid `newuidmap`/`newgidmap`, so its unit has none of them.
pub const IMPLY_NO_NEW_PRIVILEGES: &[&str] = &[
    "LockPersonality=",
    "MemoryDenyWriteExecute=",
    "PrivateDevices=",
    "ProtectClock=",
    "ProtectHostname=",
    "ProtectKernelTunables=",
    "ProtectKernelModules=",
    "ProtectKernelLogs=",
    "RestrictNamespaces=",
    "RestrictRealtime=",
    "RestrictSUIDSGID=",
    "RestrictFileSystems=",
    "SystemCallArchitectures=",
    "SystemCallFilter=",
    "RestrictAddressFamilies=",
];

fn common(out: &mut String) {
    for d in COMMON_HARDENING {
        out.push_str(d);
        out.push('\n');
    }
}

/// `bangerd-root.service`. `jailer` says whether Firecracker's jailer is configured
/// (`jailer = ...` in helper.toml), which widens its capabilities and write access.
pub fn helper_unit(l: &SystemLayout, jailer: bool) -> String {
    let mut caps: Vec<&str> = HELPER_CAPS.to_vec();
    let mut out = String::new();
    out.push_str(&format!(
        "# Written by `banger system install`; `banger system install` again rewrites it.\n\
         [Unit]\n\
         Description=banger root helper (bridge, taps, NAT{} for bangerd)\n\
         Documentation=man:banger(1)\n\
         Before={}\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={} --config {}\n\
         Restart=on-failure\n\
         RestartSec=1\n\
         SendSIGKILL=no\n\
         TimeoutStopSec=30\n\
         RuntimeDirectory=banger-helper\n\
         RuntimeDirectoryMode=0755\n\
         ProtectKernelTunables=no\n",
        if jailer { ", jailed Firecracker" } else { "" },
        crate::layout::DAEMON_UNIT,
        l.binary("banger-helper").display(),
        l.helper_config().display(),
    ));
    common(&mut out);
    for d in HELPER_HARDENING {
        out.push_str(d);
        out.push('\n');
    }
    if jailer {
        caps.extend_from_slice(JAILER_CAPS);
        out.push_str(&format!(
            "StateDirectory=banger-jail\n\
             StateDirectoryMode=0711\n\
             # Hard links from the owner's state into the jail cannot cross mounts.\n\
             ReadWritePaths={}\n\
             ProtectControlGroups=no\n",
            l.state_dir()
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        ));
    } else {
        out.push_str(HELPER_SANDBOX);
    }
    out.push_str(&format!(
        "CapabilityBoundingSet={}\n\
         RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        caps.join(" ")
    ));
    out
}

/// `bangerd.service`, running as `owner` (login name).
pub fn daemon_unit(l: &SystemLayout, owner: &str) -> String {
    let mut out = format!(
        "# Written by `banger system install`; `banger system install` again rewrites it.\n\
         [Unit]\n\
         Description=banger owner daemon (VMs, images) for {owner}\n\
         Documentation=man:banger(1)\n\
         Wants={helper}\n\
         After={helper} network-online.target\n\
         \n\
         [Service]\n\
         Type=simple\n\
         User={owner}\n\
         ExecStart={bin}\n\
         Restart=on-failure\n\
         RestartSec=1\n\
         SendSIGKILL=no\n\
         TimeoutStopSec=30\n",
        helper = crate::layout::HELPER_UNIT,
        bin = l.binary("bangerd").display(),
    );
    for (k, v) in l.daemon_env() {
        out.push_str(&format!("Environment={k}={v}\n"));
    }
    out.push_str(
        "StateDirectory=banger\n\
         StateDirectoryMode=0700\n\
         CacheDirectory=banger\n\
         CacheDirectoryMode=0700\n\
         RuntimeDirectory=banger\n\
         RuntimeDirectoryMode=0700\n\
         # mmdebstrap's unshare mode runs the setuid newuidmap/newgidmap; seccomp-based\n\
         # directives would turn no-new-privileges on regardless (see banger-system's units.rs).\n\
         NoNewPrivileges=no\n\
         ProtectHome=read-only\n\
         ProtectControlGroups=yes\n",
    );
    common(&mut out);
    out.push_str(&format!(
        "CapabilityBoundingSet={}\n\
         AmbientCapabilities=\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        DAEMON_CAPS.join(" ")
    ));
    out
}

/// Hardening directives missing from `unit` (the text of the helper's unit when
/// `helper`, else the daemon's): what `banger doctor` reports.
pub fn missing_hardening(unit: &str, helper: bool) -> Vec<&'static str> {
    let lines: Vec<&str> = unit.lines().map(str::trim).collect();
    let own = if helper {
        HELPER_HARDENING
    } else {
        DAEMON_HARDENING
    };
    let mut missing: Vec<&'static str> = COMMON_HARDENING
        .iter()
        .chain(own)
        .copied()
        .filter(|d| !lines.contains(d))
        .collect();
    if !lines
        .iter()
        .any(|l| l.starts_with("CapabilityBoundingSet=") && l.len() > 22)
    {
        missing.push("CapabilityBoundingSet=...");
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_carry_their_hardening() {
        let l = SystemLayout::default();
        for jailer in [false, true] {
            let h = helper_unit(&l, jailer);
            assert!(missing_hardening(&h, true).is_empty(), "{h}");
            assert!(h.contains(
                "ExecStart=/usr/local/bin/banger-helper --config /etc/banger/helper.toml"
            ));
            assert!(h.contains("RuntimeDirectory=banger-helper\nRuntimeDirectoryMode=0755"));
            assert!(!h.contains("User="), "the helper runs as root");
            assert_eq!(h.contains("CAP_SYS_ADMIN"), jailer);
            // bind_dns hands the owner a socket on port 53: the helper binds it.
            assert!(
                h.contains("CapabilityBoundingSet=CAP_NET_ADMIN CAP_CHOWN CAP_NET_BIND_SERVICE")
            );
            assert_eq!(h.contains("ReadWritePaths=/var/lib\n"), jailer);
            // The tight sandbox only without the jailer, which needs what it forbids.
            assert_eq!(h.contains(HELPER_SANDBOX), !jailer);
            assert_eq!(h.contains("SystemCallFilter="), !jailer);
        }
        let d = daemon_unit(&l, "alice");
        assert!(missing_hardening(&d, false).is_empty(), "{d}");
        // Nothing that would make systemd set no-new-privileges on the daemon.
        for imply in IMPLY_NO_NEW_PRIVILEGES {
            assert!(
                !d.lines().any(|l| l.starts_with(imply)),
                "{imply} in the daemon's unit"
            );
        }
        assert!(d.contains("User=alice\n"));
        assert!(d.contains("Environment=BANGER_HELPER_SOCKET=/run/banger-helper/helper.sock\n"));
        assert!(d.contains("Environment=XDG_STATE_HOME=/var/lib\n"));
        assert!(d.contains("StateDirectoryMode=0700"));
        assert!(d.contains("CapabilityBoundingSet=CAP_SETUID CAP_SETGID\n"));
        // A unit stripped of a directive is reported.
        let weak = d.replace("ProtectSystem=strict\n", "");
        assert_eq!(missing_hardening(&weak, false), ["ProtectSystem=strict"]);
        // Every line is a section, a comment or key=value.
        for line in h_and_d(&l) {
            assert!(
                line.is_empty()
                    || line.starts_with('#')
                    || line.starts_with('[')
                    || line.contains('='),
                "{line:?}"
            );
        }
    }

    fn h_and_d(l: &SystemLayout) -> Vec<String> {
        let mut v: Vec<String> = helper_unit(l, true).lines().map(str::to_string).collect();
        v.extend(daemon_unit(l, "bob").lines().map(str::to_string));
        v
    }
}
