//! The agent's server (`banger-agent serve --listen`) on a unix socket, driven by the
//! host's client (`banger_guest::client`): concurrent execs, a pty with resize and
//! signals, stdin piping, tar put/get, reconnects, and hostile peers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use banger_channel::{Command, ErrorKind, Exec, User, WinSize};
use banger_guest::client::{argv, shell, AgentClient, ClientError, Endpoint, ExecSession};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A running `banger-agent serve --listen` and its socket.
struct Agent {
    child: Child,
    sock: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> Agent {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("agent.sock");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_banger-agent"))
        .args(["serve", "--listen"])
        .arg(&sock)
        .stdin(Stdio::null())
        .spawn()
        .expect("start the agent");
    let t = Instant::now();
    // The socket file appears at bind(), before listen(): wait until it accepts.
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the agent never listened"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    Agent {
        child,
        sock,
        _dir: dir,
    }
}

fn client(a: &Agent) -> AgentClient {
    AgentClient::new(Endpoint::Serial(a.sock.clone()))
}

async fn read_to_string(mut r: impl tokio::io::AsyncRead + Unpin) -> String {
    let mut s = String::new();
    r.read_to_string(&mut s).await.expect("read");
    s
}

/// Output and exit code of a finished exec.
async fn finish(x: &ExecSession) -> (String, String, i32) {
    let (out, err, status) = tokio::join!(
        read_to_string(x.stdout()),
        read_to_string(x.stderr()),
        x.wait()
    );
    (out, err, status.expect("exit").shell_code())
}

#[tokio::test]
async fn four_concurrent_execs_keep_their_own_output_and_status() {
    let a = agent();
    let c = client(&a);
    let pong = c.ping().await.expect("ping");
    assert_eq!(pong.init, "socket");
    let mut jobs = Vec::new();
    for i in 0..4 {
        let x = c
            .exec(shell(format!(
                "for n in 1 2 3; do echo out-{i}-$n; echo err-{i}-$n >&2; sleep 0.05; done; exit {i}"
            )))
            .await
            .expect("exec");
        jobs.push((i, x));
    }
    // Each read concurrently on its own task, over the one connection.
    let tasks: Vec<_> = jobs
        .into_iter()
        .map(|(i, x)| tokio::spawn(async move { (i, finish(&x).await) }))
        .collect();
    for t in tasks {
        let (i, (out, err, code)) = t.await.expect("task");
        assert_eq!(out, format!("out-{i}-1\nout-{i}-2\nout-{i}-3\n"));
        assert_eq!(err, format!("err-{i}-1\nerr-{i}-2\nerr-{i}-3\n"));
        assert_eq!(code, i);
    }
}

#[tokio::test]
async fn stdin_is_piped_through_with_end_of_file() {
    let a = agent();
    let c = client(&a);
    let x = c.exec(argv(["wc", "-c"])).await.expect("exec");
    let data = vec![b'x'; 3_000_000];
    let mut stdin = x.stdin();
    let writer = async move {
        stdin.write_all(&data).await.expect("write");
        stdin.shutdown().await.expect("eof");
    };
    let ((), (out, _, code)) = tokio::join!(writer, finish(&x));
    assert_eq!(out.trim(), "3000000");
    assert_eq!(code, 0);
}

