//! End-to-end section for issue 15: warm snapshots (`banger image warm`).
//!
//! - `image warm` makes a snapshot (0700 directory, 0600 files) that `--list` shows
//!   ready; `vm run -- true` restores from it (its stages say `restore`), and one
//!   cold run beside it prints both wall times (not asserted: tests never assert
//!   timings).
//! - Two VMs restored from one snapshot at once differ in hostname, IP, MAC,
//!   machine-id, ssh host key, boot id and `/dev/urandom` output; both answer (through
//!   the agent and through OpenSSH with their pinned keys); their clocks are within a
//!   second of the host's.
//! - Restored VMs keep working as VMs: a workspace ships to one, `--keep` keeps one,
//!   stop/start keeps its data (a cold boot of its own disks), a daemon `kill -9`
//!   re-adopts it (same boot id).
//! - A snapshot bound to another banger version is not used (a silent cold boot); a
//!   corrupt or truncated state file gives a cold boot and a warning, and so does one
//!   that passes the checksum but QEMU refuses (the restore is undone first).
//! - `image warm --rm` removes it; `image delete` removes an image's snapshots.

use super::{git, run_ok, stderr, stdout, Env};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const IMAGE: &str = "debian-bookworm";

/// The one snapshot directory under the test's state.
fn snapshot_dir(env: &Env) -> PathBuf {
    let warm = env.state().join("warm");
    let img = std::fs::read_dir(&warm)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .next()
        .unwrap_or_else(|| panic!("no image directory under {}", warm.display()));
    std::fs::read_dir(&img)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .unwrap_or_else(|| panic!("no snapshot under {}", img.display()))
}

/// The start stages `vm show NAME` reports.
fn stages(env: &Env, name: &str) -> Vec<String> {
    env.show(name)["timings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["stage"].as_str().unwrap().to_string())
        .collect()
}

/// Whether `--timings` output (stderr) lists `stage` ("  restore   633 ms").
fn timed(stderr: &str, stage: &str) -> bool {
    stderr.lines().any(|l| {
        let mut w = l.split_whitespace();
        w.next() == Some(stage) && l.trim_end().ends_with(" ms")
    })
}

fn warm_ok(env: &Env) {
    let w = env.banger(&["image", "warm", IMAGE]);
    assert!(w.status.success(), "image warm: {}", stderr(&w));
}

/// What identifies a guest, read through its agent, and the host's clock around it.
struct Seen {
    text: Vec<String>,
    guest_time: f64,
    host_before: f64,
    host_after: f64,
}

fn host_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn identity_of(env: &Env, name: &str) -> Seen {
    let host_before = host_now();
    let out = env.banger(&[
        "vm",
        "ssh",
        name,
        "--",
        "date +%s.%N; hostname; cat /sys/class/net/eth0/address; \
         ip -4 -o addr show eth0 | awk '{print $4}'; cat /etc/machine-id; \
         cat /proc/sys/kernel/random/boot_id; cut -d' ' -f2 /etc/ssh/ssh_host_ed25519_key.pub; \
         head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo",
    ]);
    let host_after = host_now();
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 8, "{lines:?}");
    Seen {
        guest_time: lines[0].parse().unwrap(),
        text: lines[1..].to_vec(),
        host_before,
        host_after,
    }
}

