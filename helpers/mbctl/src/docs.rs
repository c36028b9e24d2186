//! `mbctl generate-docs`: man pages and shell completions from the clap definitions, so they
//! can never disagree with the binary.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;

/// Write `mbctl.1` (unless `man_dir` already has one, e.g. from `docs/man/mbctl.1.scd`, which
/// is richer), `mbctl-SUB[-SUB].1` for every visible subcommand, and the completions
/// `mbctl.bash`, `_mbctl`, `mbctl.fish` into `completions_dir`.
pub fn generate(man_dir: &Path, completions_dir: &Path) -> Result<Vec<String>> {
    fs::create_dir_all(man_dir).with_context(|| format!("cannot create {}", man_dir.display()))?;
    fs::create_dir_all(completions_dir)
        .with_context(|| format!("cannot create {}", completions_dir.display()))?;
    let mut written = Vec::new();
    let mut cmd = Cli::command();
    cmd.build();
    if !man_dir.join("mbctl.1").exists() {
        write_man(&cmd, man_dir, "mbctl", &mut written)?;
    }
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let name = format!("mbctl-{}", sub.get_name());
        write_man(sub, man_dir, &name, &mut written)?;
        for leaf in sub
            .get_subcommands()
            .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        {
            write_man(
                leaf,
                man_dir,
                &format!("{name}-{}", leaf.get_name()),
                &mut written,
            )?;
        }
    }
    for (shell, file) in [
        (Shell::Bash, "mbctl.bash"),
        (Shell::Zsh, "_mbctl"),
        (Shell::Fish, "mbctl.fish"),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "mbctl", &mut buf);
        let path = completions_dir.join(file);
        fs::write(&path, buf).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path.display().to_string());
    }
    Ok(written)
}

fn write_man(cmd: &clap::Command, dir: &Path, name: &str, written: &mut Vec<String>) -> Result<()> {
    // clap wants a &'static name without its `string` feature; a handful of pages leak nothing that matters.
    let static_name: &'static str = Box::leak(name.to_owned().into_boxed_str());
    let page = clap_mangen::Man::new(cmd.clone().name(static_name)).section("1");
    let mut buf = Vec::new();
    page.render(&mut buf)
        .with_context(|| format!("cannot render man page {name}"))?;
    let path = dir.join(format!("{name}.1"));
    fs::write(&path, buf).with_context(|| format!("cannot write {}", path.display()))?;
    written.push(path.display().to_string());
    Ok(())
}
