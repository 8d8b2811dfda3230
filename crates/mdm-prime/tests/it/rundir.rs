//! One writer per run directory: a second trainer on the same directory is refused while the
//! first lives, and the lock goes with the process (here: with the first trainer's file handle).

use burn::tensor::Device;
use mdm_prime::checkpoint::RunDir;
use mdm_prime::train::Trainer;

use crate::common::{rng_lock, temp_dir, tiny_config, tiny_data};

#[test]
fn a_second_writer_is_refused_until_the_first_is_gone() {
    let _guard = rng_lock();
    let cfg = tiny_config(&[]);
    let data = tiny_data(&cfg);
    let d = Device::default();
    let dir = temp_dir("lock");
    let mut a = Trainer::open(&cfg, RunDir::new(&dir), false, &d).unwrap();
    a.step(&data).unwrap();
    // Before the first checkpoint: the lock is what stops a second new run.
    let e = Trainer::open(&cfg, RunDir::new(&dir), false, &d)
        .err()
        .expect("a second writer was accepted")
        .to_string();
    assert!(e.contains("another process") && e.contains("pid"), "{e}");
    a.save().unwrap();
    let e = Trainer::open(&cfg, RunDir::new(&dir), true, &d)
        .err()
        .expect("a second resume was accepted")
        .to_string();
    assert!(e.contains("another process"), "{e}");
    drop(a); // what a crash does to the lock: the file handle goes away with the process
    let mut b = Trainer::open(&cfg, RunDir::new(&dir), true, &d).unwrap();
    assert_eq!(b.state.step, 1);
    b.step(&data).unwrap();
    let _ = std::fs::remove_dir_all(dir);
}
