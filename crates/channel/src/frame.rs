//! The frame layout: `[u32 len][u32 session][u8 kind][len bytes of payload]`, big-endian.
//!
//! Session 0 is the connection itself (hello, goaway); every other session is one
//! request (an exec, a file transfer, a ping). The data streams of a session are named
//! by the kind, so data payloads are raw bytes with no inner header.

use crate::limits::{Limits, HEADER_LEN};

/// A data stream of a session. `In` flows from the side that opened the session to the
/// side that accepted it (an exec's stdin, a tar being put); `Out` and `Err` flow back
/// (stdout, stderr, a tar being got).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Opener to acceptor.
    In,
    /// Acceptor to opener (stdout).
    Out,
    /// Acceptor to opener (stderr).
    Err,
}

impl Stream {
    /// Every stream, in code order.
    pub const ALL: [Stream; 3] = [Stream::In, Stream::Out, Stream::Err];

    /// The stream's number in a frame kind (`0`..=`2`).
    pub fn code(self) -> u8 {
        match self {
            Stream::In => 0,
            Stream::Out => 1,
            Stream::Err => 2,
        }
    }

    /// The stream for a number, if it names one.
    pub fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(Stream::In),
            1 => Some(Stream::Out),
            2 => Some(Stream::Err),
            _ => None,
        }
    }

    /// Index into per-stream arrays.
    pub fn index(self) -> usize {
        usize::from(self.code())
    }

    /// Whether the session's opener is the side that sends this stream.
    pub fn sent_by_opener(self) -> bool {
        self == Stream::In
    }
}

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// First frame of each side (session 0, JSON [`crate::msg::Hello`]).
    Hello,
    /// The sender closes the connection and says why (session 0, JSON [`crate::msg::Goaway`]).
    Goaway,
    /// Opens a session (JSON [`crate::msg::Open`]).
    Open,
    /// A message within a session (JSON [`crate::msg::Control`]).
    Control,
    /// The sender is done with the session and forgets it (empty payload).
    Close,
    /// Bytes of a stream (non-empty raw payload).
    Data(Stream),
    /// The sender will send no more bytes on the stream (empty payload).
    Eof(Stream),
    /// The receiver of a stream grants its sender more credit (`u32` payload).
    Window(Stream),
}

impl Kind {
    /// The kind's byte on the wire.
    pub fn code(self) -> u8 {
        match self {
            Kind::Hello => 0x01,
            Kind::Goaway => 0x02,
            Kind::Open => 0x03,
            Kind::Control => 0x04,
            Kind::Close => 0x05,
            Kind::Data(s) => 0x10 | s.code(),
            Kind::Eof(s) => 0x20 | s.code(),
            Kind::Window(s) => 0x30 | s.code(),
        }
    }

    /// The kind for a byte, if this protocol version knows it.
    pub fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            0x01 => Kind::Hello,
            0x02 => Kind::Goaway,
            0x03 => Kind::Open,
            0x04 => Kind::Control,
            0x05 => Kind::Close,
            0x10..=0x12 => Kind::Data(Stream::from_code(c & 0x0f)?),
            0x20..=0x22 => Kind::Eof(Stream::from_code(c & 0x0f)?),
            0x30..=0x32 => Kind::Window(Stream::from_code(c & 0x0f)?),
            _ => return None,
        })
    }

    /// Whether the payload is JSON.
    pub fn is_json(self) -> bool {
        matches!(
            self,
            Kind::Hello | Kind::Goaway | Kind::Open | Kind::Control
        )
    }

    /// Whether the kind belongs to session 0 (the connection) rather than a session.
    pub fn is_connection_level(self) -> bool {
        matches!(self, Kind::Hello | Kind::Goaway)
    }
}

/// Why bytes from the peer are not a valid frame stream. Every variant ends the
/// connection: after a framing error nothing that follows can be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length field is above the limit for the frame's kind.
    #[error("a {kind} frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// The frame's kind, as a name.
        kind: &'static str,
        /// The length the header claims.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// The kind byte names no frame kind of this protocol version.
    #[error("unknown frame kind 0x{0:02x}")]
    UnknownKind(u8),
    /// A connection-level frame on a session, or a session frame on session 0.
    #[error("a {kind} frame is not allowed on session {session}")]
    WrongSession {
        /// The frame's kind, as a name.
        kind: &'static str,
        /// The session it came on.
        session: u32,
    },
    /// The payload length does not fit the kind (an EOF with a payload, an empty data frame).
    #[error("a {kind} frame must carry {expected}, not {len} bytes")]
    BadLength {
        /// The frame's kind, as a name.
        kind: &'static str,
        /// The length the header claims.
        len: u32,
        /// What the kind carries.
        expected: &'static str,
    },
    /// The peer sent this many bytes without the protocol's preamble.
    #[error(
        "no banger-channel preamble in the first {0} bytes: the peer does not speak this protocol"
    )]
    NoPreamble(usize),
    /// The peer answered the preamble with a JSON line: it is a banger agent of the old
    /// JSON-lines protocol.
    #[error("the peer speaks the old JSON-lines agent protocol, not banger-channel")]
    LegacyPeer,
}

/// The fixed part of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Payload length in bytes.
    pub len: u32,
    /// Session number (0: the connection).
    pub session: u32,
    /// What the frame is.
    pub kind: Kind,
}

