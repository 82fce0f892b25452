//! The static-ELF check of the guest agent lives in banger-hostcheck (one home for
//! the daemon, image builds and `banger doctor`); re-exported for this crate's users.

pub use banger_hostcheck::elf::{is_static, ElfError};