pub fn warm(env: &Env) {
    // A cold run first (nothing warmed yet), then the snapshot.
    let t = Instant::now();
    let cold = env.banger(&["vm", "run", "--", "true"]);
    let cold_s = t.elapsed().as_secs_f64();
    assert!(cold.status.success(), "{}", stderr(&cold));
    warm_ok(env);
    let snap = snapshot_dir(env);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&snap), 0o700, "{}", snap.display());
    for f in ["manifest.json", "state.bin", "overlay.ext4", "work.ext4"] {
        assert_eq!(mode(&snap.join(f)), 0o600, "{f}");
    }
    let list = env.banger(&["image", "warm", "--list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(v[0]["image"], IMAGE, "{v}");
    assert_eq!(v[0]["status"], "ready", "{v}");

    // vm run restores (and says nothing special).
    let t = Instant::now();
    let run = env.banger(&["vm", "run", "--timings", "--", "sh", "-c", "echo restored"]);
    let warm_s = t.elapsed().as_secs_f64();
    assert_eq!(stdout(&run), "restored\n", "{}", stderr(&run));
    assert!(
        timed(&stderr(&run), "restore"),
        "no restore stage: {}",
        stderr(&run)
    );
    assert!(!stderr(&run).contains("warning"), "{}", stderr(&run));
    eprintln!("warm: vm run -- true cold {cold_s:.2} s, from the warm snapshot {warm_s:.2} s (printed, not asserted)");
    env.assert_nothing_left();

    // Two restored at once: each its own machine.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| env.banger(&["vm", "create", "wa"]));
        let b = s.spawn(|| env.banger(&["vm", "create", "wb"]));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(a.status.success(), "{}", stderr(&a));
    assert!(b.status.success(), "{}", stderr(&b));
    for n in ["wa", "wb"] {
        assert!(
            stages(env, n).contains(&"restore".to_string()),
            "{n} booted cold"
        );
    }
    let (sa, sb) = (identity_of(env, "wa"), identity_of(env, "wb"));
    let what = [
        "hostname",
        "MAC",
        "IP",
        "machine-id",
        "boot id",
        "host key",
        "urandom",
    ];
    for (i, w) in what.iter().enumerate() {
        assert_ne!(
            sa.text[i], sb.text[i],
            "both restored VMs have the same {w}"
        );
    }
    assert_eq!(sa.text[0], "wa");
    assert_eq!(sb.text[0], "wb");
    for (n, s) in [("wa", &sa), ("wb", &sb)] {
        let v = env.show(n);
        assert_eq!(
            format!("{}/24", v["ip"].as_str().unwrap()),
            s.text[2],
            "{n}"
        );
        assert!(
            s.guest_time > s.host_before - 1.0 && s.guest_time < s.host_after + 1.0,
            "{n}'s clock is off: guest {} host {}..{}",
            s.guest_time,
            s.host_before,
            s.host_after
        );
        // The guest's key is the one pinned for it, and OpenSSH (over the network,
        // checking that pin) gets in.
        let pinned = std::fs::read_to_string(
            env.state()
                .join("vms")
                .join(v["id"].as_str().unwrap())
                .join("host_key.pub"),
        )
        .unwrap();
        assert!(
            pinned.contains(&s.text[5]),
            "{n}: pinned {pinned} guest {}",
            s.text[5]
        );
        let ssh = env.banger(&["vm", "ssh", n, "--via-ssh", "--", "hostname"]);
        assert_eq!(stdout(&ssh).trim(), n, "{}", stderr(&ssh));
    }
    // The guests reach each other (each has its own address on the bridge).
    let ping = env.banger(&[
        "vm",
        "ssh",
        "wa",
        "--",
        &format!(
            "timeout 10 bash -c 'exec 3<>/dev/tcp/{}/22 && head -c 7 <&3'",
            sb.text[2].trim_end_matches("/24")
        ),
    ]);
    assert!(
        stdout(&ping).starts_with("SSH-2.0"),
        "wa cannot reach wb: {}",
        stderr(&ping)
    );

    // Stop/start keeps data (a cold boot of its own disks); a daemon kill -9 re-adopts.
    env.ssh("wa", "echo kept > /root/kept.txt");
    assert!(env.banger(&["vm", "stop", "wa"]).status.success());
    assert!(env.banger(&["vm", "start", "wa"]).status.success());
    assert_eq!(env.ssh("wa", "cat /root/kept.txt; hostname"), "kept\nwa\n");
    let boot = env.ssh("wb", "cat /proc/sys/kernel/random/boot_id");
    let pid = env.daemon_pid();
    run_ok(Command::new("kill").args(["-9", &pid.to_string()]));
    while Path::new(&format!("/proc/{pid}")).exists() {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(env.ssh("wb", "cat /proc/sys/kernel/random/boot_id"), boot);
    assert!(env
        .banger(&["vm", "delete", "-f", "wa", "wb"])
        .status
        .success());

    // A workspace ships to a restored VM; --keep keeps it.
    let repo = env.home.path().join("warm-src/proj");
    std::fs::create_dir_all(&repo).unwrap();
    git(env, &repo, "git init -q -b main . && git config user.email dev@example.com && git config user.name Dev");
    std::fs::write(repo.join("README"), "warm hello\n").unwrap();
    git(env, &repo, "git add -A && git commit -q -m base");
    let ws = env.banger(&[
        "vm",
        "run",
        "--keep",
        "--name",
        "wk",
        repo.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "pwd; cat README",
    ]);
    assert_eq!(stdout(&ws), "/root/proj\nwarm hello\n", "{}", stderr(&ws));
    assert!(stages(env, "wk").contains(&"restore".to_string()));
    assert_eq!(env.ssh("wk", "hostname"), "wk\n");
    assert!(env.banger(&["vm", "delete", "-f", "wk"]).status.success());

    // A snapshot of another banger version: not used, nothing said.
    let manifest = snap.join("manifest.json");
    let original = std::fs::read_to_string(&manifest).unwrap();
    let mut m: serde_json::Value = serde_json::from_str(&original).unwrap();
    m["binding"]["banger"] = "0.0.1 0000000".into();
    std::fs::write(&manifest, serde_json::to_vec(&m).unwrap()).unwrap();
    let stale = env.banger(&["vm", "create", "ws", "--timings"]);
    assert!(stale.status.success(), "{}", stderr(&stale));
    assert!(
        !stages(env, "ws").contains(&"restore".to_string()),
        "a stale snapshot was used"
    );
    assert!(!stderr(&stale).contains("warning"), "{}", stderr(&stale));
    let list = env.banger(&["image", "warm", "--list"]);
    assert!(
        stdout(&list).contains("stale (another banger version)"),
        "{}",
        stdout(&list)
    );
    assert!(env.banger(&["vm", "delete", "-f", "ws"]).status.success());
    std::fs::write(&manifest, &original).unwrap();

    // A corrupt state file (same length, bytes flipped): cold boot and a warning.
    let state = snap.join("state.bin");
    let good = std::fs::read(&state).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    for b in &mut bad[mid..mid + 4096] {
        *b ^= 0x5a;
    }
    std::fs::write(&state, &bad).unwrap();
    let corrupt = env.banger(&["vm", "run", "--timings", "--", "echo", "cold"]);
    assert_eq!(stdout(&corrupt), "cold\n", "{}", stderr(&corrupt));
    assert!(
        stderr(&corrupt).contains("warning:"),
        "{}",
        stderr(&corrupt)
    );
    assert!(stderr(&corrupt).contains("corrupt"), "{}", stderr(&corrupt));
    assert!(!timed(&stderr(&corrupt), "restore"), "{}", stderr(&corrupt));
    // Truncated: likewise.
    std::fs::write(&state, &good[..good.len() / 3]).unwrap();
    let truncated = env.banger(&["vm", "run", "--", "echo", "cold"]);
    assert_eq!(stdout(&truncated), "cold\n", "{}", stderr(&truncated));
    assert!(
        stderr(&truncated).contains("truncated"),
        "{}",
        stderr(&truncated)
    );
    env.assert_nothing_left();
    // A state whose checksum holds but QEMU refuses (its stream header damaged, the
    // manifest's checksum forged to match): the restore fails, is undone, and the
    // start goes on cold with a warning.
    let mut refused = good.clone();
    refused[..4].copy_from_slice(b"XXXX");
    std::fs::write(&state, &refused).unwrap();
    let mut m: serde_json::Value = serde_json::from_str(&original).unwrap();
    m["state_crc32"] = format!("{:08x}", crc32fast::hash(&refused)).into();
    std::fs::write(&manifest, serde_json::to_vec(&m).unwrap()).unwrap();
    let fell_back = env.banger(&["vm", "run", "--timings", "--", "echo", "cold"]);
    assert_eq!(stdout(&fell_back), "cold\n", "{}", stderr(&fell_back));
    assert!(
        stderr(&fell_back).contains("warning: restoring"),
        "{}",
        stderr(&fell_back)
    );
    assert!(timed(&stderr(&fell_back), "boot"), "{}", stderr(&fell_back));
    env.assert_nothing_left();
    std::fs::write(&state, &good).unwrap();
    std::fs::write(&manifest, &original).unwrap();

    // --rm, then image delete removes what a new warm makes.
    let rm = env.banger(&["image", "warm", IMAGE, "--rm"]);
    assert!(stdout(&rm).contains("removed 1"), "{}", stdout(&rm));
    assert!(!snap.exists());
    warm_ok(env);
    let warm_dir = env.state().join("warm");
    assert_eq!(std::fs::read_dir(&warm_dir).unwrap().count(), 1);
    let del = env.banger(&["image", "delete", IMAGE]);
    assert!(del.status.success(), "{}", stderr(&del));
    assert_eq!(
        std::fs::read_dir(&warm_dir).unwrap().count(),
        0,
        "image delete left its snapshots"
    );
}
