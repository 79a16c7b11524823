//! Man pages and shell completions generated from a binary's clap definitions, so that what
//! `--help` says and what `man` and the shell say cannot drift apart. Both binaries write them
//! with their hidden `assets` command when the Debian package is built.

use std::path::Path;

/// Writes into `dir` a man page for `cmd` and one for each of its subcommands
/// (`name-sub.1`), and bash, zsh and fish completions for the binary `name`.
pub fn write(cmd: clap::Command, name: &'static str, dir: &Path) -> std::io::Result<()> {
    let cmd = cmd.name(name);
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(cmd.clone(), dir)?;
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        clap_complete::generate_to(shell, &mut cmd.clone(), name, dir)?;
    }
    Ok(())
}
