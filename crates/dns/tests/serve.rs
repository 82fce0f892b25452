//! The responder over real sockets on loopback: `dig` and our own client, a fake
//! upstream for forwarding, and bounds under load.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use banger_dns::{serve_tcp, serve_udp, Limits, Names, Responder};
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

struct Server {
    udp: SocketAddr,
    tcp: SocketAddr,
    names: Arc<Names>,
    stop: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start(forward: bool, upstreams: Vec<SocketAddr>) -> Server {
    let names = Arc::new(Names::new());
    let r = Arc::new(Responder::new(
        Arc::clone(&names),
        forward,
        upstreams,
        Limits::default(),
    ));
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (ua, ta) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(serve_udp(udp, Arc::clone(&r), stop.clone()));
    tokio::spawn(serve_tcp(tcp, r, stop.clone()));
    Server {
        udp: ua,
        tcp: ta,
        names,
        stop,
    }
}

/// A stand-in for the internet's resolvers: answers `www.example.test` with 198.18.0.7.
async fn fake_upstream() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = s.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        loop {
            let (n, from) = s.recv_from(&mut buf).await.unwrap();
            let q = Message::from_vec(&buf[..n]).unwrap();
            let mut m = Message::response(q.metadata.id, q.metadata.op_code);
            m.queries = q.queries.clone();
            let name = q.queries[0].name().clone();
            if name.to_ascii().starts_with("www.example.test") {
                m.answers = vec![Record::from_rdata(
                    name,
                    60,
                    RData::A(A(Ipv4Addr::new(198, 18, 0, 7))),
                )];
            } else {
                m.metadata.response_code = ResponseCode::NXDomain;
            }
            s.send_to(&m.to_vec().unwrap(), from).await.unwrap();
        }
    });
    addr
}

fn dig(server: SocketAddr, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), "+time=2", "+tries=1"])
        .args(args)
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn ask(server: SocketAddr, name: &str) -> Message {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut m = Message::query();
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    s.send_to(&m.to_vec().unwrap(), server).await.unwrap();
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(3), s.recv(&mut buf))
        .await
        .expect("an answer within 3 s")
        .unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

#[tokio::test]
async fn dig_sees_names_come_and_go() {
    let srv = start(false, vec![]).await;
    srv.names.set("dev", Ipv4Addr::new(172, 30, 0, 2));
    let Some(out) = tokio::task::spawn_blocking({
        let a = srv.udp;
        move || dig(a, &["dev.vm"])
    })
    .await
    .unwrap() else {
        eprintln!("skipping the dig checks: dig is not installed (Debian: dnsutils)");
        return;
    };
    assert!(out.contains("172.30.0.2"), "{out}");
    assert!(out.contains("status: NOERROR"), "{out}");
    let out = tokio::task::spawn_blocking({
        let a = srv.udp;
        move || dig(a, &["nope.vm"]).unwrap()
    })
    .await
    .unwrap();
    assert!(out.contains("status: NXDOMAIN"), "{out}");
    assert!(out.contains(" aa"), "no AA flag: {out}");
    // Over TCP too.
    let out = tokio::task::spawn_blocking({
        let a = srv.tcp;
        move || dig(a, &["+tcp", "dev.vm"]).unwrap()
    })
    .await
    .unwrap();
    assert!(out.contains("172.30.0.2"), "{out}");
    // Deleted: gone at once.
    srv.names.remove("dev");
    let m = ask(srv.udp, "dev.vm.").await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
}

#[tokio::test]
async fn a_thousand_queries_lose_none() {
    let srv = start(false, vec![]).await;
    srv.names.set("dev", Ipv4Addr::new(172, 30, 0, 2));
    for _ in 0..1000 {
        let m = ask(srv.udp, "dev.vm.").await;
        assert_eq!(m.answers.len(), 1);
    }
}

#[tokio::test]
async fn other_names_are_forwarded_only_on_the_guest_listener() {
    let up = fake_upstream().await;
    let guests = start(true, vec![up]).await;
    let m = ask(guests.udp, "www.example.test.").await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers[0].data, RData::A(A(Ipv4Addr::new(198, 18, 0, 7))));
    let m = ask(guests.udp, "missing.example.test.").await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);

    let host = start(false, vec![up]).await;
    let m = ask(host.udp, "www.example.test.").await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);

    // No upstream answers: SERVFAIL, not silence.
    let dead = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let lonely = start(true, vec![dead.local_addr().unwrap()]).await;
    let m = ask(lonely.udp, "www.example.test.").await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
}

#[tokio::test]
async fn idle_and_garbage_tcp_clients_are_dropped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let names = Arc::new(Names::new());
    let limits = Limits {
        tcp_idle: Duration::from_millis(200),
        ..Limits::default()
    };
    let r = Arc::new(Responder::new(names, false, vec![], limits));
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(serve_tcp(tcp, r, stop.clone()));
    // A client that sends half a length prefix and waits is closed.
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(&[0]).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(3), c.read(&mut buf))
        .await
        .expect("closed by the server")
        .unwrap_or(0);
    assert_eq!(n, 0);
    stop.cancel();
}
