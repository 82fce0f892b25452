//! Incremental frame decoding, shared by the sync and tokio sides.
//!
//! Bytes go in as they arrive, in pieces of any size; whole frames come out. The
//! decoder never trusts a length before checking it: a header claiming 4 GiB is refused
//! as soon as its 9 bytes are in, and a payload buffer only grows as its bytes arrive,
//! so memory is bounded by [`Limits::max_frame`] whatever the peer sends.

use crate::frame::{Frame, FrameError, Header};
use crate::limits::{Limits, HEADER_LEN, PREAMBLE};

/// Bytes of a payload buffer reserved up front; the rest grows with the data.
const INITIAL_PAYLOAD_CAPACITY: usize = 16 << 10;

/// Skipped bytes kept to recognise an old JSON-lines agent's reply: one short line.
const LEGACY_HEAD: usize = 256;

/// Whether `line` is what an old JSON-lines agent answers to anything that is not a
/// request: a JSON object line with an `ok` member (`{"error":"malformed ...","ok":false}`).
fn is_legacy_reply(line: &[u8]) -> bool {
    line.starts_with(b"{\"") && line.windows(5).any(|w| w == b"\"ok\":")
}

#[derive(Debug)]
enum State {
    /// Looking for the peer's preamble.
    Preamble {
        /// Bytes of the preamble matched so far.
        matched: usize,
        /// Bytes skipped so far (junk before the preamble).
        skipped: usize,
        /// The first skipped bytes, to recognise an old agent's JSON reply.
        head: Vec<u8>,
    },
    /// Reading a header.
    Header { buf: [u8; HEADER_LEN], have: usize },
    /// Reading a payload.
    Payload { header: Header, buf: Vec<u8> },
}

/// Turns a byte stream into checked frames.
#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    state: State,
}

impl Decoder {
    /// A decoder that first looks for the peer's [`PREAMBLE`] (the start of every
    /// connection), skipping at most [`Limits::max_preamble_skip`] bytes of junk.
    pub fn new(limits: Limits) -> Self {
        let mut d = Self::without_preamble(limits);
        d.expect_preamble();
        d
    }

    /// A decoder positioned at a frame boundary.
    pub fn without_preamble(limits: Limits) -> Self {
        Self {
            limits,
            state: State::Header {
                buf: [0; HEADER_LEN],
                have: 0,
            },
        }
    }

    /// Look for a preamble again (a new connection on the same byte stream).
    pub fn expect_preamble(&mut self) {
        self.state = State::Preamble {
            matched: 0,
            skipped: 0,
            head: Vec::new(),
        };
    }

    /// After a framing error, look for a preamble again, starting with the bytes of the
    /// header that failed. On a virtio-serial port a host that reconnected begins with
    /// the preamble right where the guest expected the old connection's next header,
    /// so those bytes are where the new connection starts.
    pub fn resync(&mut self) {
        let pending = match &self.state {
            State::Header { buf, have } => buf[..*have].to_vec(),
            _ => Vec::new(),
        };
        self.expect_preamble();
        // Fewer bytes than a preamble: they can only advance the match, never fail.
        let _ = self.decode_all(&pending);
    }

    /// Whether the decoder is still looking for the preamble.
    pub fn in_preamble(&self) -> bool {
        matches!(self.state, State::Preamble { .. })
    }

