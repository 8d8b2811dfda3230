//! Data-parallel arithmetic on the CPU: K replicas, each taking an equal shard of every batch,
//! with their mean losses averaged, take the same steps as one device taking the whole batch —
//! the same losses, gradient norms, weights and EMA, to float rounding (the sums run in another
//! order). The collective itself (NCCL) needs GPUs; this is the part that decides correctness.

use mdm_prime::checkpoint::RunDir;
use mdm_prime::params::named_params;
use mdm_prime::train::Trainer;

use crate::common::{rng_lock, temp_dir, tiny_config, tiny_data};

/// (losses, grad norms, every weight of the model and the EMA) after `steps` steps on
/// `devices` replicas of the CPU.
fn run(extra: &[&str], replicas: usize, steps: usize) -> (Vec<f64>, Vec<f64>, Vec<f32>) {
    let mut o = vec![
        "model.dropout=0",
        "train.batch_size=8",
        "train.antithetic=true",
    ];
    o.extend(extra);
    let cfg = tiny_config(&o);
    let data = tiny_data(&cfg);
    let dir = temp_dir(&format!("parallel-{replicas}-{}", extra.join("-")));
    let devices = vec![mdm_prime::device::cpu(); replicas];
    let mut tr = Trainer::open_parallel(&cfg, RunDir::new(&dir), false, &devices).unwrap();
    assert_eq!(tr.n_devices(), replicas);
    let (mut losses, mut norms) = (Vec::new(), Vec::new());
    for _ in 0..steps {
        let (loss, norm, _) = tr.step(&data).unwrap();
        losses.push(loss);
        norms.push(norm);
    }
    let weights = named_params(&tr.model)
        .into_iter()
        .chain(named_params(&tr.ema))
        .flat_map(|p| p.value.try_into_vec_as::<f32>().unwrap())
        .collect();
    let _ = std::fs::remove_dir_all(dir);
    (losses, norms, weights)
}

fn assert_close(what: &str, a: &[f64], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len());
    for (k, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * x.abs().max(1.0),
            "{what}[{k}]: {x} vs {y}"
        );
    }
}

#[test]
fn k_shards_take_the_same_steps_as_one_full_batch() {
    let _guard = rng_lock();
    for (extra, k) in [
        (vec![], 2),
        (vec![], 4),
        (vec!["train.grad_accum=2"], 2),
        (vec!["model.dropout=0", "prime.ell=1"], 2),
    ] {
        let one = run(&extra, 1, 3);
        let many = run(&extra, k, 3);
        let label = format!("{k} shards {extra:?}");
        assert_close(&format!("loss, {label}"), &one.0, &many.0, 1e-5);
        assert_close(&format!("grad norm, {label}"), &one.1, &many.1, 1e-5);
        let w1: Vec<f64> = one.2.iter().map(|&x| x as f64).collect();
        let wk: Vec<f64> = many.2.iter().map(|&x| x as f64).collect();
        assert_close(&format!("weights, {label}"), &w1, &wk, 1e-5);
        // Not vacuous: the steps moved the weights away from the initial ones.
        let start = run(&extra, 1, 0).2;
        assert!(start != one.2, "{label}: the weights did not change");
    }
}

#[test]
fn a_batch_that_does_not_split_over_the_devices_is_refused() {
    let _guard = rng_lock();
    let cfg = tiny_config(&["train.batch_size=6"]);
    let dir = temp_dir("parallel-refused");
    let devices = vec![mdm_prime::device::cpu(); 4];
    let e = Trainer::open_parallel(&cfg, RunDir::new(&dir), false, &devices)
        .err()
        .expect("6 sequences over 4 devices was accepted")
        .to_string();
    assert!(
        e.contains("train.batch_size") && e.contains("4 devices"),
        "{e}"
    );
    assert!(!dir.exists(), "nothing is written");
}

/// `[train] precision = "bf16"`: the same steps with the DiT's matmuls in bfloat16 (f32 master
/// weights) stay within 0.1 % of the f32 losses over a few steps on the CPU — and differ from them
/// (the bf16 path is taken).
#[test]
fn bf16_matmuls_track_the_f32_losses() {
    let _guard = rng_lock();
    let (f32_losses, _, _) = run(&[], 1, 4);
    let (bf16_losses, _, _) = run(&["train.precision=\"bf16\""], 1, 4);
    let rel: Vec<f64> = f32_losses
        .iter()
        .zip(&bf16_losses)
        .map(|(a, b)| (a - b).abs() / a.abs())
        .collect();
    eprintln!("bf16 vs f32, relative loss differences: {rel:?}");
    assert!(
        rel.iter().all(|&r| r <= 1e-3),
        "relative differences {rel:?}"
    );
    assert!(
        rel.iter().any(|&r| r > 0.0),
        "bf16 changed nothing: {rel:?}"
    );
}

/// `[train] gradient_checkpointing = true` recomputes activations in the backward pass: the
/// same losses and the same weights as keeping them (to float rounding: the recomputation's
/// sums may run in another order).
#[test]
fn gradient_checkpointing_changes_no_number() {
    let _guard = rng_lock();
    let kept = run(&[], 1, 3);
    let recomputed = run(&["train.gradient_checkpointing=true"], 1, 3);
    assert_close("loss", &kept.0, &recomputed.0, 1e-6);
    let a: Vec<f64> = kept.2.iter().map(|&x| x as f64).collect();
    let b: Vec<f64> = recomputed.2.iter().map(|&x| x as f64).collect();
    assert_close("weights", &a, &b, 1e-5);
}
