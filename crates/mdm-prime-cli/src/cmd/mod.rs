//! One module per subcommand; each turns parsed arguments into library calls.

mod bench;
mod check;
mod eval;
mod fid;
mod genppl;
mod image;
mod import;
mod impute;
mod isr;
mod run;
mod sample;
mod subtokens;
mod sweep_report;
mod train;

use crate::args::{Cli, Command};

/// Dispatches a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Train(args) => train::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Sample(args) => sample::run(args),
        Command::Import(args) => import::run(args),
        Command::Impute(args) => impute::run(args),
        Command::Isr(args) => isr::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Subtokens(args) => subtokens::run(args),
        Command::CheckDevice(args) => check::run(args),
        Command::Fid(args) => fid::run(args),
        Command::SweepReport(args) => sweep_report::run(args),
        Command::Genppl(args) => genppl::run(args),
    }
}
