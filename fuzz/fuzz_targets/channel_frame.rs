//! The agent channel's frame decoder (`banger_channel::decoder`), fed what a hostile
//! guest can write on its virtio-serial port or vsock, in pieces of any size, with
//! the resynchronisation the agent and the host do after a framing error; every
//! frame that comes out is checked and its JSON payload parsed as the host would.
//!
//! The first input byte picks the setup: bit 0 starts at a frame boundary instead of
//! looking for the preamble, bit 1 uses small limits (so the size checks are reached
//! with small inputs), bits 2..8 the size of the pieces the bytes arrive in.
#![no_main]

use banger_channel::decoder::Decoder;
use banger_channel::frame::{Frame, Kind};
use banger_channel::{Control, Hello, Limits, Open, Role};
use libfuzzer_sys::fuzz_target;

fn limits(small: bool) -> Limits {
    if small {
        Limits {
            max_frame: 4096,
            max_json: 1024,
            max_preamble_skip: 256,
            ..Limits::default()
        }
    } else {
        Limits::default()
    }
}

/// Parsed, serialised and parsed again: the second parse must give the same value.
fn round_trips<T>(payload: &[u8])
where
    T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
{
    if let Ok(v) = serde_json::from_slice::<T>(payload) {
        let again: T = serde_json::from_slice(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(again, v);
    }
}

fn check(f: &Frame, l: &Limits) {
    assert!(f.payload.len() <= l.max_frame as usize, "payload over max_frame");
    if f.kind.is_json() {
        assert!(f.payload.len() <= l.max_json as usize, "JSON payload over max_json");
    }
    // What came out encodes back to a frame that decodes to the same frame.
    let mut d = Decoder::without_preamble(*l);
    assert_eq!(d.decode_all(&f.encode()).unwrap(), vec![f.clone()]);
    match f.kind {
        Kind::Hello => {
            round_trips::<Hello>(&f.payload);
            if let Ok(peer) = serde_json::from_slice::<Hello>(&f.payload) {
                let _ = Hello::new(Role::Client, "fuzz").negotiate(&peer);
            }
        }
        Kind::Open => round_trips::<Open>(&f.payload),
        // Control carries floats (uptime), which JSON need not reproduce bit for bit.
        Kind::Control => {
            let _ = serde_json::from_slice::<Control>(&f.payload);
        }
        Kind::Window(_) => {
            let _ = f.credit();
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut input)) = data.split_first() else {
        return;
    };
    let l = limits(mode & 2 != 0);
    let piece = 1 + usize::from(mode >> 2) * 5;
    let mut d = if mode & 1 == 0 {
        Decoder::new(l)
    } else {
        Decoder::without_preamble(l)
    };
    let mut errors = 0;
    while !input.is_empty() {
        let take = piece.min(input.len());
        let (n, r) = d.decode_step(&input[..take]);
        assert!(n <= take, "used more than it was given");
        input = &input[n..];
        match r {
            Ok(Some(f)) => check(&f, &l),
            Ok(None) => assert_eq!(n, take, "stopped early without a frame"),
            Err(_) => {
                errors += 1;
                if errors > 64 {
                    break;
                }
                // What the agent does on a virtio-serial port: look for a new
                // connection's preamble, starting with the failed header's bytes.
                d.resync();
            }
        }
    }
});
