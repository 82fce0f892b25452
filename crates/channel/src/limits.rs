//! The protocol's constants and the bounds each side enforces.
//!
//! Everything a peer sends is checked against these numbers before anything is
//! allocated for it, so a confused or hostile peer costs at most one frame of memory
//! per connection plus the flow-control windows this side itself granted.

/// Protocol version this build speaks (the highest it offers in its hello).
pub const PROTOCOL_VERSION: u32 = 1;

/// Oldest protocol version this build still speaks.
pub const MIN_PROTOCOL_VERSION: u32 = 1;

/// Written by each side before its hello. A reader skips bytes until it has seen it,
/// which resynchronises a virtio-serial port after a host reconnects (the guest may
/// still flush frames of the previous host's connection). It ends in a newline so an
/// agent of the old JSON-lines protocol answers it at once with a JSON error line,
/// which the host recognises ([`crate::frame::FrameError::LegacyPeer`]).
pub const PREAMBLE: &[u8; 16] = b"\0banger-channel\n";

/// Bytes of the frame header: `u32` payload length, `u32` session, `u8` kind (big-endian).
pub const HEADER_LEN: usize = 9;

/// Largest payload of any frame.
pub const MAX_FRAME: u32 = 1 << 20;

/// Largest payload of a JSON frame (hello, goaway, open, control).
pub const MAX_JSON: u32 = 256 << 10;

/// Credit each side starts with on every data stream of a new session: the receiver
/// buffers at most this much unread data per stream until it grants more.
pub const INITIAL_WINDOW: u32 = 256 << 10;

/// Most credit a sender may hold on one stream. A window update that would go beyond
/// it is a protocol error (a receiver never grants more than it consumed).
pub const MAX_WINDOW: u32 = 16 << 20;

/// Size of the data frames senders cut their streams into.
pub const DATA_CHUNK: usize = 64 << 10;

/// How much data a side may have sent without credit before it is told.
/// The receiver grants credit back once it consumed this much of a stream.
pub const WINDOW_UPDATE_THRESHOLD: u32 = INITIAL_WINDOW / 2;

/// Bounds one side enforces on what its peer sends. The defaults are the protocol's;
/// lower values are for tests (a conforming peer may send up to the protocol's values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame payload accepted.
    pub max_frame: u32,
    /// Largest JSON payload accepted.
    pub max_json: u32,
    /// Sessions open at once on one connection; further opens are refused.
    pub max_sessions: usize,
    /// Control messages queued on one session and not yet taken by the application;
    /// one more is a protocol error.
    pub max_pending_controls: usize,
    /// Bytes skipped while looking for the peer's [`PREAMBLE`] before giving up.
    pub max_preamble_skip: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame: MAX_FRAME,
            max_json: MAX_JSON,
            max_sessions: 64,
            max_pending_controls: 32,
            max_preamble_skip: 64 << 10,
        }
    }
}