#[tokio::test]
async fn env_cwd_user_and_errors() {
    let a = agent();
    let c = client(&a);
    let dir = tempfile::tempdir().expect("dir");
    let mut req = shell("echo \"$FOO:$(pwd):$HOME\"");
    req.env = BTreeMap::from([("FOO".to_string(), "bar".to_string())]);
    req.cwd = Some(dir.path().display().to_string());
    let (out, _, _) = finish(&c.exec(req).await.expect("exec")).await;
    assert_eq!(out, format!("bar:{}:/root\n", dir.path().display()));

    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let mut req = argv(["id", "-u"]);
        req.user = Some(User::Uid(65534));
        let (out, _, code) = finish(&c.exec(req).await.expect("exec")).await;
        assert_eq!((out.trim(), code), ("65534", 0));
    } else {
        println!("skipping the user switch: not root");
    }

    match c.exec(argv(["no-such-program-here"])).await {
        Err(ClientError::Refused(e)) => assert_eq!(e.kind, ErrorKind::NotFound, "{}", e.message),
        other => panic!("expected not found, got {other:?}"),
    }
    let mut req = argv(["true"]);
    req.cwd = Some("/no/such/dir".into());
    assert!(
        matches!(c.exec(req).await, Err(ClientError::Refused(e)) if e.kind == ErrorKind::NotFound)
    );
    let mut req = argv(["true"]);
    req.user = Some(User::Name("no-such-user-here".into()));
    assert!(
        matches!(c.exec(req).await, Err(ClientError::Refused(e)) if e.kind == ErrorKind::NotFound)
    );
    // Shutdown is refused on a unix socket: the test host stays up.
    assert!(
        matches!(c.shutdown().await, Err(ClientError::Refused(e)) if e.kind == ErrorKind::Refused)
    );
}

