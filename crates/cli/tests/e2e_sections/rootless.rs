//! End-to-end section for issue 17 (`rootless`): banger as a plain user on a host
//! with no helper at all. The daemon then runs rootless: no bridge, tap or NAT; each
//! VM's network goes through a `passt` the daemon starts as the user (QEMU's
//! user-mode networking with `BANGER_ROOTLESS_NET=user`, or without passt).
//!
//! The section has its own everything: a user it creates (with subordinate ids, for
//! `mmdebstrap --mode=unshare`), a `BANGER_HOME` of that user's (0700), a network
//! namespace with a second one standing in for the internet (198.18.7.0/24 on a veth
//! pair, the default route through it, a web server and a DNS server there, and the
//! namespace's `/etc/resolv.conf` naming it). No `banger-helper` runs and
//! `BANGER_HELPER_SOCKET` is unset for every banger command, which runs as the user
//! (`runuser`, inside `ip netns exec`). As that user:
//!
//! - `image build debian` (the default image: unprivileged mmdebstrap), `image pull`
//!   of a busybox image from a local registry, which boots;
//! - `vm run -- sh -c 'echo hi; exit 7'`: output and status from the guest;
//! - `vm run ./repo -- ...` and `vm workspace export`: the guest's edits come back
//!   as a patch that applies to the repository;
//! - `vm create web -p 18080:8080`: a guest web server answers on the namespace's
//!   127.0.0.1:18080, `vm ports` lists it, and no bridge, tap or nft table exists;
//! - `vm stop`/`vm start`: /root is kept, the stopped VM keeps no passt, the port is
//!   published again;
//! - a guest fetches a page from "the internet" by address (NAT'd behind the
//!   namespace's address) and resolves a name through passt's DNS forwarding;
//! - `banger doctor` (and the daemon's log) says the mode is rootless;
//! - offline (no default route, which passt refuses): a VM still starts, on QEMU's
//!   user-mode networking, saying so;
//! - `BANGER_ROOTLESS_NET=user`: QEMU user-mode networking, no passt; outbound, DNS
//!   and a published port still work.
//!
//! Throughout, [`Watch`] samples `/proc`: every bangerd, QEMU, passt and banger of the
//! test runs as the user (all four uids), and nothing the daemon starts is root. At
//! the end the VMs are deleted and the daemon stopped: no process of the user is
//! left; then the user and the namespaces are removed.
//!
//! Skipped, with the reason printed, without passt, without Debian's `uidmap`, when
//! unprivileged user namespaces are off, or when a system helper listens (a daemon
//! would use it rather than run rootless).

use super::mode::{Mode, Watch};
use super::{agent_section, git, log, run_ok, stderr, stdout, Env};
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "rootless_support.rs"]
mod support;
use support::{
    daemon_log, in_ns, ok, passts, procs_of, skip_reason, Internet, PAGE, PAGE_BODY, WEB_PORT,
};

pub fn rootless(_suite: &Env) {
    if let Some(why) = skip_reason() {
        eprintln!("=== e2e section rootless: SKIPPED: {why}");
        return;
    }
    let t0 = Instant::now();
    let env = Env::new_in(Mode::Rootless, "rl");
    let (user, uid) = {
        let o = env.owner.as_ref().unwrap();
        (o.user.clone(), o.uid)
    };
    eprintln!(
        "rootless: user {user} (uid {uid}), no helper, BANGER_HOME {}, namespace {}",
        env.home.path().display(),
        env.netns
    );
    let net = Internet::new(&env);
    let watch = Watch::start(&env).unwrap();

    build_and_pull(&env);
    eprintln!(
        "rootless: images done at {:.0} s",
        t0.elapsed().as_secs_f64()
    );
    doctor_says_rootless(&env);
    run_status_and_workspace(&env);
    published_port_and_restart(&env, uid);
    outbound_and_dns(&env, &net);
    offline_falls_back(&env, uid);
    user_mode_fallback(&env, uid);

    // Nothing of the user's is left once its VMs are gone and its daemon stopped.
    assert_eq!(ok(&env, &["vm", "list", "--json"]).trim(), "[]");
    env.assert_nothing_left();
    ok(&env, &["daemon", "stop"]);
    let t = Instant::now();
    loop {
        let left = procs_of(uid);
        if left.is_empty() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "processes of {user} are left after its VMs were deleted and its daemon stopped:\n{}",
            left.join("\n")
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    watch.finish("rootless");
    let netns = env.netns.clone();
    drop(net);
    drop(env);
    let id = Command::new("id").arg(&user).output().unwrap();
    assert!(!id.status.success(), "user {user} was not removed");
    let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !stdout(&list).contains(&netns),
        "namespaces left: {}",
        stdout(&list)
    );
}

