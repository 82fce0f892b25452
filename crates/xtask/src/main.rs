//! banger's release tool (`make release` runs `cargo run -p xtask -- release …`).
//!
//! Why an xtask and not a shell script: a release is written by the same code that the
//! updater reads it with (`banger_update::pack`, `contents`, `sums`, `signature`), so the
//! manifest, checksum and signature formats have one writer and one reader; the release
//! machine needs nothing beyond cargo and git (no jq, python or cosign); and the result
//! is verified with the updater's own checks before it is published.

mod elf;
mod release;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "xtask", about = "banger's release tool")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build the release binaries, man pages and completions, and write a signed release.
    ///
    /// Writes OUT/v<version>/{banger-<version>-<target>.tar.gz, SHA256SUMS,
    /// SHA256SUMS.sig, install.sh}, and OUT/{manifest.json, latest, install.sh} (the
    /// channel, merged with --channel or an existing OUT/manifest.json).
    Release(release::ReleaseArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Release(a) => release::run(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (this crate is `crates/xtask`).
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}
