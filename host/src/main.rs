//! The `hubget` command: parses the command line, sets up logging (env_logger on stderr,
//! `RUST_LOG` or `-v`), runs the command and turns errors into a message, a hint and a
//! documented exit code (see [`hubget::error`]). Log records and the error message pass through
//! [`hubget::redact::redact_registered`], so the token and signed URL queries never show.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use hubget::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, hubget::cli::Command::PluginHelper) {
        // Its own logger: records go to the host over the pipe.
        return hubget::commands::plugin_helper::run();
    }
    init_logging(cli.verbose);
    match hubget::commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let mut err = std::io::stderr().lock();
            let message = hubget::redact::redact_registered(&error.to_string()).into_owned();
            let _ = writeln!(err, "error: {message}");
            if let Some(hint) = error.hint() {
                let _ = writeln!(err, "hint: {hint}");
            }
            ExitCode::from(error.exit_code())
        }
    }
}

/// `-v` (info), `-vv` (debug), `-vvv` (trace) win over `RUST_LOG`; the default is `warn`.
fn init_logging(verbose: u8) {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(log::LevelFilter::Warn);
    match verbose {
        0 => {
            if let Ok(filters) = std::env::var("RUST_LOG") {
                builder.parse_filters(&filters);
            }
        }
        1 => {
            builder.filter_level(log::LevelFilter::Info);
        }
        2 => {
            builder.filter_level(log::LevelFilter::Debug);
        }
        _ => {
            builder.filter_level(log::LevelFilter::Trace);
        }
    }
    // Every record passes through redaction: URL query strings (signed URLs) and the token.
    builder.format(|buf, record| {
        let message = record.args().to_string();
        let message = hubget::redact::redact_registered(&message);
        let style = buf.default_level_style(record.level());
        writeln!(
            buf,
            "[{} {style}{:<5}{style:#} {}] {message}",
            buf.timestamp(),
            record.level(),
            record.target()
        )
    });
    // Through the output module so that log lines print above the progress bars.
    builder
        .target(env_logger::Target::Pipe(Box::new(
            hubget::output::LogWriter,
        )))
        .init();
}
