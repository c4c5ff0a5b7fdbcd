//! `zero2048`: the command-line face of 2048-Zero. Parses arguments, wires the crates together and
//! prints; the logic lives in the library crates.

mod args;
mod commands;
mod config;
mod logging;
mod players;
mod render;
mod storage;

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;

use crate::args::{Cli, Command};

/// Input the user can fix: reported on one line with exit code 2, like a usage error.
#[derive(Debug)]
pub struct BadInput(pub String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// An error with its own exit code (a worker refused by its server, say), reported on one line.
#[derive(Debug)]
pub struct Exit(pub u8, pub String);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

impl std::error::Error for Exit {}

/// Shorthand for returning a [`BadInput`].
pub fn bad_input(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(BadInput(message.into()))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return report_usage_error(error),
    };
    logging::init();
    let result = match cli.command {
        Command::Train(args) => commands::train::run(args),
        Command::Play(args) => commands::play::run(args),
        Command::Eval(args) => commands::eval::run(args),
        Command::Bench(args) => commands::bench::run(args),
        Command::Replay(args) => commands::replay::run(args),
        Command::Analyze(args) => commands::analyze::run(args),
        Command::Weights(args) => commands::weights::run(args),
        Command::Server(args) => commands::server::run(args),
        Command::Worker(args) => commands::worker::run(args),
        Command::Token(args) => commands::token::run(args),
        Command::Export(args) => commands::export::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.downcast_ref::<Exit>().is_some() => {
            let exit = error.downcast_ref::<Exit>().expect("checked");
            eprintln!("error: {}", exit.1);
            ExitCode::from(exit.0)
        }
        Err(error) => {
            // `{:#}` prints the context chain on one line: "reading x.game: No such file".
            let message = format!("{error:#}").replace('\n', " ");
            eprintln!("error: {message}");
            if error.chain().any(|cause| cause.is::<BadInput>()) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Help and version print as clap renders them; every other parse error becomes one line naming
/// the problem and the accepted values, with exit code 2.
fn report_usage_error(error: clap::Error) -> ExitCode {
    match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = error.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = error.print();
            ExitCode::from(2)
        }
        _ => {
            let text = error.render().to_string();
            let line = text
                .lines()
                .map(str::trim)
                .filter(|l| {
                    !l.is_empty() && !l.starts_with("For more information") && !l.starts_with("Usage:")
                })
                .collect::<Vec<_>>()
                .join("; ");
            // clap suggests a near spelling when there is one; otherwise point at the list.
            let lost = matches!(error.kind(), ErrorKind::UnknownArgument | ErrorKind::InvalidSubcommand);
            if lost && !line.contains("similar") {
                let command = std::env::args().nth(1).filter(|c| !c.starts_with('-'));
                let help = match command {
                    Some(c) if error.kind() == ErrorKind::UnknownArgument => format!("zero2048 {c} --help"),
                    _ => "zero2048 --help".to_string(),
                };
                eprintln!("{line}; `{help}` lists what is accepted");
            } else {
                eprintln!("{line}");
            }
            ExitCode::from(2)
        }
    }
}
