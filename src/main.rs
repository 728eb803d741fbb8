//! vaultdisk: parse args, set up logging, run one verb, print one error line, exit.
use std::io::{IsTerminal, Write};
use vaultdisk::escape::escape_control;

fn init_logging(verbose: bool, quiet: bool) {
    let default = if quiet {
        "error"
    } else if verbose {
        "info"
    } else {
        "warn"
    };
    let filters = std::env::var("RUST_LOG").unwrap_or_else(|_| default.to_string());
    env_logger::Builder::new()
        .parse_filters(&filters)
        // The HTTP and TLS stacks dump request headers and bodies at debug/trace level: that
        // would print the vault token and unwrapped secrets. They never log below warn.
        .filter_module("ureq", log::LevelFilter::Warn)
        .filter_module("ureq_proto", log::LevelFilter::Warn)
        .filter_module("rustls", log::LevelFilter::Warn)
        // The FAT driver reading a BEK VOLUME warns about images it reads fine (FAT32's 32
        // reserved sectors); what matters reaches the user as keychain's one-line error.
        .filter_module("fatfs", log::LevelFilter::Off)
        // "Trying keyslot N (its KDF takes about 40 s)": a progress line for a person at a
        // terminal, never in a pipe or a log file.
        .filter_module(
            vaultdisk::crypto::kdf::budget::PROGRESS_TARGET,
            if !quiet && std::io::stderr().is_terminal() {
                log::LevelFilter::Info
            } else {
                log::LevelFilter::Warn
            },
        )
        // Messages carry file names and header strings: escaped, a log record stays one line.
        .format(|buf, record| {
            let text = record.args().to_string();
            let text = escape_control(&text);
            match record.level() {
                log::Level::Error | log::Level::Warn => writeln!(
                    buf,
                    "vaultdisk: {}: {}",
                    record.level().as_str().to_lowercase(),
                    text
                ),
                _ => writeln!(buf, "vaultdisk: {text}"),
            }
        })
        .init();
}

/// Prints the one error line; control characters in it (from file names, header strings)
/// are escaped so that it stays one line and never drives the terminal.
fn print_error(e: &vaultdisk::error::Error) {
    eprintln!("vaultdisk: {}", escape_control(&e.to_string()));
}

fn main() {
    let code = match vaultdisk::cli::parse_args() {
        Ok(None) => 0,
        Ok(Some(cli)) => {
            init_logging(cli.verbose, cli.quiet);
            match vaultdisk::cli::run(cli) {
                Ok(code) => code,
                Err(e) => {
                    print_error(&e);
                    e.exit_code()
                }
            }
        }
        Err(e) => {
            print_error(&e);
            e.exit_code()
        }
    };
    std::process::exit(code);
}