/// The default image built as the user (unprivileged mmdebstrap, on the host network
/// for Debian's archive), then a busybox image pulled from a local registry, booted.
fn build_and_pull(env: &Env) {
    let t = Instant::now();
    let built = env.banger_host(&["image", "build", "debian"]);
    assert!(
        built.status.success(),
        "image build as a rootless user: {}\n{}",
        stderr(&built),
        daemon_log(env)
    );
    eprintln!(
        "rootless: image build debian took {:.0} s",
        t.elapsed().as_secs_f64()
    );
    let shown = env.banger_host(&["image", "show", "debian-bookworm", "--json"]);
    let img: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(img["source"], "debian:bookworm", "{img}");
    assert!(env.banger_host(&["daemon", "stop"]).status.success());

    let work = env.home.path().join("busybox");
    let Some(root) = agent_section::busybox_root(&work) else {
        panic!("rootless: no busybox-static from Debian's archive for the pull check");
    };
    let out = agent_section::pull_and_run(
        env,
        &work,
        &root,
        "rlbusybox",
        &["sh", "-c", "echo hi-busybox; exit 3"],
    )
    .expect("docker-registry is needed for the pull check (apt-get install docker-registry)");
    assert_eq!(
        stdout(&out),
        "hi-busybox\n",
        "{}\n{}",
        stderr(&out),
        daemon_log(env)
    );
    assert_eq!(out.status.code(), Some(3));
}

/// `banger doctor` says so, and so does the daemon's log (its privilege choice).
fn doctor_says_rootless(env: &Env) {
    let out = env.banger(&["doctor"]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        text.to_lowercase().contains("rootless"),
        "banger doctor does not say the mode is rootless:\n{text}"
    );
    let log = std::fs::read_to_string(env.state().join("bangerd.log")).unwrap_or_default();
    assert!(
        log.contains("rootless"),
        "the daemon's log does not say it runs rootless:\n{}",
        daemon_log(env)
    );
}

fn run_status_and_workspace(env: &Env) {
    let out = env.banger(&["vm", "run", "--", "sh", "-c", "echo hi; exit 7"]);
    assert_eq!(
        stdout(&out),
        "hi\n",
        "{}\n{}",
        stderr(&out),
        daemon_log(env)
    );
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    env.assert_nothing_left();

    // A repository shipped in, edited by the command, exported as a patch.
    let src = env.home.path().join("src");
    let repo = src.join("proj");
    std::fs::create_dir_all(&repo).unwrap();
    git(
        env,
        &repo,
        "git init -q -b main . && git config user.email dev@example.com && git config user.name Dev",
    );
    std::fs::write(repo.join("README"), "hello\n").unwrap();
    git(env, &repo, "git add -A && git commit -q -m base");
    let run = env.banger(&[
        "vm",
        "run",
        "--keep",
        "--name",
        "ws",
        repo.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "pwd && echo made-in-guest > made.txt && echo more >> README",
    ]);
    assert!(
        run.status.success(),
        "{}\n{}",
        stderr(&run),
        daemon_log(env)
    );
    assert_eq!(stdout(&run), "/root/proj\n");
    let patch = env.home.path().join("ws.patch");
    ok(
        env,
        &[
            "vm",
            "workspace",
            "export",
            "ws",
            "--output",
            patch.to_str().unwrap(),
        ],
    );
    let text = std::fs::read_to_string(&patch).unwrap();
    for want in ["made.txt", "+made-in-guest", "+more"] {
        assert!(
            text.contains(want),
            "{want} missing from the export:\n{text}"
        );
    }
    git(
        env,
        &repo,
        &format!(
            "git apply {} && test \"$(cat made.txt)\" = made-in-guest && tail -n1 README | grep -qx more",
            patch.display()
        ),
    );
    ok(env, &["vm", "delete", "-f", "ws"]);
    env.assert_nothing_left();
}

/// A guest web server on port 8080 serving /root/www/index.html (perl: the default
/// image has it, through build-essential), started in the background.
const GUEST_SERVER: &str = r#"
use IO::Socket::INET;
my $s = IO::Socket::INET->new(LocalPort => 8080, Listen => 5, ReuseAddr => 1) or die "listen: $!";
while (my $c = $s->accept) {
    while (my $l = <$c>) { last if $l =~ /^\r?\n$/ }
    open(my $f, '<', '/root/www/index.html') or die;
    my $body = do { local $/; <$f> };
    print $c "HTTP/1.0 200 OK\r\nContent-Length: " . length($body) . "\r\n\r\n" . $body;
    close $c;
}
"#;

