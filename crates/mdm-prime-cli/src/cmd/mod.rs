//! One module per subcommand; each turns parsed arguments into library calls.

mod subtokens;

use crate::args::{Cli, Command};

/// Dispatches a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Subtokens(args) => subtokens::run(args),
    }
}
