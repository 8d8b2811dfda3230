//! `mdm-prime import`: an official MDM-Prime checkpoint, read by
//! [`mdm_prime_core::import::read_official`], written as an ordinary run directory (docs/import.md).
//!
//! The network the imported config describes is built, and every one of its parameters is set
//! from the tensor of the same path and shape; a parameter the checkpoint does not supply, a
//! tensor the network has no place for, or a shape that differs is an error naming it. The run
//! directory then holds what `train` writes (config.toml, version.txt, model / EMA / optimiser
//! safetensors, state.json) plus `import.json` (where the weights came from), so `eval`,
//! `sample` and `train --resume` treat it as a native run. Fine-tuning starts a fresh AdamW (the
//! official optimiser state is not imported) at step 0.

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use mdm_prime_core::import::{Imported, NamedTensor, Progress};

use crate::checkpoint::{self, RunDir, code_version};
use crate::model::{Denoiser, Network};
use crate::optim::AdamW;
use crate::params::{map_params, named_params};
use crate::{Error, Result};

/// The network of `imported.config` with `tensors` as its parameters. Every parameter must be
/// supplied with its shape, and every tensor used.
pub fn build(imported: &Imported, tensors: &[NamedTensor], device: &Device) -> Result<Network> {
    let cfg = &imported.config;
    let net = Network::init(cfg, &cfg.codec()?, device)?;
    let by_name: HashMap<&str, &NamedTensor> =
        tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut problems = Vec::new();
    let expected = named_params(&net);
    for p in &expected {
        match by_name.get(p.path.as_str()) {
            None => problems.push(format!("the checkpoint supplies no `{}`", p.path)),
            Some(t) if t.shape != p.shape => problems.push(format!(
                "`{}` is {:?} in the checkpoint, {:?} in the network",
                p.path, t.shape, p.shape
            )),
            Some(_) => {}
        }
    }
    let known: std::collections::HashSet<&str> = expected.iter().map(|p| p.path.as_str()).collect();
    problems.extend(
        tensors
            .iter()
            .filter(|t| !known.contains(t.name.as_str()))
            .map(|t| format!("the network has no parameter `{}`", t.name)),
    );
    if !problems.is_empty() {
        return Err(Error::checkpoint(
            "<import>",
            format!(
                "the imported tensors do not fit the network their config describes: {}",
                problems.join("; ")
            ),
        ));
    }
    Ok(map_params(net, &mut |path, current| {
        let t = by_name.get(path)?;
        Some(Tensor::from_data(
            TensorData::new(t.values.clone(), [t.values.len()]),
            &current.device(),
        ))
    }))
}

/// Writes `imported` as the run directory `dir` (which must not hold a run). `source` is the
/// checkpoint's path, recorded in `import.json`.
pub fn write_run(imported: &Imported, source: &Path, dir: &Path, device: &Device) -> Result<()> {
    let run = RunDir::new(dir);
    if run.has_checkpoint() || run.config().exists() {
        return Err(Error::checkpoint(
            dir,
            "already holds a run; import into a new directory (--to)",
        ));
    }
    let mut cfg = imported.config.clone();
    if let Some(name) = dir.file_name().and_then(|n| n.to_str()) {
        cfg.name = name.to_string();
    }
    let model = build(imported, &imported.model, device)?;
    let ema = match &imported.ema {
        Some(ema) => build(imported, ema, device)?,
        None => model.clone(),
    };
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let _lock = run.lock()?;

    let mut meta = HashMap::new();
    meta.insert("step".to_string(), "0".to_string());
    meta.insert("ell".to_string(), cfg.prime.ell.to_string());
    meta.insert(
        "vocab_size".to_string(),
        cfg.codec()?.vocab_size().to_string(),
    );
    meta.insert("config".to_string(), cfg.to_toml()?);
    meta.insert("imported_from".to_string(), source.display().to_string());
    let state = checkpoint::fresh_state();
    let (progress_kind, progress) = match imported.progress {
        Progress::Steps(n) => ("steps", n),
        Progress::Epochs(n) => ("epochs", n),
    };
    let record = serde_json::json!({
        "imported_from": source.display().to_string(),
        "official_progress": { progress_kind: progress },
        "ema": if imported.ema.is_some() { "the checkpoint's EMA" } else { "none in the checkpoint: a copy of the weights" },
        "optimizer": "fresh AdamW (the official optimiser state is not imported)",
        "notes": imported.notes,
        "code_version": code_version(),
    });
    let record = serde_json::to_vec_pretty(&record)
        .map_err(|e| Error::checkpoint(dir.join("import.json"), e.to_string()))?;
    checkpoint::write_atomic(&run.config(), cfg.to_toml()?.as_bytes())?;
    checkpoint::write_atomic(&run.version(), format!("{}\n", code_version()).as_bytes())?;
    checkpoint::write_atomic(&dir.join("import.json"), &record)?;
    checkpoint::write_all_atomic(&[
        checkpoint::module_file(&model, run.model(), meta.clone())?,
        checkpoint::module_file(&ema, run.ema(), meta)?,
        checkpoint::optimizer_file(&AdamW::new(&cfg.train), run.optim())?,
        run.state_file(&state)?,
    ])?;
    Ok(())
}