fn start_guest_server(env: &Env, vm: &str) {
    ok(
        env,
        &[
            "vm",
            "ssh",
            vm,
            "--",
            "sh",
            "-c",
            "nohup perl -e \"$1\" >/dev/null 2>&1 &",
            "sh",
            GUEST_SERVER,
        ],
    );
    ok(
        env,
        &["vm", "wait", vm, "--for", "port:8080", "--timeout", "60s"],
    );
}

/// `curl http://127.0.0.1:PORT/` in the namespace until it answers `want` (passt
/// may take a moment to connect through).
fn curl_published(env: &Env, port: u16, want: &str) {
    let url = format!("http://127.0.0.1:{port}/");
    let t = Instant::now();
    loop {
        let out = in_ns(env, &["curl", "-sS", "-m", "10", &url]);
        if stdout(&out) == want {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{url} in the namespace never answered {want:?}: got {:?}, {}\n{}",
            stdout(&out),
            stderr(&out),
            daemon_log(env)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn published_port_and_restart(env: &Env, uid: u32) {
    ok(env, &["vm", "create", "web", "-p", "18080:8080"]);
    // The guest keeps an address of banger's subnet, on its eth0.
    let ip = env.show("web")["ip"].as_str().unwrap().to_string();
    assert!(ip.starts_with("172.30.0."), "{ip}");
    let addrs = ok(env, &["vm", "exec", "web", "--", "ip -4 -o addr show"]);
    assert!(addrs.contains(&format!("{ip}/")), "{ip} not in {addrs}");
    // passt's link takes 64 KiB frames.
    let mtu = ok(
        env,
        &["vm", "exec", "web", "--", "cat /sys/class/net/eth0/mtu"],
    );
    assert_eq!(mtu.trim(), "65520", "the guest's MTU over passt");
    // No bridge, no tap, no nft table: the namespace has only lo and the veth.
    let links = stdout(&in_ns(env, &["ip", "-br", "link"]));
    assert!(
        !links.contains("banger0") && !links.contains("bgr"),
        "a rootless daemon made links: {links}"
    );
    let tables = stdout(&in_ns(env, &["nft", "list", "tables"]));
    assert!(!tables.contains("banger"), "nft tables: {tables}");
    assert_eq!(passts(uid).len(), 1, "one passt for web: {:?}", passts(uid));
    let qemu: Vec<String> = procs_of(uid)
        .into_iter()
        .filter(|p| p.contains("qemu-system"))
        .collect();
    assert!(
        qemu.len() == 1 && qemu[0].contains("-netdev stream,"),
        "not one QEMU on passt's socket: {qemu:?}"
    );

    ok(
        env,
        &[
            "vm",
            "exec",
            "web",
            "--",
            "mkdir -p /root/www && echo 'page from web' > /root/www/index.html",
        ],
    );
    start_guest_server(env, "web");
    curl_published(env, 18080, "page from web\n");
    let ports: serde_json::Value =
        serde_json::from_str(&ok(env, &["vm", "ports", "web", "--json"])).unwrap();
    assert!(
        ports["forwards"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["host_port"] == 18080 && f["guest_port"] == 8080),
        "{ports}"
    );
    assert!(
        ports["ports"].as_array().unwrap().iter().any(|p| p == 8080),
        "{ports}"
    );
    assert_eq!(ports["rootless"], true, "{ports}");
    let table = ok(env, &["vm", "ports", "web"]);
    assert!(table.contains("127.0.0.1:18080"), "{table}");
    // OpenSSH reaches the guest's sshd too (a loopback port the stack forwards).
    assert_eq!(
        ok(env, &["vm", "ssh", "web", "--via-ssh", "--", "hostname"]),
        "web\n"
    );

    // Stop and start: /root is kept, the stopped VM keeps no passt, the port comes back.
    ok(
        env,
        &["vm", "exec", "web", "--", "echo kept > /root/persist.txt"],
    );
    ok(env, &["vm", "stop", "web"]);
    assert_eq!(env.show("web")["state"], "stopped");
    let t = Instant::now();
    while !passts(uid).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "a stopped VM's passt is left: {:?}",
            passts(uid)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let refused = in_ns(env, &["curl", "-sS", "-m", "5", "http://127.0.0.1:18080/"]);
    assert!(!refused.status.success(), "18080 answers with web stopped");
    ok(env, &["vm", "start", "web"]);
    assert_eq!(
        ok(env, &["vm", "exec", "web", "--", "cat /root/persist.txt"]),
        "kept\n"
    );
    start_guest_server(env, "web");
    curl_published(env, 18080, "page from web\n");
    ok(env, &["vm", "delete", "-f", "web"]);
    env.assert_nothing_left();
}

/// A guest reaches the internet's web server by address (seen from the namespace's
/// address: passt NATs) and resolves a name through passt's DNS forwarding.
fn outbound_and_dns(env: &Env, net: &Internet) {
    let script = format!(
        "curl -sS -m 20 http://198.18.7.1:{WEB_PORT}/{PAGE} && getent hosts www.banger-e2e.test"
    );
    let out = env.banger(&["vm", "run", "--", &script]);
    assert!(
        out.status.success(),
        "{}\n{}",
        stderr(&out),
        daemon_log(env)
    );
    let text = stdout(&out);
    assert!(text.starts_with(PAGE_BODY), "{text}");
    let resolved = text[PAGE_BODY.len()..].split_whitespace().next();
    assert_eq!(resolved, Some("198.18.1.7"), "{text}");
    let seen = std::fs::read_to_string(&net.web_log).unwrap();
    assert!(
        seen.contains("198.18.7.2") && !seen.contains("172.30.0."),
        "the internet saw the guest other than behind the namespace's address: {seen}"
    );
    let asked = std::fs::read_to_string(&net.dns_log).unwrap();
    assert!(asked.contains("www.banger-e2e.test 1"), "{asked}");
    env.assert_nothing_left();
}

/// `BANGER_ROOTLESS_NET=user`: QEMU's user-mode networking instead of passt; a
/// published port and outbound traffic work, and no passt runs.
fn user_mode_fallback(env: &Env, uid: u32) {
    ok(env, &["daemon", "stop"]);
    let mut c = env.cmd(true, &["daemon", "start"]);
    c.env("BANGER_ROOTLESS_NET", "user");
    let started = c.output().unwrap();
    log(&["daemon", "start", "(BANGER_ROOTLESS_NET=user)"], &started);
    assert!(started.status.success(), "{}", stderr(&started));
    ok(env, &["vm", "create", "um", "-p", "18081:8080"]);
    assert!(
        passts(uid).is_empty(),
        "passt runs with BANGER_ROOTLESS_NET=user: {:?}",
        passts(uid)
    );
    let qemu: Vec<String> = procs_of(uid)
        .into_iter()
        .filter(|p| p.contains("qemu-system"))
        .collect();
    assert!(
        qemu.len() == 1 && qemu[0].contains("-netdev user,"),
        "not one QEMU with a user-mode netdev: {qemu:?}"
    );
    let page = ok(
        env,
        &[
            "vm",
            "exec",
            "um",
            "--",
            &format!("curl -sS -m 20 http://198.18.7.1:{WEB_PORT}/{PAGE}"),
        ],
    );
    assert_eq!(page, PAGE_BODY);
    let www = ok(
        env,
        &["vm", "exec", "um", "--", "getent hosts www.banger-e2e.test"],
    );
    assert_eq!(www.split_whitespace().next(), Some("198.18.1.7"), "{www}");
    ok(
        env,
        &[
            "vm",
            "exec",
            "um",
            "--",
            "mkdir -p /root/www && echo 'page from um' > /root/www/index.html",
        ],
    );
    start_guest_server(env, "um");
    curl_published(env, 18081, "page from um\n");
    ok(env, &["vm", "delete", "-f", "um"]);
    // The next daemon is a default one again.
    ok(env, &["daemon", "stop"]);
}

/// No default route (offline): passt refuses to start, and the VM starts anyway on
/// QEMU's user-mode networking, saying so.
fn offline_falls_back(env: &Env, uid: u32) {
    let route = |verb: &str| {
        run_ok(Command::new("ip").args([
            "-n",
            &env.netns,
            "route",
            verb,
            "default",
            "via",
            "198.18.7.1",
        ]))
    };
    route("del");
    let out = env.banger(&[
        "vm",
        "run",
        "--",
        "sh",
        "-c",
        "echo offline-ok; cat /sys/class/net/eth0/mtu",
    ]);
    route("add");
    assert_eq!(
        stdout(&out),
        "offline-ok\n1500\n",
        "{}\n{}",
        stderr(&out),
        daemon_log(env)
    );
    assert!(
        stderr(&out).contains("user-mode networking"),
        "no word of the fallback: {}",
        stderr(&out)
    );
    assert!(passts(uid).is_empty(), "{:?}", passts(uid));
    env.assert_nothing_left();
}
