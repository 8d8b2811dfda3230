//! Kill -9 at any moment: a small training run is killed with SIGKILL again and again — at
//! random times (start-up, steps, checkpoints, the final evaluation) and at the exact points of a
//! multi-file write that a random kill rarely hits (between the token cache's temporary and its
//! rename; after a checkpoint's temporaries, after its journal, between its renames, after its
//! renames) — and resumed each time. Checked after every kill: each file in the run directory
//! loads (complete safetensors with a valid checksum, a parseable state file); the resumed run
//! starts from a checkpoint at most one `checkpoint_every` behind the last step the killed run
//! logged; and at the end, the weights equal those of an uninterrupted run bit for bit.
//!
//! Short form (CI): a few kills of each kind. Long form (docs/reliability.md):
//! `MDM_PRIME_KILL9_ROUNDS=60 cargo test --release -p mdm-prime-cli --test kill9 -- --nocapture`.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};

const STEPS: u64 = 200;
const CHECKPOINT_EVERY: u64 = 10;

/// Exact-moment crash points (`MDM_PRIME_CRASH_AT`, see `mdm_prime_core::fsutil::crash_point`).
const POINTS: [&str; 6] = [
    "cache:written",
    "checkpoint:temps",
    "checkpoint:journal",
    "checkpoint:renaming",
    "checkpoint:renamed",
    // After loss.png's temporary is written, before its rename (a random kill once left one).
    "plot:temp",
];

fn train(run: &Path, cache: &Path, resume: bool, crash_at: Option<&str>, log: &Path) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mdm-prime"));
    cmd.args(["train", "--run-dir", run.to_str().unwrap(), "--quiet"]);
    let cache_dir = format!("data.cache_dir=\"{}\"", cache.display());
    let steps = format!("train.steps={STEPS}");
    let every = format!("train.checkpoint_every={CHECKPOINT_EVERY}");
    for set in [
        "model.d_model=32",
        "model.n_layers=2",
        "model.n_heads=2",
        "data.seq_len=32",
        "train.batch_size=8",
        "train.log_every=1",
        "train.eval_every=0",
        "train.eval_sequences=4",
        "eval.max_sequences=4",
        "seed=7",
        &cache_dir,
        &steps,
        &every,
    ] {
        cmd.args(["--set", set]);
    }
    if resume {
        cmd.arg("--resume");
    }
    use mdm_prime::core::fsutil::CRASH_ENV;
    cmd.env_remove(CRASH_ENV);
    if let Some(point) = crash_at {
        cmd.env(CRASH_ENV, point);
    }
    let log = std::fs::File::create(log).unwrap();
    cmd.stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("binary starts")
}

/// Name → (shape, values), sorted by name.
type Tensors = Vec<(String, (Vec<usize>, Vec<f32>))>;

/// The tensors of a safetensors file, by name. Panics (fails the test) when it does not load.
fn tensors(path: &Path) -> Tensors {
    let (t, _) = mdm_prime::checkpoint::read_safetensors(path)
        .unwrap_or_else(|e| panic!("{} does not load: {e}", path.display()));
    let mut t: Vec<_> = t.into_iter().collect();
    t.sort_by(|a, b| a.0.cmp(&b.0));
    t
}

/// Every checkpoint file present loads on its own (each is installed by an atomic rename).
fn check_files_load(run: &Path) {
    for f in ["model.safetensors", "ema.safetensors", "optim.safetensors"] {
        if run.join(f).exists() {
            tensors(&run.join(f));
        }
    }
    if let Ok(text) = std::fs::read_to_string(run.join("state.json")) {
        let v: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("state.json does not parse ({e}): {text:?}"));
        assert!(v["step"].as_u64().is_some(), "{text}");
    }
}

/// A finished run: at the last step, with the uninterrupted run's weights, EMA and optimiser
/// state bit for bit, and nothing half-written left behind.
fn check_same_as_reference(run: &Path, reference: &Path) {
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["step"], STEPS);
    for f in ["model.safetensors", "ema.safetensors", "optim.safetensors"] {
        assert!(
            tensors(&run.join(f)) == tensors(&reference.join(f)),
            "{f} differs from the uninterrupted run's"
        );
    }
    let leftovers: Vec<PathBuf> = std::fs::read_dir(run)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".tmp") || p.ends_with("checkpoint.journal"))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

/// The last training step the run logged in metrics.jsonl.
fn last_logged_step(run: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("loss").is_some())
        .filter_map(|v| v["step"].as_u64())
        .max()
}

