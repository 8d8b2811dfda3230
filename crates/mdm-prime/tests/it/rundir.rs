//! One writer per run directory: a second trainer on the same directory is refused while the
//! first lives, and the lock goes with the process (here: with the first trainer's file handle);
//! a checkpoint half installed by a crashed writer is completed by the next one.

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

/// A checkpoint whose installation a crash interrupted (journal written, two of three renames
/// done) is completed by `recover`; temporaries no journal claims are removed; other files and
/// names outside the directory are never touched.
#[test]
fn recover_completes_an_interrupted_checkpoint() {
    use mdm_prime::checkpoint::{JOURNAL, Recovery, recover};
    let dir = temp_dir("recover");
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    // Renamed before the crash: model (new), ema (new). Still a temporary: state.
    write("model.safetensors", "new model");
    write("ema.safetensors", "new ema");
    write("state.json", "old state");
    write("state.json.41.2.tmp", "new state");
    write("optim.safetensors.40.7.tmp", "an older writer's leftover");
    write("notes.txt.1.2.tmp", "the user's, not ours");
    let journal = r#"{"renames":[["model.safetensors.41.0.tmp","model.safetensors"],
        ["ema.safetensors.41.1.tmp","ema.safetensors"],["state.json.41.2.tmp","state.json"]]}"#;
    write(JOURNAL, journal);
    let done = recover(&dir).unwrap();
    assert_eq!(
        done,
        Recovery {
            completed_renames: 1,
            removed_temps: 1
        }
    );
    assert_eq!(read("state.json"), "new state");
    assert_eq!(read("model.safetensors"), "new model");
    assert!(!dir.join(JOURNAL).exists());
    assert!(!dir.join("optim.safetensors.40.7.tmp").exists());
    assert_eq!(read("notes.txt.1.2.tmp"), "the user's, not ours");
    // Nothing left to do the second time.
    assert_eq!(recover(&dir).unwrap(), Recovery::default());
    // A journal naming a path outside the directory is refused, not followed.
    write(JOURNAL, r#"{"renames":[["../x.tmp","state.json"]]}"#);
    let e = recover(&dir).unwrap_err().to_string();
    assert!(e.contains("outside the run directory"), "{e}");
    write(JOURNAL, "{\"renames\":");
    let e = recover(&dir).unwrap_err().to_string();
    assert!(e.contains("unreadable checkpoint journal"), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}
