//! Numerical faults: a non-finite loss or gradient skips the step (no update, counted, logged);
//! too many in a row stop the run with a message naming the step and the last good checkpoint.

use std::sync::atomic::AtomicBool;

use burn::tensor::Device;
use mdm_prime::checkpoint::RunDir;
use mdm_prime::params::{map_params, named_params};
use mdm_prime::train::{self, Trainer};

use crate::common::{rng_lock, temp_dir, tiny_config, tiny_data};

fn bits(tr: &Trainer) -> Vec<(String, Vec<u32>)> {
    named_params(&tr.model)
        .into_iter()
        .chain(named_params(&tr.ema))
        .map(|p| {
            let v: Vec<f32> = p.value.try_into_vec_as().unwrap();
            (p.path, v.iter().map(|x| x.to_bits()).collect())
        })
        .collect()
}

/// Puts a NaN into one weight of the model (what an overflow leaves behind), or takes it out.
fn poison(tr: &mut Trainer, value: Option<Vec<f32>>) -> Vec<f32> {
    let mut old = Vec::new();
    let model = tr.model.clone();
    tr.model = map_params(model, &mut |path, t| {
        (path == "head.bias").then(|| {
            old = t.clone().try_into_vec_as().unwrap();
            let n = old.len();
            let new = value.clone().unwrap_or_else(|| vec![f32::NAN; n]);
            burn::tensor::Tensor::from_data(burn::tensor::TensorData::new(new, [n]), &t.device())
        })
    });
    old
}