/// "… parameters; resuming at step N" / "starting at step 0" in a train log.
fn start_step(log: &str) -> Option<u64> {
    log.lines().find_map(|l| {
        let rest = l
            .split_once("resuming at step ")
            .or_else(|| l.split_once("starting at step "))?
            .1;
        rest.trim().parse().ok()
    })
}

#[test]
fn killed_at_any_moment_resumes_exactly() {
    let rounds: usize = std::env::var("MDM_PRIME_KILL9_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let seed: u64 = std::env::var("MDM_PRIME_KILL9_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let dir = std::env::temp_dir().join(format!("mdm-prime-kill9-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cache = dir.join("cache");
    let log = dir.join("train.log");

    // The uninterrupted run: the weights to reproduce, and how long a whole run takes.
    let reference = dir.join("reference");
    let t0 = Instant::now();
    let status = train(&reference, &cache, false, None, &log).wait().unwrap();
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    let whole_run = t0.elapsed();

    let run = dir.join("run");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut max_lost = 0;
    let mut repaired = 0;
    let mut kills = 0;
    let mut launches = 0;
    let mut finished = 0;
    loop {
        let resume = run.join("state.json").exists() || run.join("checkpoint.journal").exists();
        // Half the kills at a random moment, half at an exact crash point; after `rounds`
        // kills, the run is left to finish.
        let (crash_at, kill_after) = match kills < rounds {
            false => (None, None),
            true if kills % 2 == 0 => {
                let point = POINTS[(kills / 2) % POINTS.len()];
                if point == "cache:written" {
                    let _ = std::fs::remove_dir_all(&cache);
                }
                let at = match point {
                    "cache:written" => point.to_string(),
                    _ => format!("{point}@{}", rng.random_range(1..=3)),
                };
                (Some(at), None)
            }
            true => {
                let frac: f64 = rng.random_range(0.0..1.2);
                (None, Some(whole_run.mul_f64(frac)))
            }
        };
        launches += 1;
        let before = last_logged_step(&run);
        let mut child = train(&run, &cache, resume, crash_at.as_deref(), &log);
        let t = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if kill_after.is_some_and(|d| t.elapsed() >= d) {
                child.kill().unwrap(); // SIGKILL
                break child.wait().unwrap();
            }
            assert!(
                t.elapsed() < whole_run * 20 + Duration::from_secs(60),
                "a launch hangs"
            );
            std::thread::sleep(Duration::from_millis(2));
        };
        let text = std::fs::read_to_string(&log).unwrap();
        if text.contains("completed a checkpoint that a crash interrupted") {
            repaired += 1;
        }
        // Lost work: from the last step the previous (killed) launch logged back to where this
        // one resumed.
        if let (Some(logged), Some(start)) = (before, start_step(&text)) {
            assert!(
                start <= logged && logged - start <= CHECKPOINT_EVERY,
                "resumed at step {start} after step {logged} was logged: more than one \
                 checkpoint interval ({CHECKPOINT_EVERY}) lost\n{text}"
            );
            max_lost = max_lost.max(logged - start);
        }
        if status.success() {
            // A run finished: its weights must be the uninterrupted run's. Then, while kills
            // are left, start another run from scratch.
            check_same_as_reference(&run, &reference);
            finished += 1;
            if kills >= rounds {
                break;
            }
            std::fs::remove_dir_all(&run).unwrap();
            continue;
        }
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "not killed but failed:\n{text}");
        kills += 1;
        let kind = match &crash_at {
            Some(at) => at.split('@').next().unwrap().to_string(),
            None => "random moment".to_string(),
        };
        *counts.entry(kind).or_default() += 1;
        check_files_load(&run);
        assert!(launches < rounds * 4 + 20, "too many launches");
    }

    assert!(finished >= 1);
    // A kill after the journal and before its removal (the `checkpoint:journal` and
    // `checkpoint:renaming` points) leaves renames to do: the next launch must have done them.
    if counts.contains_key("checkpoint:journal") || counts.contains_key("checkpoint:renaming") {
        assert!(
            repaired >= 1,
            "no launch completed an interrupted checkpoint"
        );
    }
    eprintln!(
        "kill9 summary: {kills} kills ({counts:?}), {launches} launches, {finished} runs \
         finished, each with the uninterrupted run's weights, {repaired} interrupted \
         checkpoints completed on resume, at most {max_lost} steps lost (checkpoint_every = \
         {CHECKPOINT_EVERY}); whole run {:.1} s",
        whole_run.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
