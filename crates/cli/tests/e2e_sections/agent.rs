//! End-to-end sections for issue 14: commands through banger's guest agent.
//!
//! - `agent_exec`: `vm run` output and exit status through the agent, stdin piping, a
//!   missing program (127), the fast init by default (`vm show`), four `vm exec` at
//!   once in one VM, OpenSSH still there (the agent starts the image's sshd), and an
//!   interactive `vm ssh` on a pseudo-terminal driven through tmux (`stty size` follows
//!   a resize, ctrl-c interrupts the foreground job, the exit status comes back).
//! - `busybox`: an image with nothing but a static busybox (no systemd, no sshd, no
//!   libc), pushed to a local registry, pulled, and run.
//! - `musl`: an Alpine-like image (busybox, musl's loader and libc, a program linked
//!   against them), likewise.
//! - `nosystemd`: the default Debian tree without systemd and sshd, likewise.
//! - `boot_bench`: `vm run -- true` cold with the fast init, with systemd, and with
//!   systemd plus OpenSSH (the path before the agent), side by side; printed, not
//!   asserted (tests never assert timings).

use super::{push_image, start_registry, stderr, stdout, tar_dir, Env};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub fn agent_exec(env: &Env) {
    // Output and exit status through the agent; nothing left afterwards.
    let out = env.banger(&["vm", "run", "--", "sh", "-c", "echo hi; exit 3"]);
    assert_eq!(stdout(&out), "hi\n", "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(3));
    env.assert_nothing_left();

    let keep = env.banger(&[
        "vm",
        "run",
        "--keep",
        "--name",
        "ag",
        "--timings",
        "--",
        "true",
    ]);
    assert!(keep.status.success(), "{}", stderr(&keep));
    let shown = env.show("ag");
    assert_eq!(shown["init"], "agent");

    // stdin reaches the command; its end is seen.
    let mut c = env.cmd(true, &["vm", "ssh", "ag", "--", "wc", "-c"]);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let data = vec![b'x'; 3 * 1024 * 1024 + 7];
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&data).unwrap());
    let piped = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert_eq!(stdout(&piped).trim(), "3145735", "{}", stderr(&piped));

    // Missing program and stderr kept apart from stdout.
    let missing = env.banger(&["vm", "ssh", "ag", "--", "no-such-program", "x"]);
    assert_eq!(missing.status.code(), Some(127), "{}", stderr(&missing));
    let split = env.banger(&["vm", "ssh", "ag", "--", "echo out; echo err >&2"]);
    assert_eq!(stdout(&split), "out\n");
    assert!(stderr(&split).contains("err"), "{}", stderr(&split));

    // Four commands at once in one VM, each with its own output and status.
    let t = Instant::now();
    let runs: Vec<_> = (1..=4)
        .map(|i| {
            let c = env.cmd(
                true,
                &[
                    "vm",
                    "exec",
                    "ag",
                    "--",
                    "sh",
                    "-c",
                    &format!("sleep 2; echo run-{i}; exit {}", 10 + i),
                ],
            );
            std::thread::spawn(move || {
                let mut c = c;
                c.output().unwrap()
            })
        })
        .collect();
    for (i, r) in runs.into_iter().enumerate() {
        let o = r.join().unwrap();
        let i = i + 1;
        assert_eq!(stdout(&o), format!("run-{i}\n"), "{}", stderr(&o));
        assert_eq!(o.status.code(), Some(10 + i as i32));
    }
    eprintln!(
        "4 concurrent vm exec (each sleeping 2 s) took {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // OpenSSH still works for the user's own tools: the agent started the image's sshd.
    let via = env.banger(&["vm", "ssh", "ag", "--via-ssh", "--", "hostname"]);
    assert_eq!(stdout(&via), "ag\n", "{}", stderr(&via));

    interactive_pty(env, "ag");

    assert!(env.banger(&["vm", "delete", "-f", "ag"]).status.success());
    env.assert_nothing_left();
}

