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

/// Deterministic pseudo-random values in about [−scale, scale].
pub fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// `|fused − reference| ≤ 1e-5·|reference| + 1e-6·max|reference|` (the floor covers entries
/// that are sums with cancellation, where the two summation orders differ by rounding).
pub fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(0.0f32, |m, w| m.max(w.abs()));
    for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = 1e-5 * w.abs() + 1e-6 * scale;
        assert!(
            (g - w).abs() <= tol,
            "{what}[{k}]: fused {g} vs reference {w} (|diff| {} > {tol})",
            (g - w).abs()
        );
    }
}

/// Median wall-clock milliseconds of `f` over `n` runs after one warm-up.
pub fn median_ms(n: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..n)
        .map(|_| {
            let s = std::time::Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[n / 2]
}
