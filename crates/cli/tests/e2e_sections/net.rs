//! End-to-end section for issue 12 (`net`): `<vm>.vm` names, `ssh dev.vm`, host keys
//! without trust on first use, guest isolation, and a clean host afterwards.
//!
//! Everything runs in the test's network namespace plus a second one standing in for
//! the host's real upstream resolver (198.18.1.1, on a veth pair): no packet leaves
//! the machine. The daemon's `/etc/resolv.conf` names a loopback stub (`ip netns exec`
//! binds `/etc/netns/<ns>/resolv.conf` over it), as on a host running
//! systemd-resolved; the real upstream is in a resolved-style file handed over with
//! `BANGER_RESOLV_CONF`.
//!
//! `BANGER_E2E_NET_CONTROL=1` runs the section as a control experiment: the daemon
//! runs with `BANGER_ISOLATION=off`, and the spoofing phase must then *succeed* in
//! taking the first guest's traffic, which shows that the checks can see an attack.

use super::{log, stderr, stdout, Env, Upstream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The fake upstream: answers `www.banger-e2e.test` A with 198.18.1.7, NODATA for
/// its other types, NXDOMAIN for everything else; logs each name it is asked.
pub(crate) const FAKE_UPSTREAM: &str = r#"
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
log = open(sys.argv[2], "a", buffering=1)
while True:
    data, peer = s.recvfrom(4096)
    if len(data) < 17:
        continue
    i, labels = 12, []
    while i < len(data) and data[i] != 0:
        n = data[i]
        labels.append(data[i + 1:i + 1 + n].decode("ascii", "replace").lower())
        i += 1 + n
    qtype = struct.unpack(">H", data[i + 1:i + 3])[0]
    question = data[12:i + 5]
    name = ".".join(labels)
    log.write(f"{name} {qtype}\n")
    flags = 0x8000 | 0x0080 | (struct.unpack(">H", data[2:4])[0] & 0x0100)
    answers = b""
    if name == "www.banger-e2e.test":
        if qtype == 1:
            answers = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton("198.18.1.7")
    else:
        flags |= 3
    count = 1 if answers else 0
    s.sendto(data[:2] + struct.pack(">HHHHH", flags, 1, count, 0, 0) + question + answers, peer)
"#;

/// A client that sends `count` A queries for `name` to 127.0.0.1:`port`, one at a
/// time, and prints how many came back answered (id matches, NOERROR, one answer).
const QUERY_LOOP: &str = r#"
import socket, struct, sys
name, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
q = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
ok = 0
for i in range(count):
    qid = i & 0xffff
    s.sendto(struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q, ("127.0.0.1", port))
    try:
        r, _ = s.recvfrom(4096)
    except socket.timeout:
        continue
    rid, flags, _, an = struct.unpack(">HHHH", r[:8])
    if rid == qid and flags & 0xf == 0 and an == 1:
        ok += 1
print(ok)
"#;

struct Cleanup {
    etc: PathBuf,
    server: Option<std::process::Child>,
    /// Dropped after the server is killed.
    _upstream: Upstream,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut s) = self.server.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
        let _ = std::fs::remove_dir_all(&self.etc);
        // /etc/netns itself when nothing else is in it (`ip netns exec` makes do without).
        if let Some(parent) = self.etc.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

impl Env {
    /// `ip netns exec <ns> ARGS` (not banger), its output.
    fn in_ns(&self, args: &[&str]) -> Output {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .args(args)
            .output()
            .unwrap();
        log_tool(args, &out);
        out
    }

    /// A user's tool (ssh, scp, rsync) in the namespace, as banger's user: the owner
    /// in privsep mode, whose ssh config and banger key these are.
    fn as_user(&self, args: &[&str]) -> Output {
        let out = self
            .program(true, "120", args[0])
            .args(&args[1..])
            .output()
            .unwrap();
        log_tool(args, &out);
        out
    }

    /// A command run in the guest through banger's agent; its stdout.
    fn guest(&self, name: &str, script: &str) -> String {
        let out = self.banger(&["vm", "ssh", name, "--", script]);
        assert!(out.status.success(), "{name}: {script}: {}", stderr(&out));
        stdout(&out)
    }
}

/// The guest's count of ICMP echo requests received.
fn in_echos(env: &Env, vm: &str) -> u64 {
    let snmp = env.guest(vm, "cat /proc/net/snmp");
    let icmp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Icmp:")).collect();
    let (names, values) = (icmp[0], icmp[1]);
    let col = names
        .split_whitespace()
        .position(|c| c == "InEchos")
        .unwrap();
    values.split_whitespace().nth(col).unwrap().parse().unwrap()
}

fn dig(env: &Env, name: &str) -> String {
    stdout(&env.in_ns(&[
        "dig",
        "@127.0.0.1",
        "-p",
        "42069",
        "+time=2",
        "+tries=1",
        name,
    ]))
}

fn vm_ip(env: &Env, name: &str) -> String {
    env.show(name)["ip"].as_str().unwrap().to_string()
}

fn daemon_rss_kib(env: &Env) -> u64 {
    let pid = env.daemon_pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

pub fn net(env: &Env) {
    let home = env.home.path().to_path_buf();
    // The upstream's namespace, linked to the test's by a veth pair.
    let upstream = Upstream::new(env, "dns", 1);
    let up = upstream.netns.clone();
    let etc = PathBuf::from("/etc/netns").join(&env.netns);
    let mut cleanup = Cleanup {
        etc: etc.clone(),
        server: None,
        _upstream: upstream,
    };
    let asked = home.join("upstream-asked.log");
    cleanup.server = Some(
        Command::new("ip")
            .args(["netns", "exec", &up, "python3", "-c", FAKE_UPSTREAM])
            .arg("198.18.1.1")
            .arg(&asked)
            .spawn()
            .unwrap(),
    );

    // The daemon's resolv.conf: a loopback stub, as with systemd-resolved; the real
    // upstream is in resolved's own list (here a file of the test's).
    assert!(env.banger(&["daemon", "stop"]).status.success());
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(
        etc.join("resolv.conf"),
        "nameserver 127.0.0.53\noptions edns0\n",
    )
    .unwrap();
    let resolved = home.join("resolved-resolv.conf");
    std::fs::write(&resolved, "# resolved's upstreams\nnameserver 198.18.1.1\n").unwrap();
    let control = std::env::var("BANGER_E2E_NET_CONTROL").as_deref() == Ok("1");
    let mut c = env.cmd(true, &["daemon", "start"]);
    c.env(
        "BANGER_RESOLV_CONF",
        format!("{}:/etc/resolv.conf", resolved.display()),
    );
    if control {
        eprintln!("control run: guest isolation is off; the spoofing must succeed");
        c.env("BANGER_ISOLATION", "off");
    }
    let started = c.output().unwrap();
    log(&["daemon", "start", "(BANGER_RESOLV_CONF)"], &started);
    assert!(started.status.success(), "{}", stderr(&started));
    assert_eq!(
        stdout(&env.in_ns(&["cat", "/etc/resolv.conf"])),
        "nameserver 127.0.0.53\noptions edns0\n",
        "the namespace's resolv.conf is the loopback stub"
    );

    for name in ["dev", "other"] {
        let out = env.banger(&["vm", "create", name]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let (dev_ip, other_ip) = (vm_ip(env, "dev"), vm_ip(env, "other"));
    let shown = stdout(&env.banger(&["network", "show"]));
    assert!(shown.contains("127.0.0.1:42069"), "{shown}");
    assert!(shown.contains("198.18.1.1:53"), "{shown}");

    dns_from_the_host(env, &dev_ip);
    dns_in_guests(env, &other_ip, &asked);
    ssh_config_and_tools(env, &home);
    replaced_host_key_is_refused(env, &home);
    spoofing_guest_gets_nothing(env, &dev_ip, &other_ip, &home, control);

    // A deleted VM's name is gone at once.
    assert!(env
        .banger(&["vm", "delete", "-f", "other"])
        .status
        .success());
    let gone = dig(env, "other.vm");
    assert!(gone.contains("status: NXDOMAIN"), "{gone}");
    assert!(env.banger(&["vm", "delete", "-f", "dev"]).status.success());
    host_is_clean_after_network_down(env);
    drop(cleanup);
    assert!(env.banger(&["daemon", "stop"]).status.success());
    env.assert_nothing_left();
}

/// `dig @127.0.0.1 -p 42069`: the VM's address, NXDOMAIN with `aa` for unknown
/// names, 1,000 queries without a loss and without the daemon growing.
fn dns_from_the_host(env: &Env, dev_ip: &str) {
    let out = dig(env, "dev.vm");
    assert!(out.contains("status: NOERROR"), "{out}");
    let answer = out
        .lines()
        .find(|l| l.starts_with("dev.vm.") && l.contains("\tA\t"));
    assert!(
        answer.is_some_and(|l| l.trim_end().ends_with(dev_ip)),
        "{out}"
    );
    let out = dig(env, "nope.vm");
    assert!(out.contains("status: NXDOMAIN"), "{out}");
    let flags = out
        .lines()
        .find(|l| l.contains(";; flags:"))
        .unwrap_or_default();
    assert!(flags.contains(" aa"), "no AA flag: {out}");
    // Not an open resolver: other names are refused on the host listener.
    let out = dig(env, "www.banger-e2e.test");
    assert!(out.contains("status: REFUSED"), "{out}");

    let queries = |n: u32| -> u32 {
        let out = env.in_ns(&[
            "python3",
            "-c",
            QUERY_LOOP,
            "dev.vm",
            "42069",
            &n.to_string(),
        ]);
        stdout(&out).trim().parse().unwrap()
    };
    assert_eq!(queries(1000), 1000, "queries lost (warm-up round)");
    let before = daemon_rss_kib(env);
    assert_eq!(queries(1000), 1000, "queries lost");
    let after = daemon_rss_kib(env);
    eprintln!("daemon RSS around 1,000 queries: {before} KiB -> {after} KiB");
    assert!(
        after <= before + 1024,
        "the daemon grew by {} KiB over 1,000 queries",
        after - before
    );
}

/// In a guest: resolv.conf names the gateway; the other VM by name; a name only the
/// fake upstream knows, through the daemon's forwarder.
fn dns_in_guests(env: &Env, other_ip: &str, asked: &Path) {
    let resolv = env.guest("dev", "cat /etc/resolv.conf");
    assert!(resolv.contains("nameserver 172.30.0.1"), "{resolv}");
    let other = env.guest("dev", "getent hosts other.vm");
    assert_eq!(
        other.split_whitespace().next(),
        Some(other_ip),
        "getent hosts other.vm: {other}"
    );
    let www = env.guest("dev", "getent hosts www.banger-e2e.test");
    assert_eq!(www.split_whitespace().next(), Some("198.18.1.7"), "{www}");
    let seen = std::fs::read_to_string(asked).unwrap();
    assert!(seen.contains("www.banger-e2e.test 1"), "{seen}");
    assert!(
        !seen.contains("other.vm"),
        ".vm names must never be forwarded: {seen}"
    );
    // A guest reaches the host only at banger's DNS: not the host listener.
    let refused = env.banger(&[
        "vm",
        "ssh",
        "dev",
        "--",
        "timeout 5 bash -c 'echo > /dev/tcp/172.30.0.1/42069' && echo open || echo closed",
    ]);
    assert_eq!(stdout(&refused).trim(), "closed", "{}", stderr(&refused));
}

/// `banger ssh-config install` → `ssh dev.vm`, scp and rsync work; `uninstall`
/// leaves the user's config byte for byte as it was.
fn ssh_config_and_tools(env: &Env, home: &Path) {
    // sshd comes up a moment after the agent answers: wait for it (banger does).
    let up = env.banger(&["vm", "ssh", "dev", "--via-ssh", "--", "true"]);
    assert!(up.status.success(), "{}", stderr(&up));
    let cfg = home.join("user-ssh/config");
    std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
    let original: &[u8] = b"# my settings\r\nHost work\n\tUser me\n\nServerAliveInterval 30";
    std::fs::write(&cfg, original).unwrap();
    env.give(cfg.parent().unwrap());
    let cfg_s = cfg.to_str().unwrap();
    let out = env.banger(&["ssh-config", "install", "--config", cfg_s]);
    assert!(out.status.success(), "{}", stderr(&out));
    let again = env.banger(&["ssh-config", "install", "--config", cfg_s]);
    assert!(stdout(&again).contains("already"), "{}", stdout(&again));
    let shown = stdout(&env.banger(&["ssh-config", "show", "--config", cfg_s]));
    assert!(
        shown.contains("Host dev.vm") && shown.contains("included"),
        "{shown}"
    );

    let ssh = |args: &[&str]| -> Output {
        let mut full = vec!["ssh", "-F", cfg_s, "-o", "BatchMode=yes"];
        full.extend_from_slice(args);
        env.as_user(&full)
    };
    let host = ssh(&["dev.vm", "hostname"]);
    assert_eq!(stdout(&host), "dev\n", "{}", stderr(&host));

    let file = home.join("scp-me.txt");
    std::fs::write(&file, "copied by scp\n").unwrap();
    env.give(&file);
    let scp = env.as_user(&["scp", "-F", cfg_s, file.to_str().unwrap(), "dev.vm:/root/"]);
    assert!(scp.status.success(), "{}", stderr(&scp));
    assert_eq!(env.guest("dev", "cat /root/scp-me.txt"), "copied by scp\n");

    let tree = home.join("rsync-me");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("sub/a.txt"), "synced\n").unwrap();
    env.give(&tree);
    let rsh = format!("ssh -F {cfg_s}");
    let rsync = env.as_user(&[
        "rsync",
        "-a",
        "-e",
        &rsh,
        tree.to_str().unwrap(),
        "dev.vm:/root/",
    ]);
    assert!(rsync.status.success(), "{}", stderr(&rsync));
    assert_eq!(env.guest("dev", "cat /root/rsync-me/sub/a.txt"), "synced\n");

    let out = env.banger(&["ssh-config", "uninstall", "--config", cfg_s]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(&cfg).unwrap(), original, "not byte-identical");
    // Reinstalled for the sections below.
    assert!(env
        .banger(&["ssh-config", "install", "--config", cfg_s])
        .status
        .success());
}

/// The guest's host key replaced behind banger's back: ssh refuses it; `vm host-key
/// --accept` (reading the new key over the agent channel) pins it deliberately.
fn replaced_host_key_is_refused(env: &Env, home: &Path) {
    let cfg = home.join("user-ssh/config");
    let cfg_s = cfg.to_str().unwrap();
    let ssh_true = || env.as_user(&["ssh", "-F", cfg_s, "-o", "BatchMode=yes", "dev.vm", "true"]);
    assert!(ssh_true().status.success());
    env.guest(
        "dev",
        "rm -f /etc/ssh/ssh_host_ed25519_key /etc/ssh/ssh_host_ed25519_key.pub && \
         ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key && pkill -HUP -x sshd",
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    let refused = ssh_true();
    assert_eq!(refused.status.code(), Some(255), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("Host key verification failed"),
        "{}",
        stderr(&refused)
    );
    let via = env.banger(&["vm", "ssh", "dev", "--via-ssh", "--", "true"]);
    assert_eq!(via.status.code(), Some(255), "{}", stderr(&via));
    assert!(
        stderr(&via).contains("banger vm host-key dev --accept"),
        "{}",
        stderr(&via)
    );
    let shown = env.banger(&["vm", "host-key", "dev"]);
    assert!(stdout(&shown).contains("differs"), "{}", stdout(&shown));
    let accepted = env.banger(&["vm", "host-key", "dev", "--accept"]);
    assert!(accepted.status.success(), "{}", stderr(&accepted));
    assert!(ssh_true().status.success(), "the accepted key is trusted");
}

/// `other` claims dev's address (ARP included), then dev's MAC too: the host's
/// traffic for dev still reaches dev only, and a workspace shipped to dev over ssh
/// lands in dev.
fn spoofing_guest_gets_nothing(
    env: &Env,
    dev_ip: &str,
    other_ip: &str,
    home: &Path,
    control: bool,
) {
    let dev_mac = env.guest("dev", "cat /sys/class/net/eth0/address");
    let dev_mac = dev_mac.trim();
    // The control run: without isolation, the impostor (dev's MAC on its port)
    // gets dev's traffic.
    // The host's neighbour entry is kept (no ARP that dev would answer, moving its
    // MAC back to its own port).
    let stolen = |phase: &str| {
        let (d0, o0) = (in_echos(env, "dev"), in_echos(env, "other"));
        let _ = env.in_ns(&["ping", "-c", "10", "-i", "0.2", "-W", "2", dev_ip]);
        let (d1, o1) = (in_echos(env, "dev"), in_echos(env, "other"));
        eprintln!(
            "{phase} (no isolation): dev got {} echo requests, other {}",
            d1 - d0,
            o1 - o0
        );
        assert!(
            o1 > o0 || d1 - d0 < 10,
            "{phase}: without isolation the spoof should have worked; the check cannot see it"
        );
    };
    let ping_dev = |phase: &str| {
        let _ = env.in_ns(&["ip", "neigh", "flush", "dev", "banger0"]);
        let (d0, o0) = (in_echos(env, "dev"), in_echos(env, "other"));
        let p = env.in_ns(&["ping", "-c", "10", "-i", "0.2", "-W", "2", dev_ip]);
        let (d1, o1) = (in_echos(env, "dev"), in_echos(env, "other"));
        eprintln!(
            "{phase}: dev got {} echo requests, other {}",
            d1 - d0,
            o1 - o0
        );
        assert!(p.status.success(), "{phase}: {}", stdout(&p));
        assert!(d1 - d0 >= 10, "{phase}: dev got {} of 10", d1 - d0);
        assert_eq!(
            o1 - o0,
            0,
            "{phase}: the spoofing guest received dev's traffic"
        );
        let neigh = stdout(&env.in_ns(&["ip", "neigh", "show", dev_ip]));
        assert!(neigh.contains(dev_mac), "{phase}: {neigh}");
    };
    ping_dev("before");
    // Phase 1: dev's address on the attacker, announced (gratuitous ARP on link
    // up) and answered (it now replies to ARP for it).
    env.guest(
        "other",
        &format!(
            "echo 1 > /proc/sys/net/ipv4/conf/eth0/arp_notify && \
             ip addr add {dev_ip}/24 dev eth0 && ip link set eth0 down && ip link set eth0 up && \
             ip route replace default via 172.30.0.1 dev eth0 || true"
        ),
    );
    if !control {
        ping_dev("address spoofed");
    }
    // Phase 2: dev's MAC as well.
    env.guest(
        "other",
        &format!(
            "ip link set eth0 down && ip link set eth0 address {dev_mac} && ip link set eth0 up && \
             ip addr add {dev_ip}/24 dev eth0 2>/dev/null; ip route replace default via 172.30.0.1 dev eth0 || true"
        ),
    );
    if control {
        stolen("address and MAC spoofed");
        return;
    }
    ping_dev("address and MAC spoofed");
    eprintln!("the attacker kept its own address {other_ip} too");

    // A workspace shipped over OpenSSH reaches dev, never the impostor.
    let repo = home.join("spoof-repo");
    std::fs::create_dir_all(&repo).unwrap();
    super::git(
        env,
        &repo,
        "git init -q && echo for-dev-only > marker && git add marker && \
         git -c user.name=t -c user.email=t@t commit -qm m",
    );
    let prep = env.banger(&[
        "vm",
        "workspace",
        "prepare",
        "dev",
        repo.to_str().unwrap(),
        "--via-ssh",
    ]);
    assert!(prep.status.success(), "{}", stderr(&prep));
    assert_eq!(
        env.guest("dev", "cat /root/spoof-repo/marker"),
        "for-dev-only\n"
    );
    assert_eq!(
        env.guest("other", "ls /root/spoof-repo 2>/dev/null | wc -l")
            .trim(),
        "0"
    );
}

/// With every VM deleted, `banger network down` leaves no nftables rule, tap,
/// bridge, address or route of banger's in the namespace.
fn host_is_clean_after_network_down(env: &Env) {
    let down = env.banger(&["network", "down"]);
    assert!(down.status.success(), "{}", stderr(&down));
    let rules = stdout(&env.in_ns(&["nft", "list", "ruleset"]));
    assert_eq!(rules.trim(), "", "nftables rules left: {rules}");
    let links = stdout(&env.in_ns(&["ip", "-br", "link"]));
    assert!(
        !links.contains("bgr") && !links.contains("banger0"),
        "{links}"
    );
    let routes = stdout(&env.in_ns(&["ip", "-4", "route"]));
    assert!(!routes.contains("172.30.0."), "{routes}");
    let addrs = stdout(&env.in_ns(&["ip", "-4", "-o", "addr"]));
    assert!(!addrs.contains("172.30.0.1"), "{addrs}");
    if Path::new("/run/systemd/resolve/io.systemd.Resolve").exists() {
        let st = env.in_ns(&["resolvectl", "status", "banger0"]);
        assert!(!st.status.success(), "resolved still knows banger0");
    } else {
        eprintln!(
            "not checked here: systemd-resolved's link settings (no resolved on this host; \
             the helper's unit tests drive a fake resolvectl)"
        );
    }
}

/// Log a tool's run like [`log`] does banger's (the command is not banger here).
fn log_tool(args: &[&str], out: &Output) {
    eprintln!(
        "$ {} -> {}\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
