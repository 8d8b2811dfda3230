//! Exact resume: N steps straight equal k steps, stop, resume, N − k steps.

use burn::tensor::Device;
use mdm_prime::checkpoint::RunDir;
use mdm_prime::params::named_params;
use mdm_prime::train::Trainer;

use crate::common::{rng_lock, temp_dir, tiny_config, tiny_data};

fn weights(tr: &Trainer) -> Vec<(String, Vec<f32>)> {
    let mut all: Vec<(String, Vec<f32>)> = named_params(&tr.model)
        .into_iter()
        .chain(named_params(&tr.ema).into_iter().map(|mut p| {
            p.path = format!("ema.{}", p.path);
            p
        }))
        .map(|p| (p.path, p.value.try_into_vec_as().unwrap()))
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

/// For the DiT and for the autoregressive baseline (whose parameters live under `trunk.`).
#[test]
fn resume_continues_exactly() {
    let _guard = rng_lock();
    for (name, kind) in [
        ("dit", &[][..]),
        ("ar", &["model.kind=ar", "prime.ell=1"][..]),
    ] {
        let mut o = vec!["model.dropout=0.1", "train.grad_accum=2"];
        o.extend_from_slice(kind);
        resume_case(name, &tiny_config(&o));
    }
}

fn resume_case(name: &str, cfg: &mdm_prime_core::config::RunConfig) {
    let data = tiny_data(cfg);
    let d = Device::default();
    let (n, k) = (6, 2);

    let dir_a = temp_dir(&format!("straight-{name}"));
    let mut a = Trainer::open(cfg, RunDir::new(&dir_a), false, &d).unwrap();
    for _ in 0..n {
        a.step(&data).unwrap();
    }

    let dir_b = temp_dir(&format!("resumed-{name}"));
    let mut b = Trainer::open(cfg, RunDir::new(&dir_b), false, &d).unwrap();
    for _ in 0..k {
        b.step(&data).unwrap();
    }
    b.save().unwrap();
    drop(b);
    let mut b = Trainer::open(cfg, RunDir::new(&dir_b), true, &d).unwrap();
    assert_eq!(b.state.step, k as u64);
    // The binary that continued the run is on record beside the one that made it, from the
    // resumed run's first checkpoint on (a resume that never checkpoints leaves no line).
    let version = || std::fs::read_to_string(dir_b.join("version.txt")).unwrap();
    let code = mdm_prime::checkpoint::code_version();
    assert_eq!(version(), format!("{code}\n"));
    assert_eq!(b.state.code_version, code);
    for _ in k..n {
        b.step(&data).unwrap();
    }
    assert_eq!(b.state.step, n as u64);
    b.save().unwrap();
    b.save().unwrap();
    let resumed = format!("{code}\nresumed at step {k} by {code}\n");
    assert_eq!(
        version(),
        resumed,
        "one line per resume, not per checkpoint"
    );
    let (wa, wb) = (weights(&a), weights(&b));
    assert_eq!(wa.len(), wb.len());
    for ((pa, va), (pb, vb)) in wa.iter().zip(&wb) {
        assert_eq!(pa, pb);
        assert_eq!(va, vb, "{name}: {pa} differs after resume");
    }
    let _ = std::fs::remove_dir_all(&dir_a);
    let _ = std::fs::remove_dir_all(&dir_b);
}

#[test]
fn same_seed_same_numbers_other_seed_other_numbers() {
    let _guard = rng_lock();
    let d = Device::default();
    let run = |seed: &str, name: &str| {
        let cfg = tiny_config(&[&format!("seed={seed}")]);
        let data = tiny_data(&cfg);
        let dir = temp_dir(name);
        let mut t = Trainer::open(&cfg, RunDir::new(&dir), false, &d).unwrap();
        let losses: Vec<f64> = (0..3).map(|_| t.step(&data).unwrap().0).collect();
        let _ = std::fs::remove_dir_all(&dir);
        losses
    };
    assert_eq!(run("5", "s5a"), run("5", "s5b"));
    assert_ne!(run("5", "s5c"), run("6", "s6"));
}

/// Training inside rayon pools of 1, 2 and 5 threads gives the same weights to the bit. At
/// L = 256 with one sequence of 2 heads the attention backward splits each head's keys; that
/// split once followed the thread count (and with it the order of the dQ additions).
#[test]
fn same_seed_same_weights_on_any_thread_count() {
    let _guard = rng_lock();
    let cfg = tiny_config(&["data.seq_len=256", "train.batch_size=1"]);
    let data = tiny_data(&cfg);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let dir = temp_dir(&format!("threads-{threads}"));
            let d = Device::default();
            let mut t = Trainer::open(&cfg, RunDir::new(&dir), false, &d).unwrap();
            for _ in 0..3 {
                t.step(&data).unwrap();
            }
            let bits: Vec<(String, Vec<u32>)> = weights(&t)
                .into_iter()
                .map(|(name, w)| (name, w.iter().map(|x| x.to_bits()).collect()))
                .collect();
            let _ = std::fs::remove_dir_all(&dir);
            bits
        })
    };
    let one = run(1);
    for threads in [2, 5] {
        for ((name, a), (_, b)) in one.iter().zip(&run(threads)) {
            assert!(
                a == b,
                "{name} after 3 steps on {threads} threads differs from 1 thread"
            );
        }
    }
}

#[test]
fn refuses_to_overwrite_or_resume_an_incompatible_run() {
    let _guard = rng_lock();
    let d = Device::default();
    let cfg = tiny_config(&[]);
    let data = tiny_data(&cfg);
    let dir = temp_dir("incompatible");
    let mut t = Trainer::open(&cfg, RunDir::new(&dir), false, &d).unwrap();
    t.step(&data).unwrap();
    t.save().unwrap();
    drop(t); // (while it lives, its lock is what refuses a second trainer: rundir.rs)
    let before: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (p.clone(), std::fs::read(&p).unwrap())
        })
        .collect();

    let again = Trainer::open(&cfg, RunDir::new(&dir), false, &d)
        .err()
        .unwrap()
        .to_string();
    assert!(again.contains("--resume"), "{again}");
    let other = tiny_config(&["model.n_layers=3"]);
    let e = Trainer::open(&other, RunDir::new(&dir), true, &d)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("model.n_layers"), "{e}");
    let missing = temp_dir("no-such-run");
    let e = Trainer::open(&cfg, RunDir::new(&missing), true, &d)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("no checkpoint"), "{e}");

    // A truncated weights file is a clear error.
    let model = RunDir::new(&dir).model();
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&model, &bytes[..bytes.len() / 2]).unwrap();
    let e = Trainer::open(&cfg, RunDir::new(&dir), true, &d)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("truncated"), "{e}");
    std::fs::write(&model, &bytes).unwrap();

    // Nothing on disk changed.
    for (p, content) in before {
        assert_eq!(
            std::fs::read(&p).unwrap(),
            content,
            "{} changed",
            p.display()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