/// `vm ssh NAME` on a real terminal (tmux): a pty whose size follows the window,
/// ctrl-c reaching the foreground job, and the shell's exit status.
fn interactive_pty(env: &Env, vm: &str) {
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("skipping the interactive pty check: tmux is not installed");
        return;
    }
    let dir = env.home.path().join("tmux");
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("sock");
    let status_file = dir.join("status");
    let script = dir.join("shell.sh");
    let banger = super::banger_bin();
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexport BANGER_HOME={home}\nunset XDG_RUNTIME_DIR\nip netns exec {ns} {owner}{banger} vm ssh {vm}\necho \"exit=$?\" > {status}\nsleep 30\n",
            home = env.home.path().display(),
            ns = env.netns,
            owner = env.shell_prefix(),
            banger = banger.display(),
            status = status_file.display(),
        ),
    )
    .unwrap();
    let tmux = |args: &[&str]| {
        let o = Command::new("tmux")
            .arg("-S")
            .arg(&sock)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    tmux(&[
        "new-session",
        "-d",
        "-x",
        "100",
        "-y",
        "30",
        "sh",
        &script.display().to_string(),
    ]);
    let screen = || tmux(&["capture-pane", "-p", "-J", "-S", "-200"]);
    let wait_for = |what: &str| {
        let t = Instant::now();
        loop {
            let s = screen();
            if s.contains(what) {
                return s;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "no {what:?} on the terminal:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    // The prompt, then the terminal's size as the guest sees it.
    tmux(&["send-keys", "echo ready-$((6*7))", "Enter"]);
    wait_for("ready-42");
    // Markers are computed by the guest's shell, so the typed line never matches.
    tmux(&["send-keys", "stty size; echo size-$((1+1))-done", "Enter"]);
    let s = wait_for("size-2-done");
    assert!(s.contains("30 100"), "stty size before the resize:\n{s}");
    tmux(&["resize-window", "-x", "120", "-y", "40"]);
    std::thread::sleep(Duration::from_secs(1));
    tmux(&[
        "send-keys",
        "clear; stty size; echo size-$((1+2))-done",
        "Enter",
    ]);
    let s = wait_for("size-3-done");
    assert!(s.contains("40 120"), "stty size after the resize:\n{s}");
    // ctrl-c interrupts the foreground job, not the session.
    tmux(&["send-keys", "sleep 300; echo slept-$((1+1))", "Enter"]);
    std::thread::sleep(Duration::from_secs(2));
    tmux(&["send-keys", "C-c"]);
    tmux(&["send-keys", "echo after-int-$((2+2))", "Enter"]);
    let s = wait_for("after-int-4");
    assert!(!s.contains("slept-2"), "sleep was not interrupted:\n{s}");
    tmux(&["send-keys", "exit 5", "Enter"]);
    let t = Instant::now();
    let status = loop {
        if let Ok(s) = std::fs::read_to_string(&status_file) {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the session did not end:\n{}",
            screen()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status.trim(), "exit=5");
    tmux(&["kill-server"]);
}

/// Download Debian `packages` (`apt-get download`) into `dir` and unpack them into
/// `dir/x`; `None` (with the reason printed) when Debian's archive is out of reach.
fn debs(dir: &std::path::Path, packages: &[&str]) -> Option<std::path::PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let dl = Command::new("apt-get")
        .arg("download")
        .args(packages)
        .current_dir(dir)
        .output()
        .unwrap();
    let debs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    if !dl.status.success() || debs.len() < packages.len() {
        eprintln!(
            "apt-get download {packages:?} failed: {}",
            String::from_utf8_lossy(&dl.stderr)
        );
        return None;
    }
    let x = dir.join("x");
    for deb in debs {
        assert!(Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(&x)
            .status()
            .unwrap()
            .success());
    }
    Some(x)
}

/// A root with a static busybox and its applet links, and nothing else.
pub(crate) fn busybox_root(work: &std::path::Path) -> Option<std::path::PathBuf> {
    let x = debs(&work.join("debs"), &["busybox-static"])?;
    let root = work.join("root");
    for d in ["bin", "etc", "root", "tmp", "proc", "sys", "dev"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(x.join("bin/busybox"), root.join("bin/busybox")).unwrap();
    for applet in ["sh", "echo", "cat", "ls", "uname", "id", "env", "sleep"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    Some(root)
}

/// Push `root` as `repo:1`, pull it on the host network, run `args` in a fresh VM of
/// it; returns the run's output after checking nothing is left.
pub(crate) fn pull_and_run(
    env: &Env,
    work: &std::path::Path,
    root: &std::path::Path,
    repo: &str,
    args: &[&str],
) -> Option<std::process::Output> {
    let reg = match start_registry(work) {
        Ok(r) => r,
        Err(why) => {
            eprintln!("skipping e2e image {repo}: {why}");
            return None;
        }
    };
    push_image(&reg.1, &format!("banger/{repo}:1"), vec![tar_dir(root)]);
    let image = format!("{repo}-1");
    assert!(env.banger(&["daemon", "stop"]).status.success());
    let pulled = env.banger_host(&["image", "pull", &format!("{}/banger/{repo}:1", reg.1)]);
    assert!(pulled.status.success(), "{}", stderr(&pulled));
    assert!(stdout(&pulled).contains(&image), "{}", stdout(&pulled));
    let listed = env.banger_host(&["image", "list"]);
    assert!(stdout(&listed).contains(&image));
    assert!(env.banger_host(&["daemon", "stop"]).status.success());
    let mut run = vec!["vm", "run", "--image", image.as_str(), "--"];
    run.extend(args);
    let out = env.banger(&run);
    env.assert_nothing_left();
    assert!(env.banger(&["image", "delete", &image]).status.success());
    Some(out)
}

pub fn busybox(env: &Env) {
    let work = env.home.path().join("busybox");
    let Some(root) = busybox_root(&work) else {
        eprintln!("skipping e2e busybox: no busybox-static");
        return;
    };
    let Some(out) = pull_and_run(
        env,
        &work,
        &root,
        "busybox",
        &["sh", "-c", "echo hi; exit 3"],
    ) else {
        return;
    };
    assert_eq!(stdout(&out), "hi\n", "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(3));
}

/// An Alpine-like image: busybox plus musl's dynamic loader and libc, and a program
/// linked against them (built here with the host's gcc and Debian's musl-dev).
pub fn musl(env: &Env) {
    let work = env.home.path().join("musl");
    let Some(root) = busybox_root(&work) else {
        eprintln!("skipping e2e musl: no busybox-static");
        return;
    };
    let Some(x) = debs(&work.join("musl-debs"), &["musl", "musl-dev"]) else {
        eprintln!("skipping e2e musl: no musl packages");
        return;
    };
    let src = work.join("hello.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\nint main(int c, char **v) { printf(\"hi from musl %s\\n\", c > 1 ? v[1] : \"\"); return 3; }\n",
    )
    .unwrap();
    let lib = x.join("usr/lib/x86_64-linux-musl");
    let gcc_include = Command::new("gcc").arg("-print-file-name=include").output();
    let Ok(gcc_include) = gcc_include else {
        eprintln!("skipping e2e musl: no gcc on this host");
        return;
    };
    let gcc_include = String::from_utf8_lossy(&gcc_include.stdout)
        .trim()
        .to_string();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    let built = Command::new("gcc")
        .arg("-nostdinc")
        .arg("-isystem")
        .arg(x.join("usr/include/x86_64-linux-musl"))
        .arg("-isystem")
        .arg(&gcc_include)
        .args(["-nostdlib", "-nostartfiles"])
        .arg(lib.join("Scrt1.o"))
        .arg(lib.join("crti.o"))
        .arg(&src)
        .arg(format!("-L{}", x.join("lib/x86_64-linux-musl").display()))
        .arg("-lc")
        .arg(lib.join("crtn.o"))
        .arg("-Wl,-dynamic-linker,/lib/ld-musl-x86_64.so.1")
        .arg("-o")
        .arg(root.join("usr/bin/hello"))
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", stderr(&built));
    std::fs::create_dir_all(root.join("lib/x86_64-linux-musl")).unwrap();
    std::fs::copy(
        x.join("lib/x86_64-linux-musl/libc.so"),
        root.join("lib/x86_64-linux-musl/libc.so"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        "x86_64-linux-musl/libc.so",
        root.join("lib/ld-musl-x86_64.so.1"),
    )
    .unwrap();
    // A program, not a shell line: the guest's dynamic loader runs it.
    let Some(out) = pull_and_run(env, &work, &root, "musl", &["hello", "there"]) else {
        return;
    };
    assert_eq!(stdout(&out), "hi from musl there\n", "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(3));
}

/// A Debian image without systemd or sshd (the default image's tree with both
/// removed): pulled from a local registry, booted with the fast init, runs commands.
pub fn debian_without_systemd(env: &Env) {
    let work = env.home.path().join("nosystemd");
    std::fs::create_dir_all(&work).unwrap();
    let root = work.join("root");
    env.dump_default_rootfs(&root);
    for gone in [
        "usr/lib/systemd/systemd",
        "usr/sbin/init",
        "sbin/init",
        "usr/sbin/sshd",
    ] {
        let _ = std::fs::remove_file(root.join(gone));
    }
    assert!(!root.join("usr/sbin/sshd").exists());
    let Some(out) = pull_and_run(
        env,
        &work,
        &root,
        "nosystemd",
        &[
            "sh",
            "-c",
            "test ! -e /usr/lib/systemd/systemd && echo hi; exit 3",
        ],
    ) else {
        return;
    };
    let _ = std::fs::remove_dir_all(&root);
    assert_eq!(stdout(&out), "hi\n", "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(3));
}

pub fn boot_bench(env: &Env) {
    let runs: [(&str, &[&str]); 3] = [
        (
            "fast init (agent), exec via agent",
            &["vm", "run", "--", "true"],
        ),
        (
            "systemd, exec via agent",
            &["vm", "run", "--init", "systemd", "--", "true"],
        ),
        (
            "systemd, exec via ssh (the path before the agent)",
            &["vm", "run", "--init", "systemd", "--via-ssh", "--", "true"],
        ),
    ];
    let mut lines = Vec::new();
    for round in 1..=2 {
        for (what, args) in runs {
            let t = Instant::now();
            let o = env.banger(args);
            let secs = t.elapsed().as_secs_f64();
            assert!(o.status.success(), "{what}: {}", stderr(&o));
            let line = format!("round {round}: vm run -- true, {what}: {secs:.1} s");
            eprintln!("boot_bench: {line}");
            lines.push(line);
        }
    }
    lines.extend(workspace_bench(env));
    env.assert_nothing_left();
    eprintln!("=== boot_bench (QEMU TCG on this machine)");
    for l in lines {
        eprintln!("{l}");
    }
}

/// Ship a 100 MB / 10k-file repository (plus its `.git`) into one VM through the agent
/// and over ssh.
fn workspace_bench(env: &Env) -> Vec<String> {
    let repo = env.home.path().join("bigrepo");
    for d in 0..100 {
        let dir = repo.join(format!("d{d:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            // Incompressible, like source plus binaries after compression would be.
            let mut data = vec![0u8; 10 * 1024];
            let mut x: u64 = (d * 1000 + f + 1) as u64;
            for b in data.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            std::fs::write(dir.join(format!("f{f:03}.bin")), data).unwrap();
        }
    }
    // The user's repository (privsep mode: the owner's; git refuses other users').
    env.give(&repo);
    let git = |args: &[&str]| {
        let o = env
            .program(false, "600", "git")
            .arg("-C")
            .arg(&repo)
            // No background gc: it would repack .git while the ship walks it.
            .args(["-c", "user.name=b", "-c", "user.email=b@example.invalid"])
            .args(["-c", "gc.auto=0"])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "git {args:?}: {}", stderr(&o));
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "big"]);
    let create = env.banger(&["vm", "create", "wsb"]);
    assert!(create.status.success(), "{}", stderr(&create));
    let repo_s = repo.display().to_string();
    let mut lines = Vec::new();
    for (what, extra) in [("agent", None), ("ssh", Some("--via-ssh"))] {
        let mut args = vec!["vm", "workspace", "prepare", "wsb", repo_s.as_str()];
        args.extend(extra);
        let t = Instant::now();
        let o = env.banger(&args);
        assert!(o.status.success(), "{what}: {}", stderr(&o));
        let line = format!(
            "workspace prepare (100 MB / 10k files + .git) via {what}: {:.1} s ({})",
            t.elapsed().as_secs_f64(),
            stderr(&o).trim()
        );
        eprintln!("boot_bench: {line}");
        lines.push(line);
    }
    let n = env.banger(&[
        "vm",
        "exec",
        "wsb",
        "--",
        "sh",
        "-c",
        "find . -name '*.bin' | wc -l",
    ]);
    assert_eq!(stdout(&n).trim(), "10000", "{}", stderr(&n));
    assert!(env.banger(&["vm", "delete", "-f", "wsb"]).status.success());
    let _ = std::fs::remove_dir_all(&repo);
    lines
}
