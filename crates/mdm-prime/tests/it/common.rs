//! Shared fixtures: a tiny config and the embedded corpus cut into short blocks.

use mdm_prime_core::Tokenizer;
use mdm_prime_core::config::RunConfig;
use mdm_prime_core::data::{CorpusSource, Dataset, load_dataset};

/// A config small enough for a test: bytes, ℓ = 2, D = 32, 2 layers, L = 16, batch 4.
pub fn tiny_config(overrides: &[&str]) -> RunConfig {
    let mut o: Vec<String> = [
        "model.d_model=32",
        "model.n_layers=2",
        "model.n_heads=2",
        "model.cond_dim=16",
        "model.mlp_ratio=2",
        "data.seq_len=16",
        "data.cache_dir=\"\"",
        "train.batch_size=4",
        "train.steps=6",
        "train.warmup_steps=2",
        "train.lr=1e-2",
        "train.eval_sequences=4",
        "train.checkpoint_every=100",
        "eval.time_draws=2",
        "eval.batch_size=4",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    o.extend(overrides.iter().map(|s| s.to_string()));
    RunConfig::from_toml_str("", "tiny", &o).unwrap()
}

/// The embedded corpus as blocks of the config's length.
pub fn tiny_data(cfg: &RunConfig) -> Dataset {
    let tok = Tokenizer::new(cfg.data.tokenizer).unwrap();
    load_dataset(&CorpusSource::Embedded, &tok, cfg.data.seq_len, 0.01, None).unwrap()
}

/// A fresh temporary directory (removed by the caller).
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("mdm-prime-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// burn-flex's random generator (initialisation, dropout) is one per process, so tests that
/// train and compare numbers take this lock to keep their draws from interleaving.
pub fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