/// Read the pty until `want` shows up; returns everything read.
async fn read_until(r: &mut (impl tokio::io::AsyncRead + Unpin), want: &str) -> String {
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let read = async {
        while !seen.contains(want) {
            let n = r.read(&mut buf).await.expect("read pty");
            assert!(n > 0, "the pty closed before {want:?}; saw {seen:?}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .unwrap_or_else(|_| panic!("no {want:?} on the pty; saw {seen:?}"));
    seen
}

/// A `sleep` duration no other process on this host uses (other test runs of this
/// same test may run beside it), so [`wait_sleep_in_foreground`] finds our sleep.
fn unique_sleep() -> String {
    format!("{}", 100_000 + std::process::id())
}

/// Wait until our `sleep` ([`unique_sleep`]) is its terminal's foreground job (read
/// from /proc: the agent runs on this host), so a signal cannot land before the
/// shell handed over.
async fn wait_sleep_in_foreground() {
    let want = format!("sleep\x00{}\x00", unique_sleep());
    let t = Instant::now();
    loop {
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            if cmd != want.as_bytes() {
                continue;
            }
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let f: Vec<&str> = stat
                .rsplit_once(") ")
                .map(|(_, a)| a.split_whitespace().collect())
                .unwrap_or_default();
            // Fields after the name: state, ppid, pgrp, session, tty_nr, tpgid.
            if f.len() > 5 && f[2] == f[5] {
                return;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "sleep never ran in the foreground"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_pty_session_follows_resizes_and_takes_signals() {
    let a = agent();
    let c = client(&a);
    let req = Exec {
        command: Command::Argv(vec!["sh".into(), "-i".into()]),
        env: BTreeMap::from([("PS1".to_string(), "$ ".to_string())]),
        clear_env: false,
        cwd: None,
        user: None,
        pty: Some(WinSize { rows: 24, cols: 80 }),
    };
    let x = c.exec(req).await.expect("exec");
    let mut out = x.stdout();
    let mut inp = x.stdin();
    inp.write_all(b"tty; stty size\n").await.expect("type");
    let seen = read_until(&mut out, "24 80").await;
    assert!(seen.contains("/dev/pts/"), "{seen}");

    x.resize(50, 132).expect("resize");
    inp.write_all(b"stty size\n").await.expect("type");
    read_until(&mut out, "50 132").await;

    // A signal from the host reaches the foreground job, not the shell.
    // (An interrupted shell drops the rest of the line, so the check is a new line.)
    // `slee""ping` is what the shell prints, not what the terminal echoes.
    let sleep = unique_sleep();
    inp.write_all(format!("echo slee\"\"ping; sleep {sleep}\n").as_bytes())
        .await
        .expect("type");
    read_until(&mut out, "sleeping").await;
    wait_sleep_in_foreground().await;
    x.signal(libc::SIGINT).expect("signal");
    inp.write_all(b"echo sleep-ended-$?\n").await.expect("type");
    read_until(&mut out, "sleep-ended-130").await;

    // So does a typed ctrl-c (the terminal's own line discipline).
    inp.write_all(format!("echo slee\"\"ping-again; sleep {sleep}\n").as_bytes())
        .await
        .expect("type");
    read_until(&mut out, "sleeping-again").await;
    wait_sleep_in_foreground().await;
    inp.write_all(b"\x03").await.expect("ctrl-c");
    inp.write_all(b"echo again-$?\n").await.expect("type");
    read_until(&mut out, "again-130").await;

    inp.write_all(b"exit 7\n").await.expect("type");
    let status = tokio::time::timeout(Duration::from_secs(20), async {
        let drain = async {
            let mut sink = Vec::new();
            let _ = out.read_to_end(&mut sink).await;
        };
        let (_, s) = tokio::join!(drain, x.wait());
        s
    })
    .await
    .expect("the shell exited")
    .expect("exit status");
    assert_eq!(status.code, Some(7));
}

#[tokio::test]
async fn a_signal_stops_a_process_without_a_pty() {
    let a = agent();
    let c = client(&a);
    let x = c.exec(argv(["sleep", "100"])).await.expect("exec");
    x.signal(libc::SIGTERM).expect("signal");
    let status = tokio::time::timeout(Duration::from_secs(20), x.wait())
        .await
        .expect("ended")
        .expect("status");
    assert_eq!((status.code, status.signal), (None, Some(libc::SIGTERM)));
}

fn build_tar(root: &Path) -> Vec<u8> {
    std::fs::create_dir_all(root.join("src/deep")).expect("mkdir");
    std::fs::write(root.join("src/deep/file.txt"), b"hello deep\n").expect("write");
    std::fs::write(
        root.join("big.bin"),
        (0..2_000_000u32).map(|i| i as u8).collect::<Vec<_>>(),
    )
    .expect("write");
    std::os::unix::fs::symlink("src/deep/file.txt", root.join("link")).expect("symlink");
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all("repo", root).expect("tar");
    b.into_inner().expect("tar")
}

fn tar_entries(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut ar = tar::Archive::new(bytes);
    let mut m = BTreeMap::new();
    for e in ar.entries().expect("entries") {
        let mut e = e.expect("entry");
        let path = e.path().expect("path").display().to_string();
        let mut data = Vec::new();
        if let Some(l) = e.link_name().expect("link") {
            data = format!("-> {}", l.display()).into_bytes();
        } else {
            e.read_to_end(&mut data).expect("data");
        }
        m.insert(path.trim_end_matches('/').to_string(), data);
    }
    m
}

#[tokio::test]
async fn tar_put_and_get_round_trip() {
    let a = agent();
    let c = client(&a);
    let src = tempfile::tempdir().expect("src");
    let tar = build_tar(src.path());
    let dst = tempfile::tempdir().expect("dst");
    let into = dst.path().join("ws");
    let done = c
        .put(&into.display().to_string(), false, &tar[..])
        .await
        .expect("put");
    assert_eq!(done.bytes, 2_000_000 + 11);
    assert_eq!(
        std::fs::read(into.join("repo/src/deep/file.txt")).expect("read"),
        b"hello deep\n"
    );
    assert_eq!(
        std::fs::read_link(into.join("repo/link")).expect("link"),
        Path::new("src/deep/file.txt")
    );

    let mut g = c
        .get(&into.join("repo").display().to_string())
        .await
        .expect("get");
    let mut back = Vec::new();
    g.read_to_end(&mut back).await.expect("read tar");
    let done = g.finish().await.expect("finish");
    assert_eq!(done.bytes, 2_000_000 + 11);
    assert_eq!(tar_entries(&back), tar_entries(&tar));

    match c.get("/no/such/path/here").await {
        Err(ClientError::Refused(e)) => assert_eq!(e.kind, ErrorKind::NotFound),
        other => panic!("expected not found, got {other:?}"),
    }
    // An archive that escapes its directory is refused entry by entry, nothing written.
    let mut evil = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(4);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.as_gnu_mut().expect("gnu").name[..12].copy_from_slice(b"../escape.tx");
    h.set_cksum();
    evil.append(&h, &b"evil"[..]).expect("append");
    let evil = evil.into_inner().expect("tar");
    let _ = c
        .put(&into.join("jail").display().to_string(), false, &evil[..])
        .await;
    assert!(!into.join("escape.tx").exists());
}

/// The children of `pid` as (state, stat line).
fn children_of(pid: u32) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some(after) = stat.rsplit_once(") ").map(|(_, a)| a) else {
            continue;
        };
        let f: Vec<&str> = after.split_whitespace().collect();
        if f.len() > 1 && f[1] == pid.to_string() {
            out.push((f[0].to_string(), stat.clone()));
        }
    }
    out
}

#[tokio::test]
async fn orphans_are_reaped_and_reconnects_work() {
    let a = agent();
    let c = client(&a);
    // The background sleep outlives its shell and is reparented to the agent (a
    // subreaper), which must reap it when it ends: then the agent has no child left.
    let x = c
        .exec(shell("sleep 2 </dev/null >/dev/null 2>&1 & exit 0"))
        .await
        .expect("exec");
    assert_eq!(finish(&x).await.2, 0);
    let adopted = children_of(a.child.id());
    assert!(
        adopted.iter().any(|(_, stat)| stat.contains("(sleep)")),
        "the orphan was not adopted by the agent: {adopted:?}"
    );
    let t = Instant::now();
    loop {
        let kids = children_of(a.child.id());
        if kids.is_empty() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the agent still has children (a zombie was not reaped?): {kids:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    c.disconnect().await;
    assert_eq!(
        finish(&c.exec(argv(["echo", "again"])).await.expect("exec"))
            .await
            .0,
        "again\n"
    );
}

/// Peak resident memory of a process (VmHWM, KiB).
fn hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn hostile_hosts_get_closed_and_the_agent_stays_small() {
    use banger_channel::frame::{encode, Kind};
    use banger_channel::limits::PREAMBLE;
    use banger_channel::{Hello, Role, Stream};
    let a = agent();
    let hello = {
        let h = serde_json::to_vec(&Hello::new(Role::Client, "hostile")).expect("json");
        [PREAMBLE.to_vec(), encode(0, Kind::Hello, &h)].concat()
    };
    let before = hwm_kib(a.child.id());
    let mut giant = encode(1, Kind::Data(Stream::In), b"x");
    giant[0..4].copy_from_slice(&u32::MAX.to_be_bytes());
    let flood = {
        let mut v = encode(
            1,
            Kind::Open,
            br#"{"type":"exec","command":{"argv":["sleep","100"]}}"#,
        );
        v.extend(encode(1, Kind::Data(Stream::In), &vec![0u8; 1 << 20]));
        v
    };
    let endless = vec![b'y'; 1 << 20];
    for (what, head, repeat) in [
        (
            "a giant frame",
            [hello.clone(), giant].concat(),
            vec![0u8; 1 << 20],
        ),
        ("stdin beyond its credit", hello.clone(), flood),
        ("an endless line", Vec::new(), endless),
    ] {
        let mut s = std::os::unix::net::UnixStream::connect(&a.sock).expect("connect");
        let mut r = s.try_clone().expect("clone");
        let reader = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        });
        let _ = s.write_all(&head);
        let mut sent = 0usize;
        while sent < 256 << 20 && s.write_all(&repeat).is_ok() {
            sent += repeat.len();
        }
        let _ = s.shutdown(std::net::Shutdown::Write);
        let got = reader.join().expect("reader");
        assert!(
            sent < 64 << 20,
            "{what}: the agent took {sent} bytes before closing"
        );
        let _ = got;
    }
    let after = hwm_kib(a.child.id());
    println!("agent peak RSS: {before} KiB before, {after} KiB after the hostile hosts");
    assert!(
        after < before + 16 * 1024,
        "the agent grew from {before} to {after} KiB"
    );
    // And it still serves well-behaved hosts.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        assert_eq!(client(&a).ping().await.expect("ping").init, "socket");
    });
}
