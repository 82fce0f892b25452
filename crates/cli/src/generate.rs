//! The man pages (one per subcommand, clap_mangen) and shell completion scripts of
//! this binary's own command tree, so they cannot drift from it. One home for both
//! consumers: `banger __generate --out DIR` (hidden; the release tool runs it) and
//! `banger system install` (which installs them).
//!
//! The completion scripts are the same dynamic registrations `banger completion SHELL`
//! prints (names of VMs, images and kernels come from the daemon when you press tab),
//! written for a `banger` found on `PATH` rather than for the path this ran from.

use banger_system::Artifacts;
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

/// Every man page and completion script, rendered in memory.
pub fn artifacts() -> std::io::Result<Artifacts> {
    let mut cmd = crate::Cli::command().disable_help_subcommand(true);
    cmd.build();
    fn walk(cmd: &clap::Command, out: &mut Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub, out)?;
        }
        let man = clap_mangen::Man::new(cmd.clone());
        let mut buf = vec![];
        man.render(&mut buf)?;
        out.push((man.get_filename(), buf));
        Ok(())
    }
    let mut man_pages = vec![];
    walk(&cmd, &mut man_pages)?;
    let reg = |shell: &dyn EnvCompleter| -> std::io::Result<Vec<u8>> {
        let mut buf = vec![];
        shell.write_registration("COMPLETE", "banger", "banger", "banger", &mut buf)?;
        Ok(buf)
    };
    Ok(Artifacts {
        man_pages,
        bash: reg(&Bash)?,
        zsh: reg(&Zsh)?,
        fish: reg(&Fish)?,
    })
}

/// `banger __generate --out DIR`.
pub fn run(a: GenerateArgs) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    let art = artifacts().context("rendering man pages and completions")?;
    let man = a.out.join("man/man1");
    std::fs::create_dir_all(&man).with_context(|| format!("creating {}", man.display()))?;
    for (name, bytes) in &art.man_pages {
        let p = man.join(name);
        std::fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))?;
    }
    let comp = a.out.join("completions");
    std::fs::create_dir_all(&comp).with_context(|| format!("creating {}", comp.display()))?;
    for (file, bytes) in [
        ("banger.bash", &art.bash),
        ("_banger", &art.zsh),
        ("banger.fish", &art.fish),
    ] {
        let p = comp.join(file);
        std::fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_pages_and_completions_cover_the_cli() {
        let a = artifacts().unwrap();
        let names: Vec<&str> = a.man_pages.iter().map(|(n, _)| n.as_str()).collect();
        for want in [
            "banger.1",
            "banger-vm.1",
            "banger-vm-run.1",
            "banger-system-install.1",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        assert!(
            !names.iter().any(|n| n.contains("generate")),
            "hidden commands get no page"
        );
        let vm_run = &a
            .man_pages
            .iter()
            .find(|(n, _)| n == "banger-vm-run.1")
            .unwrap()
            .1;
        assert!(String::from_utf8_lossy(vm_run).contains(".TH banger-vm-run"));
        assert!(String::from_utf8_lossy(&a.bash).contains("COMPLETE"));
        // The scripts call the banger on PATH, not the binary that rendered them.
        let exe = std::env::current_exe().unwrap();
        assert!(!String::from_utf8_lossy(&a.fish).contains(&*exe.to_string_lossy()));
        assert!(!a.zsh.is_empty());
    }
}
