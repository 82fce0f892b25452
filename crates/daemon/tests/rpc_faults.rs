//! Misbehaving local clients against the real `bangerd`: each gets a clear error or a
//! closed connection, and the daemon keeps answering everyone else.
//!
//! The cases that depend on the daemon's timeouts (an idle connection, half a line,
//! a client that never reads) run side by side, so the test takes about one read
//! timeout (60 s), not the sum.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use common::{call_raw, ping, Daemon};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long the daemon may take to close a connection it times out (its read
/// timeout is 60 s, its write timeout 30 s), with room for a loaded machine.
const CLOSE_WITHIN: Duration = Duration::from_secs(150);

fn error_of(reply: &str) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(reply).unwrap_or_else(|e| panic!("reply {reply:?} is not JSON: {e}"));
    assert!(v["error"].is_object(), "expected an error, got {reply}");
    assert!(
        !v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "the error says what was wrong: {reply}"
    );
    v["error"].clone()
}

/// Read until the daemon closes the connection; returns what it sent.
fn until_closed(s: &mut UnixStream) -> String {
    s.set_read_timeout(Some(CLOSE_WITHIN)).unwrap();
    let mut all = Vec::new();
    let t = Instant::now();
    match s.read_to_end(&mut all) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!(
            "the daemon did not close the connection within {:?}: {e}",
            t.elapsed()
        ),
    }
    String::from_utf8_lossy(&all).into_owned()
}

fn start(home: &Path, catalog: &str) -> Daemon {
    let cat = std::path::PathBuf::from(catalog);
    Daemon::start(
        &[("BANGER_HOME", home), ("BANGER_CATALOG", &cat)],
        home.join("run/bangerd.sock"),
        home.join("bangerd.log"),
    )
}