/// A kind's name for messages.
pub fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Hello => "hello",
        Kind::Goaway => "goaway",
        Kind::Open => "open",
        Kind::Control => "control",
        Kind::Close => "close",
        Kind::Data(_) => "data",
        Kind::Eof(_) => "eof",
        Kind::Window(_) => "window",
    }
}

impl Header {
    /// The header's 9 bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&self.len.to_be_bytes());
        b[4..8].copy_from_slice(&self.session.to_be_bytes());
        b[8] = self.kind.code();
        b
    }

    /// Parse and check a header against `limits`, before any of its payload is read.
    pub fn decode(b: &[u8; HEADER_LEN], limits: &Limits) -> Result<Self, FrameError> {
        let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let session = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
        let kind = Kind::from_code(b[8]).ok_or(FrameError::UnknownKind(b[8]))?;
        let name = kind_name(kind);
        if kind.is_connection_level() != (session == 0) {
            return Err(FrameError::WrongSession {
                kind: name,
                session,
            });
        }
        let max = if kind.is_json() {
            limits.max_json.min(limits.max_frame)
        } else {
            limits.max_frame
        };
        if len > max {
            return Err(FrameError::TooLarge {
                kind: name,
                len,
                max,
            });
        }
        let bad = |expected| FrameError::BadLength {
            kind: name,
            len,
            expected,
        };
        match kind {
            Kind::Close | Kind::Eof(_) if len != 0 => return Err(bad("no payload")),
            Kind::Window(_) if len != 4 => return Err(bad("a 4-byte credit")),
            Kind::Data(_) if len == 0 => return Err(bad("at least one byte")),
            k if k.is_json() && len == 0 => return Err(bad("a JSON object")),
            _ => {}
        }
        Ok(Self { len, session, kind })
    }
}

/// One whole frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Session number (0: the connection).
    pub session: u32,
    /// What the frame is.
    pub kind: Kind,
    /// The payload (JSON, raw data, a credit, or nothing, by kind).
    pub payload: Vec<u8>,
}

impl Frame {
    /// Header and payload as one buffer, ready to write.
    pub fn encode(&self) -> Vec<u8> {
        encode(self.session, self.kind, &self.payload)
    }

    /// The credit a window frame grants (`None` for other kinds).
    pub fn credit(&self) -> Option<u32> {
        match (self.kind, self.payload.as_slice()) {
            (Kind::Window(_), [a, b, c, d]) => Some(u32::from_be_bytes([*a, *b, *c, *d])),
            _ => None,
        }
    }
}

/// Header and payload as one buffer. The caller keeps `payload` within the limits
/// (senders cut data into [`crate::limits::DATA_CHUNK`] pieces).
pub fn encode(session: u32, kind: Kind, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&Header { len, session, kind }.encode());
    out.extend_from_slice(payload);
    out
}

/// A window frame granting `credit` more bytes on `stream` of `session`.
pub fn window(session: u32, stream: Stream, credit: u32) -> Vec<u8> {
    encode(session, Kind::Window(stream), &credit.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_code() {
        for code in 0..=255u8 {
            if let Some(k) = Kind::from_code(code) {
                assert_eq!(k.code(), code);
            }
        }
        for s in Stream::ALL {
            for k in [Kind::Data(s), Kind::Eof(s), Kind::Window(s)] {
                assert_eq!(Kind::from_code(k.code()), Some(k));
            }
        }
    }

    #[test]
    fn headers_are_checked_before_the_payload() {
        let l = Limits::default();
        let h = |len: u32, session: u32, kind: u8| {
            let mut b = [0u8; HEADER_LEN];
            b[0..4].copy_from_slice(&len.to_be_bytes());
            b[4..8].copy_from_slice(&session.to_be_bytes());
            b[8] = kind;
            Header::decode(&b, &l)
        };
        assert!(h(10, 1, 0x11).is_ok());
        assert!(matches!(
            h(u32::MAX, 1, 0x11),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(matches!(
            h(l.max_json + 1, 1, 0x04),
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(h(1, 1, 0x77), Err(FrameError::UnknownKind(0x77)));
        assert!(matches!(
            h(5, 3, 0x01),
            Err(FrameError::WrongSession { .. })
        ));
        assert!(matches!(
            h(5, 0, 0x04),
            Err(FrameError::WrongSession { .. })
        ));
        assert!(matches!(h(1, 1, 0x05), Err(FrameError::BadLength { .. })));
        assert!(matches!(h(3, 1, 0x31), Err(FrameError::BadLength { .. })));
        assert!(matches!(h(0, 1, 0x10), Err(FrameError::BadLength { .. })));
        assert!(matches!(h(0, 1, 0x03), Err(FrameError::BadLength { .. })));
        assert!(h(0, 1, 0x21).is_ok());
    }

    #[test]
    fn window_frames_carry_their_credit() {
        let bytes = window(7, Stream::Out, 4096);
        let f = Frame {
            session: 7,
            kind: Kind::Window(Stream::Out),
            payload: bytes[HEADER_LEN..].to_vec(),
        };
        assert_eq!(f.credit(), Some(4096));
        assert_eq!(f.encode(), bytes);
    }
}
