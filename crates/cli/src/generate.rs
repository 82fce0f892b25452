//! `banger __generate --out DIR` (hidden; the release tool runs it): the man pages, one
//! per subcommand (clap_mangen), and the shell completion scripts a release ships, all
//! from this binary's own command tree, so they cannot drift from it.
//!
//! The completion scripts are the same dynamic registrations `banger completion SHELL`
//! prints (names of VMs, images and kernels come from the daemon when you press tab),
//! written for a `banger` found on `PATH` rather than for the path this ran from.

use clap::CommandFactory;
use clap_complete::env::{Bash, EnvCompleter, Fish, Zsh};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// Directory to write `man/man1/*.1` and `completions/{banger.bash,_banger,banger.fish}` into.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: GenerateArgs) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    let cmd = crate::Cli::command();
    let man = a.out.join("man/man1");
    std::fs::create_dir_all(&man).with_context(|| format!("creating {}", man.display()))?;
    clap_mangen::generate_to(cmd, &man)
        .with_context(|| format!("writing man pages into {}", man.display()))?;
    let comp = a.out.join("completions");
    std::fs::create_dir_all(&comp).with_context(|| format!("creating {}", comp.display()))?;
    let shells: [(&str, &dyn EnvCompleter); 3] = [
        ("banger.bash", &Bash),
        ("_banger", &Zsh),
        ("banger.fish", &Fish),
    ];
    for (file, shell) in shells {
        let mut buf = Vec::new();
        shell
            .write_registration("COMPLETE", "banger", "banger", "banger", &mut buf)
            .with_context(|| format!("rendering the {file} completion"))?;
        let p = comp.join(file);
        std::fs::write(&p, buf).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}
