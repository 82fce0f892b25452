//! A hostile peer pushes hundreds of megabytes at each side; a counting allocator shows
//! that neither side's memory follows. One test function, so no other test allocates
//! in this process while it measures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use banger_channel::frame::{encode, Kind};
use banger_channel::limits::PREAMBLE;
use banger_channel::{Hello, Limits, Open, Put, Role, Stream};
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(l.size(), Ordering::SeqCst) + l.size();
            PEAK.fetch_max(now, Ordering::SeqCst);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        CURRENT.fetch_sub(l.size(), Ordering::SeqCst);
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Run `f` and return how far memory rose above where it started.
fn peak_growth(f: impl FnOnce()) -> usize {
    let base = CURRENT.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    f();
    PEAK.load(Ordering::SeqCst).saturating_sub(base)
}

const MIB: usize = 1 << 20;
/// What the hostile peer offers in each scenario.
const FLOOD: usize = 256 * MIB;
/// What either side may use for it: one frame, the read buffer, two windows, slack.
const BOUND: usize = 6 * MIB;

fn hello(role: Role) -> Vec<u8> {
    let h = serde_json::to_vec(&Hello::new(role, "hostile")).expect("json");
    [PREAMBLE.to_vec(), encode(0, Kind::Hello, &h)].concat()
}

/// A hostile agent: says hello, then writes `frames` over and over until `FLOOD`
/// bytes went out or the client hung up.
fn hostile_agent(frames: Vec<u8>) -> std::os::unix::net::UnixStream {
    let (a, mut b) = std::os::unix::net::UnixStream::pair().expect("pair");
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let n = b.read(&mut buf).unwrap_or(0);
        let nonce = common::client_nonce(&buf[..n]);
        let _ = b.write_all(&common::server_hello_for(nonce, 1, 1, "hostile"));
        let mut sent = 0;
        while sent < FLOOD {
            if b.write_all(&frames).is_err() {
                break;
            }
            sent += frames.len();
        }
        println!("the hostile agent wrote {sent} bytes");
    });
    a
}

#[test]
fn hostile_peers_cannot_make_either_side_allocate_without_bound() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Warm up the runtime and one connection so lazily allocated statics are counted.
    rt.block_on(async {
        let c = common::client(hostile_agent(encode(77, Kind::Close, &[]))).await;
        c.close("warm-up");
    });

    let put = Open::Put(Put {
        dir: "x".into(),
        preserve_owner: false,
    });

    // 1. Endless 1 MiB frames for sessions the host never opened: read and dropped.
    let junk_frames = encode(99, Kind::Data(Stream::Out), &vec![0u8; MIB]);
    let grew = peak_growth(|| {
        rt.block_on(async {
            let c = common::client(hostile_agent(junk_frames)).await;
            let r = c.closed().await;
            assert!(r.contains("closed the channel"), "{r}");
        })
    });
    println!(
        "frames for unknown sessions: host grew by {grew} bytes (the peer may send up to {FLOOD})"
    );
    assert!(
        grew < BOUND,
        "frames for unknown sessions: host grew by {grew} bytes"
    );

    // 2. Output nobody reads, then more than the window: refused at the first byte over.
    let flood = encode(1, Kind::Data(Stream::Out), &vec![1u8; 64 << 10]);
    let put2 = put.clone();
    let grew = peak_growth(|| {
        rt.block_on(async {
            let c = common::client(hostile_agent(flood)).await;
            let s = c.open(&put2).expect("open");
            let r = c.closed().await;
            assert!(r.contains("credit"), "{r}");
            drop(s);
        })
    });
    println!("unread output: host grew by {grew} bytes (the peer may send up to {FLOOD})");
    assert!(grew < BOUND, "unread output: host grew by {grew} bytes");

    // 3. A header claiming 4 GiB, then endless bytes.
    let mut giant = encode(1, Kind::Data(Stream::Out), b"x");
    giant[0..4].copy_from_slice(&u32::MAX.to_be_bytes());
    giant.extend(vec![0u8; MIB]);
    let grew = peak_growth(|| {
        rt.block_on(async {
            let c = common::client(hostile_agent(giant)).await;
            let _s = c.open(&put).expect("open");
            let r = c.closed().await;
            assert!(r.contains("exceeds"), "{r}");
        })
    });
    println!("giant frame: host grew by {grew} bytes (the peer may send up to {FLOOD})");
    assert!(grew < BOUND, "giant frame: host grew by {grew} bytes");

    // 4. The agent's side: a host sending 256 MiB of stdin to a session that reads
    //    nothing, ignoring its credit.
    let grew = peak_growth(|| {
        let (srv, sock) = common::server(Limits::default());
        let mut w = sock.try_clone().expect("clone");
        let writer = std::thread::spawn(move || {
            let _ = w.write_all(&hello(Role::Client));
            let _ = w.write_all(&encode(1, Kind::Open, br#"{"type":"put","dir":"wait"}"#));
            let chunk = encode(1, Kind::Data(Stream::In), &vec![2u8; 64 << 10]);
            let mut sent = 0;
            while sent < FLOOD && w.write_all(&chunk).is_ok() {
                sent += chunk.len();
            }
        });
        let e = srv.done.join().expect("server").unwrap_err();
        assert!(e.to_string().contains("credit"), "{e}");
        drop(sock);
        writer.join().expect("writer");
    });
    println!("stdin flood: agent side grew by {grew} bytes (the peer may send up to {FLOOD})");
    assert!(grew < BOUND, "stdin flood: agent side grew by {grew} bytes");
}
