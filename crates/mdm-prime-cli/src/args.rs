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
    /// Show how token ids (or the tokens of a text) are written as ℓ base-b sub-tokens.
    Subtokens(SubtokensArgs),
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
