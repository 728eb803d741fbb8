//! `vaultdisk completions SHELL` and the hidden `vaultdisk __man DIR`: shell completion scripts
//! and man pages generated from the clap definitions in this module's parent, so that neither
//! can drift from the verbs and flags the binary really has.
use super::{Cli, CompletionsArgs, ManArgs, output};
use crate::error::{Error, Result};
use clap::CommandFactory;
use std::path::Path;

/// The name man pages and completions are generated for.
const BIN: &str = "vaultdisk";

/// The section of every page: system administration (as cryptsetup(8)).
const SECTION: &str = "8";

/// `vaultdisk completions SHELL`: the completion script on stdout.
pub fn completions(args: &CompletionsArgs) -> Result<()> {
    let mut cmd = without_hidden_verbs(Cli::command());
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, BIN, &mut script);
    let text = String::from_utf8_lossy(&script);
    output::emit(text.trim_end_matches('\n'))
}

/// The command tree less its hidden verbs (`__daemon`, `__man`), which clap_complete would
/// otherwise offer: clap cannot remove a subcommand, so the root is rebuilt from its parts.
fn without_hidden_verbs(full: clap::Command) -> clap::Command {
    let mut cmd = clap::Command::new(BIN)
        .version(env!("CARGO_PKG_VERSION"))
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    if let Some(about) = full.get_about() {
        cmd = cmd.about(about.clone());
    }
    cmd
}

/// `vaultdisk __man DIR`: writes vaultdisk.8 and one page per visible verb and sub-verb
/// (vaultdisk-open.8, vaultdisk-vault-enroll.8, ...) into DIR, which must exist. Prints the
/// paths written, one a line.
pub fn man(args: &ManArgs) -> Result<()> {
    if !args.dir.is_dir() {
        return Err(Error::Usage(format!(
            "{} is not a directory (create it first)",
            args.dir.display()
        )));
    }
    let mut cmd = Cli::command().disable_help_subcommand(true);
    // Building the tree names each subcommand's page after its path: "vaultdisk-vault-enroll".
    cmd.build();
    let mut written = Vec::new();
    write_pages(&cmd, &args.dir, &mut written)?;
    output::emit(&written.join("\n"))
}

fn write_pages(cmd: &clap::Command, dir: &Path, written: &mut Vec<String>) -> Result<()> {
    let man = clap_mangen::Man::new(cmd.clone())
        .section(SECTION)
        .manual("vaultdisk manual");
    let path = dir.join(man.get_filename());
    let mut page = Vec::new();
    man.render(&mut page)
        .map_err(|e| Error::io("cannot render a man page", e))?;
    std::fs::write(&path, page)
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
    written.push(path.display().to_string());
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        write_pages(sub, dir, written)?;
    }
    Ok(())
}