#[test]
fn a_bad_step_is_skipped_and_counted_and_training_goes_on() {
    let _guard = rng_lock();
    let cfg = tiny_config(&[]);
    let data = tiny_data(&cfg);
    let dir = temp_dir("nan-skip");
    let mut tr = Trainer::open(&cfg, RunDir::new(&dir), false, &Device::default()).unwrap();
    tr.step(&data).unwrap();
    let good = poison(&mut tr, None);
    let before = bits(&tr);
    let optim_step = tr.optim.step;
    let (loss, norm, _) = tr.step(&data).unwrap();
    assert!(!loss.is_finite() || !norm.is_finite());
    assert_eq!(
        bits(&tr),
        before,
        "a skipped step changed the weights or the EMA"
    );
    assert_eq!(
        tr.optim.step, optim_step,
        "a skipped step moved the optimiser"
    );
    assert_eq!((tr.state.step, tr.state.skipped_steps), (2, 1));
    poison(&mut tr, Some(good));
    let (loss, norm, _) = tr.step(&data).unwrap();
    assert!(loss.is_finite() && norm.is_finite());
    // Saved and resumed, the count stays consistent with the optimiser's step.
    tr.save().unwrap();
    drop(tr);
    let tr = Trainer::open(&cfg, RunDir::new(&dir), true, &Device::default()).unwrap();
    assert_eq!(
        (tr.state.step, tr.state.skipped_steps, tr.optim.step),
        (3, 1, 2)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn too_many_bad_steps_stop_the_run_naming_the_step_and_checkpoint() {
    let _guard = rng_lock();
    let cfg = tiny_config(&[
        "train.max_bad_steps=3",
        "train.steps=20",
        "train.checkpoint_every=2",
    ]);
    let data = tiny_data(&cfg);
    let dir = temp_dir("nan-stop");
    let mut tr = Trainer::open(&cfg, RunDir::new(&dir), false, &Device::default()).unwrap();
    for _ in 0..2 {
        tr.step(&data).unwrap();
    }
    tr.save().unwrap();
    poison(&mut tr, None);
    let stop = AtomicBool::new(false);
    let e = train::run(&mut tr, &data, &stop, &mut |_| {})
        .expect_err("a run of NaN steps did not stop")
        .to_string();
    assert!(
        e.contains("stopped at step 5") && e.contains("3 consecutive"),
        "{e}"
    );
    assert!(e.contains("last good checkpoint is step 2"), "{e}");
    let metrics = std::fs::read_to_string(RunDir::new(&dir).metrics()).unwrap();
    assert_eq!(metrics.matches("\"skipped\":true").count(), 3, "{metrics}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_flipped_byte_in_a_checkpoint_is_detected_on_load() {
    let _guard = rng_lock();
    let cfg = tiny_config(&[]);
    let data = tiny_data(&cfg);
    let dir = temp_dir("flip");
    let run = RunDir::new(&dir);
    let mut tr = Trainer::open(&cfg, run.clone(), false, &Device::default()).unwrap();
    tr.step(&data).unwrap();
    tr.save().unwrap();
    drop(tr);
    let (_, meta) = mdm_prime::checkpoint::read_safetensors(&run.model()).unwrap();
    assert!(meta.contains_key("tensors_fnv1a64"));
    assert!(
        meta["config"].contains("[model]"),
        "the config rides with the weights"
    );
    for file in [run.model(), run.ema(), run.optim()] {
        let good = std::fs::read(&file).unwrap();
        let mut bad = good.clone();
        let k = bad.len() - 3; // inside the last tensor's data
        bad[k] ^= 0x10;
        std::fs::write(&file, &bad).unwrap();
        let e = Trainer::open(&cfg, run.clone(), true, &Device::default())
            .err()
            .expect("a corrupt checkpoint was loaded")
            .to_string();
        assert!(
            e.contains("checksum mismatch") && e.contains(&file.display().to_string()),
            "{e}"
        );
        std::fs::write(&file, &good).unwrap();
    }
    assert!(Trainer::open(&cfg, run, true, &Device::default()).is_ok());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_full_disk_keeps_the_last_checkpoint_and_retry_mode_trains_on() {
    use mdm_prime_core::fsutil::inject_write_failures;
    let _guard = rng_lock();
    let cfg = tiny_config(&[]);
    let data = tiny_data(&cfg);
    let dir = temp_dir("enospc");
    let run = RunDir::new(&dir);
    let mut tr = Trainer::open(&cfg, run.clone(), false, &Device::default()).unwrap();
    tr.step(&data).unwrap();
    tr.save().unwrap();
    let saved: Vec<Vec<u8>> = [run.model(), run.ema(), run.optim(), run.state()]
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    tr.step(&data).unwrap();
    // Each of the four files of the new checkpoint fails in turn, then the journal that commits
    // them: none of the new files may replace an old one, and no temporary file stays behind.
    for pass in 0..5 {
        inject_write_failures(pass, 1);
        let e = tr
            .save()
            .expect_err("the injected failure did not fail the save");
        inject_write_failures(0, 0);
        let e = e.to_string();
        assert!(e.contains("No space left on device"), "{e}");
        let now: Vec<Vec<u8>> = [run.model(), run.ema(), run.optim(), run.state()]
            .iter()
            .map(|p| std::fs::read(p).unwrap())
            .collect();
        assert!(
            now == saved,
            "a failed save (file {pass}) changed the checkpoint"
        );
        let leftovers = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .count();
        assert_eq!(leftovers, 0, "temporary files left behind");
    }
    drop(tr);
    let resumed = Trainer::open(&cfg, run.clone(), true, &Device::default()).unwrap();
    assert_eq!(resumed.state.step, 1, "the previous checkpoint loads");
    drop(resumed);
    let _ = std::fs::remove_dir_all(&dir);

    // Retry mode: a failed checkpoint write is logged and training goes on.
    let cfg = tiny_config(&[
        "train.on_write_error=retry",
        "train.checkpoint_every=2",
        "train.steps=6",
    ]);
    let dir = temp_dir("enospc-retry");
    let mut tr = Trainer::open(&cfg, RunDir::new(&dir), false, &Device::default()).unwrap();
    tr.step(&data).unwrap();
    inject_write_failures(0, 1); // the checkpoint at step 2
    let stop = AtomicBool::new(false);
    let mut failed = Vec::new();
    let out = train::run(&mut tr, &data, &stop, &mut |ev| {
        if let train::TrainEvent::WriteFailed { step, .. } = ev {
            failed.push(*step);
        }
    })
    .unwrap();
    inject_write_failures(0, 0);
    assert_eq!(out.step, 6);
    assert_eq!(failed, vec![2]);
    assert_eq!(RunDir::new(&dir).read_state().unwrap().step, 6);
    let metrics = std::fs::read_to_string(RunDir::new(&dir).metrics()).unwrap();
    assert!(metrics.contains("write_error"), "{metrics}");
    let _ = std::fs::remove_dir_all(dir);
}