#[test]
fn hostile_clients_get_errors_or_closed_connections_and_others_are_still_served() {
    let t = tempfile::tempdir().unwrap();
    // A catalog server that accepts and never answers: `catalog.list` hangs on it,
    // which gives a call that stays in flight (for the reused op id case).
    let hang = TcpListener::bind("127.0.0.1:0").unwrap();
    let catalog = format!(
        "http://127.0.0.1:{}/index.json",
        hang.local_addr().unwrap().port()
    );
    let d = start(t.path(), &catalog);
    let sock = d.socket.clone();
    let fds_before = d.fds();

    std::thread::scope(|scope| {
        // Idle: connected, sends nothing. Closed without a word.
        let idle = scope.spawn(|| {
            let mut s = UnixStream::connect(&sock).unwrap();
            let got = until_closed(&mut s);
            assert_eq!(got, "", "an idle connection is closed silently");
        });
        // Half a line, never finished: one error line, then closed.
        let partial = scope.spawn(|| {
            let mut s = UnixStream::connect(&sock).unwrap();
            s.write_all(br#"{"v":1,"id":5,"method":"pi"#).unwrap();
            let got = until_closed(&mut s);
            let e = error_of(got.lines().next().unwrap_or_default());
            assert!(
                e["message"].as_str().unwrap().contains("not completed"),
                "{e}"
            );
        });
        // Never reads: requests pile up replies until the daemon gives up on it.
        let hog = scope.spawn(|| {
            let mut s = UnixStream::connect(&sock).unwrap();
            s.set_write_timeout(Some(CLOSE_WITHIN)).unwrap();
            let line = b"{\"v\":1,\"id\":1,\"method\":\"vm.list\"}\n".repeat(64);
            let t = Instant::now();
            let mut sent = 0usize;
            let closed = loop {
                match s.write_all(&line) {
                    Ok(()) => sent += line.len(),
                    Err(e) => break e,
                }
                assert!(t.elapsed() < CLOSE_WITHIN * 2, "never disconnected");
            };
            eprintln!(
                "non-reading client: {sent} bytes of requests, then {closed} after {:?}",
                t.elapsed()
            );
            assert!(
                matches!(
                    closed.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ),
                "{closed}"
            );
        });

        // Meanwhile, everyone else is answered.
        let t0 = Instant::now();
        while !(idle.is_finished() && partial.is_finished() && hog.is_finished()) {
            assert!(ping(&sock), "the daemon stopped answering others");
            std::thread::sleep(Duration::from_millis(500));
            assert!(t0.elapsed() < CLOSE_WITHIN * 3);
        }
        for h in [idle, partial, hog] {
            h.join().unwrap();
        }

        // Lines that are not requests: an error each, and the connection still
        // serves the next line (or is closed, for bytes that are not text).
        let mut s = UnixStream::connect(&sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut ask = |line: &[u8]| {
            s.write_all(line).unwrap();
            s.write_all(b"\n").unwrap();
            let mut reply = String::new();
            r.read_line(&mut reply).unwrap();
            reply
        };
        for bad in [
            &b"[1,2,3]"[..],
            b"42",
            b"\"ping\"",
            b"null",
            b"true",
            b"{",
            b"{\"v\":1,\"id\":1}",
            b"{\"v\":1,\"id\":1,\"method\":17}",
            b"{\"v\":1,\"id\":1,\"method\":\"no.such\"}",
            b"{\"v\":99,\"id\":1,\"method\":\"ping\"}",
            b"{\"v\":1,\"id\":-1,\"method\":\"ping\",\"params\":[]}",
            b"{\"v\":1,\"id\":1.5,\"method\":\"vm.show\",\"params\":{\"name\":7}}",
            b"{\"v\":1,\"id\":\"seven\",\"method\":\"vm.show\",\"params\":{}}",
            b"{\"v\":1,\"id\":18446744073709551616,\"method\":\"vm.show\",\"params\":{\"name\":\"x\"}}",
            b"{\"v\":1,\"id\":1,\"op_id\":\"\",\"method\":\"ping\"}",
            b"{\"v\":1,\"id\":1,\"op_id\":\"has space\",\"method\":\"ping\"}",
            b"{\"v\":1,\"id\":1,\"op_id\":{\"a\":1},\"method\":\"ping\"}",
            b"{\"v\":1,\"id\":1,\"method\":\"pi\0ng\"}",
            b"\0\0\0\0",
            b"{\"v\":1,\"id\":2,\"method\":\"vm.show\",\"params\":{\"name\":\"a\\u0000b\"}}",
        ] {
            let reply = ask(bad);
            let e = error_of(&reply);
            eprintln!("{:<90} -> {}: {}", String::from_utf8_lossy(bad).escape_debug().to_string(), e["code"], e["message"]);
            if [&b"[1,2,3]"[..], b"42", b"\"ping\"", b"null", b"true"].contains(&bad) {
                assert_eq!(e["code"], "bad_request", "{e}");
                assert!(
                    e["message"].as_str().unwrap().contains("not a JSON object"),
                    "{e}"
                );
            }
        }
        // The largest id is echoed as given; the connection is still in order.
        let ok = ask(br#"{"v":1,"id":18446744073709551615,"method":"ping"}"#);
        assert!(
            ok.contains("\"id\":18446744073709551615") && ok.contains("\"result\""),
            "{ok}"
        );

        // Not UTF-8: an error, then the connection is closed.
        let mut s = UnixStream::connect(&sock).unwrap();
        s.write_all(b"{\"v\":1,\"id\":1,\"method\":\"\xff\xfe\"}\n")
            .unwrap();
        let got = until_closed(&mut s);
        let e = error_of(got.lines().next().unwrap_or_default());
        assert!(e["message"].as_str().unwrap().contains("UTF-8"), "{e}");

        // A reused op id while the first call runs: refused, and the first call is
        // not disturbed.
        let mut first = UnixStream::connect(&sock).unwrap();
        first
            .write_all(b"{\"v\":1,\"id\":1,\"op_id\":\"dup-op\",\"method\":\"catalog.list\"}\n")
            .unwrap();
        // The daemon connecting to the catalog: the call is now in flight.
        hang.set_nonblocking(true).unwrap();
        let t = Instant::now();
        let upstream = loop {
            match hang.accept() {
                Ok((c, _)) => break c,
                Err(_) if t.elapsed() < Duration::from_secs(30) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("catalog.list never reached the catalog server: {e}"),
            }
        };
        let reply = call_raw(&sock, br#"{"v":1,"id":2,"op_id":"dup-op","method":"ping"}"#).unwrap();
        let e = error_of(&reply);
        assert!(e["message"].as_str().unwrap().contains("dup-op"), "{e}");
        drop(upstream); // the catalog fetch fails now: the first call ends with its own error
        first
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut line = String::new();
        BufReader::new(first).read_line(&mut line).unwrap();
        let e = error_of(&line);
        assert!(!e["message"].as_str().unwrap().contains("dup-op"), "{e}");
        // Once it ended, the op id is free again.
        let again = call_raw(&sock, br#"{"v":1,"id":3,"op_id":"dup-op","method":"ping"}"#).unwrap();
        assert!(again.contains("\"result\""), "{again}");
    });

    assert!(ping(&sock));
    // Every connection above is gone; so are their descriptors.
    let t = Instant::now();
    while d.fds() > fds_before && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("daemon fds: before {fds_before}, after {}", d.fds());
    assert!(d.fds() <= fds_before, "descriptors leaked");
    d.stop();
}
