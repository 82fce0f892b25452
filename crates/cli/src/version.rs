//! `banger version [--json]`: which build this binary is (version, commit, build time,
//! target), without asking the daemon. `--json` is also how `banger update` reads a
//! staged binary's identity before installing it.

use banger_buildinfo::BuildInfo;
use std::process::ExitCode;

/// Print this build's version, commit, build time and target.
///
/// Example: banger version --json
#[derive(Debug, clap::Args)]
pub struct VersionArgs {}

pub fn run(_a: VersionArgs) -> anyhow::Result<ExitCode> {
    let b = BuildInfo::current();
    crate::output::render(&b, |b| {
        println!("banger {}", b.version);
        println!("commit:    {}", b.commit);
        println!("built at:  {}", b.built_at);
        println!("target:    {}", b.target);
        if banger_update::trust::TEST_BUILD {
            println!(
                "updates:   {} (TEST BUILD: release key or URL set at build time)",
                banger_update::trust::BUILTIN_MANIFEST_URL
            );
        }
    })
}
