//! Command-line arguments. Doc comments are the help text.

use clap::{Args, Parser, Subcommand};

/// MDM-Prime: masked diffusion language models with partial masking.
#[derive(Debug, Parser)]
#[command(name = "mdm-prime", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a model (default: the CPU preset on the embedded Moby-Dick corpus).
    Train(TrainArgs),
    /// Measure a trained model: the valid bound (elbo) as nats/token, bits/token and perplexity.
    Eval(EvalArgs),
    /// Show how token ids (or the tokens of a text) are written as ℓ base-b sub-tokens.
    Subtokens(SubtokensArgs),
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// A TOML preset (default: the built-in configs/cpu.toml; with --resume, the run's own config).
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// Override any config key: --set train.lr=1e-3 --set prime.ell=4 (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Run name (sets `name`); the run directory is runs/<name>.
    #[arg(long)]
    pub name: Option<String>,
    /// Run directory (default: runs/<name>).
    #[arg(long)]
    pub run_dir: Option<std::path::PathBuf>,
    /// Continue the run in the run directory exactly where its checkpoint left it.
    #[arg(long)]
    pub resume: bool,
    /// Shorthand for --set train.steps=N.
    #[arg(long)]
    pub steps: Option<u64>,
    /// Shorthand for --set seed=S.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Shorthand for --set data.source=…: moby-dick, a .txt file, a folder of .txt files, a .jsonl file.
    #[arg(long)]
    pub data: Option<String>,
    /// No progress bar (log lines instead).
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The run directory (holds config.toml and ema.safetensors).
    #[arg(long)]
    pub run: std::path::PathBuf,
    /// Evaluate on this corpus (all of it) instead of the run's validation split.
    #[arg(long)]
    pub data: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Override eval keys only: --set eval.time_draws=8 --set eval.max_sequences=100.
    #[arg(long = "set", value_name = "eval.KEY=VALUE")]
    pub overrides: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SubtokensArgs {
    /// Vocabulary size V (default: the tokenizer's, 50257 for gpt2, 256 for bytes).
    #[arg(long)]
    pub vocab: Option<u32>,
    /// Sub-tokens per token ℓ (1 = plain MDLM).
    #[arg(long)]
    pub ell: usize,
    /// Comma-separated token ids, e.g. `50256,198,0`.
    #[arg(long, value_delimiter = ',', conflicts_with = "text")]
    pub ids: Vec<u32>,
    /// A text to tokenize (needs --tokenizer).
    #[arg(long, requires = "tokenizer")]
    pub text: Option<String>,
    /// Tokenizer: `gpt2` (GPT-2 BPE, r50k_base) or `bytes`.
    #[arg(long)]
    pub tokenizer: Option<String>,
}