    /// Consume bytes from the front of `input`: returns how many were used and the
    /// frame they completed, if any. Call again with the rest until it is empty.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Option<Frame>), FrameError> {
        let (n, r) = self.decode_step(input);
        r.map(|f| (n, f))
    }

    /// Like [`Decoder::decode`], but says how many bytes were used even on an error
    /// (for [`Decoder::resync`], which goes on from there).
    pub fn decode_step(&mut self, input: &[u8]) -> (usize, Result<Option<Frame>, FrameError>) {
        let mut used = 0;
        match self.step(input, &mut used) {
            Ok(f) => (used, Ok(f)),
            Err(e) => (used, Err(e)),
        }
    }

    fn step(&mut self, input: &[u8], used: &mut usize) -> Result<Option<Frame>, FrameError> {
        while *used < input.len() {
            let rest = &input[*used..];
            match &mut self.state {
                State::Preamble {
                    matched,
                    skipped,
                    head,
                } => {
                    let b = rest[0];
                    *used += 1;
                    if b == PREAMBLE[*matched] {
                        *matched += 1;
                        if *matched == PREAMBLE.len() {
                            self.state = State::Header {
                                buf: [0; HEADER_LEN],
                                have: 0,
                            };
                        }
                        continue;
                    }
                    // The preamble's only NUL is its first byte, so after a mismatch
                    // the only place a new match can start is this byte.
                    *skipped += *matched + 1;
                    if head.len() < LEGACY_HEAD {
                        head.extend_from_slice(&PREAMBLE[..*matched]);
                        head.push(b);
                        if (b == b'\n' || head.len() >= LEGACY_HEAD) && is_legacy_reply(head) {
                            return Err(FrameError::LegacyPeer);
                        }
                    }
                    *matched = usize::from(b == PREAMBLE[0]);
                    if *matched == 1 {
                        *skipped -= 1;
                    }
                    if *skipped > self.limits.max_preamble_skip {
                        return Err(FrameError::NoPreamble(*skipped));
                    }
                }
                State::Header { buf, have } => {
                    let n = (HEADER_LEN - *have).min(rest.len());
                    buf[*have..*have + n].copy_from_slice(&rest[..n]);
                    *have += n;
                    *used += n;
                    if *have == HEADER_LEN {
                        let header = Header::decode(buf, &self.limits)?;
                        let cap = (header.len as usize).min(INITIAL_PAYLOAD_CAPACITY);
                        self.state = State::Payload {
                            header,
                            buf: Vec::with_capacity(cap),
                        };
                        if header.len == 0 {
                            return Ok(Some(self.finish()));
                        }
                    }
                }
                State::Payload { header, buf } => {
                    let want = header.len as usize - buf.len();
                    let n = want.min(rest.len());
                    buf.extend_from_slice(&rest[..n]);
                    *used += n;
                    if buf.len() == header.len as usize {
                        return Ok(Some(self.finish()));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Hand out the completed payload and go back to reading a header.
    fn finish(&mut self) -> Frame {
        let done = std::mem::replace(
            &mut self.state,
            State::Header {
                buf: [0; HEADER_LEN],
                have: 0,
            },
        );
        match done {
            State::Payload { header, buf } => Frame {
                session: header.session,
                kind: header.kind,
                payload: buf,
            },
            // finish() is only called in the Payload state.
            _ => Frame {
                session: 0,
                kind: crate::frame::Kind::Close,
                payload: Vec::new(),
            },
        }
    }

    /// Decode every frame in `input`, in order (for tests and small buffers).
    pub fn decode_all(&mut self, mut input: &[u8]) -> Result<Vec<Frame>, FrameError> {
        let mut out = Vec::new();
        while !input.is_empty() {
            let (n, f) = self.decode(input)?;
            input = &input[n..];
            out.extend(f);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{encode, Kind, Stream};

    fn frames() -> Vec<Frame> {
        vec![
            Frame {
                session: 0,
                kind: Kind::Hello,
                payload: br#"{"protocol":1}"#.to_vec(),
            },
            Frame {
                session: 1,
                kind: Kind::Data(Stream::Out),
                payload: vec![7u8; 70_000],
            },
            Frame {
                session: 3,
                kind: Kind::Eof(Stream::Err),
                payload: vec![],
            },
            Frame {
                session: 1,
                kind: Kind::Window(Stream::In),
                payload: 9u32.to_be_bytes().to_vec(),
            },
        ]
    }

    fn wire(fs: &[Frame]) -> Vec<u8> {
        let mut w = PREAMBLE.to_vec();
        for f in fs {
            w.extend(f.encode());
        }
        w
    }

    #[test]
    fn whole_buffer_and_byte_by_byte_give_the_same_frames() {
        let fs = frames();
        let w = wire(&fs);
        assert_eq!(Decoder::new(Limits::default()).decode_all(&w).unwrap(), fs);
        let mut d = Decoder::new(Limits::default());
        let mut got = vec![];
        for b in &w {
            let (n, f) = d.decode(std::slice::from_ref(b)).unwrap();
            assert_eq!(n, 1);
            got.extend(f);
        }
        assert_eq!(got, fs);
    }

    #[test]
    fn pieces_of_every_size_give_the_same_frames() {
        let fs = frames();
        let w = wire(&fs);
        for step in [2, 3, 5, 8, 9, 10, 17, 4096, 65_537] {
            let mut d = Decoder::new(Limits::default());
            let mut got = vec![];
            for piece in w.chunks(step) {
                got.extend(d.decode_all(piece).unwrap());
            }
            assert_eq!(got, fs, "step {step}");
        }
    }

    #[test]
    fn junk_before_the_preamble_is_skipped_within_the_limit() {
        let fs = frames();
        let mut w = b"stale \0bang half a frame \0\0banger-chann".to_vec();
        w.extend(wire(&fs));
        assert_eq!(Decoder::new(Limits::default()).decode_all(&w).unwrap(), fs);
    }

    #[test]
    fn endless_junk_is_refused() {
        let limits = Limits {
            max_preamble_skip: 1000,
            ..Limits::default()
        };
        let mut d = Decoder::new(limits);
        let junk = vec![b'x'; 4096];
        let e = d.decode_all(&junk).unwrap_err();
        assert_eq!(e, FrameError::NoPreamble(1001));
        // Repeated NULs (the preamble's first byte) do not reset the count.
        let mut d = Decoder::new(limits);
        let e = d.decode_all(&vec![0u8; 4096]).unwrap_err();
        assert!(matches!(e, FrameError::NoPreamble(_)), "{e}");
    }

    #[test]
    fn a_new_connection_where_a_header_was_expected_is_found_again() {
        let fs = frames();
        let mut w = wire(&fs[..2]);
        // The next connection starts without the old one having ended.
        w.extend(wire(&fs[2..]));
        let mut d = Decoder::new(Limits::default());
        let mut got = vec![];
        let mut input = &w[..];
        while !input.is_empty() {
            let (n, r) = d.decode_step(input);
            input = &input[n..];
            match r {
                Ok(f) => got.extend(f),
                Err(_) => d.resync(),
            }
        }
        assert_eq!(got, fs);
    }

    #[test]
    fn an_old_json_lines_agent_is_recognised() {
        let mut d = Decoder::new(Limits::default());
        // serde_json sorts the old agent's keys: "error" comes before "ok".
        let e = d
            .decode_all(b"{\"error\":\"malformed request: expected value\",\"ok\":false}\n")
            .unwrap_err();
        assert_eq!(e, FrameError::LegacyPeer);
        // A JSON line without "ok" is just junk.
        let mut d = Decoder::new(Limits::default());
        assert!(d.decode_all(b"{\"hello\":1}\n").is_ok());
    }

    #[test]
    fn a_giant_length_is_refused_from_the_header_alone() {
        let mut d = Decoder::without_preamble(Limits::default());
        let mut h = encode(1, Kind::Data(Stream::Out), b"x");
        h[0..4].copy_from_slice(&u32::MAX.to_be_bytes());
        // Only the header: no payload byte was needed to refuse it.
        let e = d.decode(&h[..HEADER_LEN]).unwrap_err();
        assert!(
            matches!(e, FrameError::TooLarge { len: u32::MAX, .. }),
            "{e}"
        );
    }

    #[test]
    fn garbage_after_the_preamble_is_refused() {
        let mut w = PREAMBLE.to_vec();
        w.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1, 0xff]);
        let e = Decoder::new(Limits::default()).decode_all(&w).unwrap_err();
        // The length is checked before the kind or after, but something is refused.
        assert!(
            matches!(
                e,
                FrameError::UnknownKind(0xff) | FrameError::TooLarge { .. }
            ),
            "{e}"
        );
    }

    #[test]
    fn payload_memory_grows_with_the_data_not_the_claim() {
        let mut d = Decoder::without_preamble(Limits::default());
        let mut h = encode(1, Kind::Data(Stream::Out), b"x");
        h[0..4].copy_from_slice(&(1u32 << 20).to_be_bytes());
        d.decode(&h[..HEADER_LEN]).unwrap();
        match &d.state {
            State::Payload { buf, .. } => assert!(buf.capacity() <= INITIAL_PAYLOAD_CAPACITY),
            s => panic!("unexpected state {s:?}"),
        }
    }
}
