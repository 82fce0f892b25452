//! Credit-based flow control, one window per stream and direction.
//!
//! Every data stream starts with [`INITIAL_WINDOW`] bytes of credit. A sender spends
//! credit as it sends and waits when it has none; a receiver grants credit back (a
//! window frame) once the application consumed [`WINDOW_UPDATE_THRESHOLD`] bytes. So a
//! receiver never holds more than its window of unread data per stream, and a sender
//! that ignores its credit is caught on the first byte over it.

use crate::limits::{INITIAL_WINDOW, MAX_WINDOW, WINDOW_UPDATE_THRESHOLD};

/// A peer broke the flow-control rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    /// It sent more than the credit it had.
    #[error("the peer sent {sent} bytes with only {credit} bytes of credit left")]
    Overrun {
        /// Bytes in the frame.
        sent: usize,
        /// Credit it had.
        credit: u32,
    },
    /// It granted credit beyond [`MAX_WINDOW`] (or a zero grant).
    #[error("the peer granted {grant} bytes of credit on top of {credit} (the most is {max})")]
    BadGrant {
        /// The grant.
        grant: u32,
        /// Credit already held.
        credit: u32,
        /// [`MAX_WINDOW`].
        max: u32,
    },
}

/// What this side may still send on one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendCredit {
    credit: u32,
}

impl Default for SendCredit {
    fn default() -> Self {
        Self {
            credit: INITIAL_WINDOW,
        }
    }
}

impl SendCredit {
    /// Credit left.
    pub fn available(&self) -> u32 {
        self.credit
    }

    /// Spend up to `want` bytes of credit; returns how many may be sent now (0: wait).
    pub fn take(&mut self, want: usize) -> usize {
        let n = want.min(self.credit as usize);
        // n <= credit, which fits in u32.
        self.credit -= n as u32;
        n
    }

    /// The peer granted `grant` more bytes.
    pub fn grant(&mut self, grant: u32) -> Result<(), FlowError> {
        let bad = FlowError::BadGrant {
            grant,
            credit: self.credit,
            max: MAX_WINDOW,
        };
        if grant == 0 {
            return Err(bad);
        }
        match self.credit.checked_add(grant) {
            Some(c) if c <= MAX_WINDOW => {
                self.credit = c;
                Ok(())
            }
            _ => Err(bad),
        }
    }
}

/// What the peer may still send on one stream, and what the application consumed
/// since the last grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvWindow {
    remaining: u32,
    consumed: u32,
}

impl Default for RecvWindow {
    fn default() -> Self {
        Self {
            remaining: INITIAL_WINDOW,
            consumed: 0,
        }
    }
}

impl RecvWindow {
    /// A data frame of `n` bytes arrived: refuse it if it is over the peer's credit.
    pub fn on_data(&mut self, n: usize) -> Result<(), FlowError> {
        match u32::try_from(n) {
            Ok(k) if k <= self.remaining => {
                self.remaining -= k;
                Ok(())
            }
            _ => Err(FlowError::Overrun {
                sent: n,
                credit: self.remaining,
            }),
        }
    }

    /// The application consumed `n` bytes: returns the grant to send, if it is time.
    pub fn on_consumed(&mut self, n: usize) -> Option<u32> {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.consumed = self.consumed.saturating_add(n);
        if self.consumed < WINDOW_UPDATE_THRESHOLD {
            return None;
        }
        let grant = self.consumed;
        self.consumed = 0;
        self.remaining = self.remaining.saturating_add(grant);
        Some(grant)
    }

    /// Bytes the peer may still send before it must wait for a grant.
    pub fn remaining(&self) -> u32 {
        self.remaining
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_waits_at_zero_and_resumes_on_a_grant() {
        let mut c = SendCredit::default();
        assert_eq!(c.take(usize::MAX), INITIAL_WINDOW as usize);
        assert_eq!(c.take(10), 0);
        c.grant(100).unwrap();
        assert_eq!(c.take(10), 10);
        assert_eq!(c.available(), 90);
    }

    #[test]
    fn grants_are_bounded() {
        let mut c = SendCredit::default();
        assert!(c.grant(0).is_err());
        assert!(c.grant(u32::MAX).is_err());
        assert!(c.grant(MAX_WINDOW - INITIAL_WINDOW).is_ok());
        assert!(c.grant(1).is_err());
    }

    #[test]
    fn a_receiver_catches_overruns_and_grants_what_was_consumed() {
        let mut w = RecvWindow::default();
        w.on_data(INITIAL_WINDOW as usize - 1).unwrap();
        assert!(w.on_data(2).is_err());
        w.on_data(1).unwrap();
        assert!(w.on_data(1).is_err());
        assert_eq!(w.on_consumed(WINDOW_UPDATE_THRESHOLD as usize - 1), None);
        assert_eq!(w.on_consumed(1), Some(WINDOW_UPDATE_THRESHOLD));
        assert_eq!(w.remaining(), WINDOW_UPDATE_THRESHOLD);
        // Once everything received is consumed, the peer has its whole window back:
        // it can never have more than the initial window of data unread here.
        let rest = INITIAL_WINDOW - WINDOW_UPDATE_THRESHOLD;
        assert_eq!(w.on_consumed(rest as usize), Some(rest));
        assert_eq!(w.remaining(), INITIAL_WINDOW);
    }
}
