//! vaultdisk: parse args, set up logging, run one verb, print one error line, exit.
use std::io::Write;

fn init_logging(verbose: bool, quiet: bool) {
    let default = if quiet {
        "error"
    } else if verbose {
        "info"
    } else {
        "warn"
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default))
        .format(|buf, record| match record.level() {
            log::Level::Error | log::Level::Warn => writeln!(
                buf,
                "vaultdisk: {}: {}",
                record.level().as_str().to_lowercase(),
                record.args()
            ),
            _ => writeln!(buf, "vaultdisk: {}", record.args()),
        })
        .init();
}

fn main() {
    let code = match vaultdisk::cli::parse_args() {
        Ok(None) => 0,
        Ok(Some(cli)) => {
            init_logging(cli.verbose, cli.quiet);
            match vaultdisk::cli::run(cli) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("vaultdisk: {e}");
                    e.exit_code()
                }
            }
        }
        Err(e) => {
            eprintln!("vaultdisk: {e}");
            e.exit_code()
        }
    };
    std::process::exit(code);
}
