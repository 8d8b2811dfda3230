//! The official image checkpoints: `image/utils/load_and_save.py::save_model` of the `EMA`
//! wrapper (`image/models/ema.py`) around `DiscretePrimeUNetModel` (ℓ > 1) or
//! `DiscreteUNetModel` (ℓ = 1) of `image/models/discrete_unet.py`, over `image/models/unet.py`.
//!
//! Parameter names (official, `model.` stripped → this project's `model::Unet`):
//!
//! | official | here | layout |
//! |---|---|---|
//! | `pixel_embedding.embedding_table.weight` `[b+1, E/ℓ]` | `embed.weight` | same |
//! | `unet.input_blocks.i.0.*` (res-block), `.1.*` (attention) | `down.k.res.*`, `down.k.attn.*` | k counts the res-blocks; the parameter-free `Downsample` entries are skipped |
//! | `unet.middle_block.{0,1,2}.*` | `mid_res1.*`, `mid_attn.*`, `mid_res2.*` | |
//! | `unet.output_blocks.j.{0,1}.*` | `up.j.res.*`, `up.j.attn.*` | the `Upsample` inside has no parameters |
//! | `unet.out.0.*`, `unet.out.2.*` | `out_norm.*`, `out_conv.*` | ℓ = 1: the mask class's output channel of each RGB channel dropped |
//! | res-block `in_layers.{0,2}`, `out_layers.{0,3}`, `skip_connection` | `norm1`, `conv1`, `norm2`, `conv2`, `skip` | GroupNorm `weight, bias` → `gamma, beta` |
//! | res-block `emb_layers.embedding_table` `[1, 2C]` | `scale_shift` `[2C]` | (scale, shift) in both |
//! | attention `norm`, `qkv` `[3C, C, 1]`, `proj_out` | `norm`, `qkv` `[3C, C, 1, 1]`, `proj` | conv1d → 1 × 1 conv2d; q, k, v split before the heads in both |
//!
//! The U-Net's sizes are read off the shapes: the widths (their gcd is `model_channels`), the
//! res-blocks per level (where the first parameter-free `Downsample` sits), the levels with
//! attention, the scale-shift (the constant embedding's width). GroupNorm groups and head width
//! are in no shape: [`ImportOptions`](super::ImportOptions) (the official 32 and 64 by default).
//!
//! ℓ = 1 (the MDM baseline): the official head has 257 classes per channel (256 values and the
//! mask) and its softmax includes the mask class; this project's has the 256 values. The 256
//! logits are imported exactly; the probabilities differ by the mask class's share, which the
//! official code leaves in (docs/import.md).

use std::collections::BTreeMap;

use super::{Imported, Layout, NamedTensor, Progress, Reader, Settings};
use crate::config::{DataKind, LrSchedule, ModelConfig, PrimeConfig, RunConfig, UnetConfig};
use crate::data::image::ImageShape;
use crate::error::Result;
use crate::objective::Objective;
use crate::schedule::Schedule;
use crate::solver::DrawMode;
use crate::subtoken::Codec;
use crate::torch::TensorRef;

/// The shape-derived structure of the U-Net in a state dict.
struct Structure {
    levels: usize,
    num_res_blocks: usize,
    widths: Vec<usize>,
    attention: Vec<bool>,
}

/// This project's name for a res-block's (`res`) or attention block's parameter `param`.
fn block_param(param: &str, res: bool) -> Option<(&'static str, Layout)> {
    let same = Layout::Same;
    Some(if res {
        match param {
            "in_layers.0.weight" => ("norm1.gamma", same),
            "in_layers.0.bias" => ("norm1.beta", same),
            "in_layers.2.weight" => ("conv1.weight", same),
            "in_layers.2.bias" => ("conv1.bias", same),
            "emb_layers.embedding_table" => ("scale_shift", Layout::Flatten),
            "out_layers.0.weight" => ("norm2.gamma", same),
            "out_layers.0.bias" => ("norm2.beta", same),
            "out_layers.3.weight" => ("conv2.weight", same),
            "out_layers.3.bias" => ("conv2.bias", same),
            "skip_connection.weight" => ("skip.weight", same),
            "skip_connection.bias" => ("skip.bias", same),
            _ => return None,
        }
    } else {
        match param {
            "norm.weight" => ("norm.gamma", same),
            "norm.bias" => ("norm.beta", same),
            "qkv.weight" => ("qkv.weight", Layout::Conv1dAs2d),
            "qkv.bias" => ("qkv.bias", same),
            "proj_out.weight" => ("proj.weight", Layout::Conv1dAs2d),
            "proj_out.bias" => ("proj.bias", same),
            _ => return None,
        }
    })
}

/// This project's name and layout for the official key (`model.` stripped).
fn target(key: &str, st: &Structure, head: Layout) -> Option<(String, Layout)> {
    match key {
        "pixel_embedding.embedding_table.weight" => {
            return Some(("embed.weight".into(), Layout::Same));
        }
        "unet.out.0.weight" => return Some(("out_norm.gamma".into(), Layout::Same)),
        "unet.out.0.bias" => return Some(("out_norm.beta".into(), Layout::Same)),
        "unet.out.2.weight" => return Some(("out_conv.weight".into(), head)),
        "unet.out.2.bias" => return Some(("out_conv.bias".into(), head)),
        _ => {}
    }
    let sub = |rest: &str, prefix: String| -> Option<(String, Layout)> {
        let (part, param) = rest.split_once('.')?;
        let (kind, res) = match part {
            "0" => ("res", true),
            "1" => ("attn", false),
            _ => return None,
        };
        let (name, layout) = block_param(param, res)?;
        Some((format!("{prefix}.{kind}.{name}"), layout))
    };
    if let Some(rest) = key.strip_prefix("unet.input_blocks.") {
        let (i, rest) = rest.split_once('.')?;
        let pos = i.parse::<usize>().ok()?.checked_sub(1)?;
        let (level, r) = (pos / (st.num_res_blocks + 1), pos % (st.num_res_blocks + 1));
        if level >= st.levels || r == st.num_res_blocks {
            return None;
        }
        return sub(rest, format!("down.{}", level * st.num_res_blocks + r));
    }
    if let Some(rest) = key.strip_prefix("unet.output_blocks.") {
        let (j, rest) = rest.split_once('.')?;
        let j = j.parse::<usize>().ok()?;
        if j >= st.levels * (st.num_res_blocks + 1) {
            return None;
        }
        return sub(rest, format!("up.{j}"));
    }
    let rest = key.strip_prefix("unet.middle_block.")?;
    let (part, param) = rest.split_once('.')?;
    let (name, res) = match part {
        "0" => ("mid_res1", true),
        "1" => ("mid_attn", false),
        "2" => ("mid_res2", true),
        _ => return None,
    };
    let (p, layout) = block_param(param, res)?;
    Some((format!("{name}.{p}"), layout))
}

/// The encoder's structure from which `input_blocks` entries have parameters.
fn structure(r: &Reader<'_>, params: &[(String, &TensorRef)]) -> Result<Structure> {
    let mut present: BTreeMap<usize, bool> = BTreeMap::new();
    for (k, _) in params {
        if let Some(rest) = k.strip_prefix("unet.input_blocks.")
            && let Some(i) = rest.split('.').next().and_then(|i| i.parse::<usize>().ok())
        {
            present.insert(i, true);
        }
    }
    let last = *present
        .keys()
        .next_back()
        .ok_or_else(|| r.fail("the U-Net has no `unet.input_blocks.*` parameters"))?;
    if present.contains_key(&0) {
        return Err(r.fail(
            "unet.input_blocks.0 has parameters: an input projection conv, which the official \
             discrete U-Net (input_projection=False) does not have",
        ));
    }
    // input_blocks: 0 (identity), then per level nrb res-blocks and a Downsample (none after
    // the last level): the first index without parameters is nrb + 1.
    let num_res_blocks = (1..=last)
        .find(|i| !present.contains_key(i))
        .map_or(last, |i| i - 1);
    if num_res_blocks == 0 || !(last + 1).is_multiple_of(num_res_blocks + 1) {
        return Err(r.fail(format!(
            "unet.input_blocks 1..={last} do not form levels of res-blocks and downsamplers"
        )));
    }
    let levels = (last + 1) / (num_res_blocks + 1);
    let shape = |k: String| {
        params
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, t)| t.shape.clone())
            .ok_or_else(|| r.fail(format!("the state dict has no `{k}`")))
    };
    let mut widths = Vec::new();
    let mut attention = Vec::new();
    for l in 0..levels {
        let i = 1 + l * (num_res_blocks + 1);
        widths.push(shape(format!("unet.input_blocks.{i}.0.in_layers.2.weight"))?[0]);
        attention.push(
            params
                .iter()
                .any(|(k, _)| k.starts_with(&format!("unet.input_blocks.{i}.1."))),
        );
    }
    Ok(Structure {
        levels,
        num_res_blocks,
        widths,
        attention,
    })
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

pub(crate) fn read(r: &Reader<'_>, opts: &super::ImportOptions) -> Result<Imported> {
    let root = r.value();
    let args = &root["args"];
    let s = Settings {
        root: args,
        origin: "args",
        path: &r.path,
    };
    if s.bool_or("super_token", false)? {
        return Err(r.fail(
            "args.super_token is true: the super-token model (2 base-4096 tokens per pixel) has \
             no counterpart in this project",
        ));
    }
    let state = root["model"]
        .as_dict()
        .ok_or_else(|| r.fail("`model` is not a state dict"))?;
    let wrapped = state
        .iter()
        .any(|(k, _)| k.as_str().is_some_and(|k| k.starts_with("model.")));
    let mut params: Vec<(String, &TensorRef)> = Vec::new();
    let mut shadow: BTreeMap<usize, &TensorRef> = BTreeMap::new();
    for (k, v) in state {
        let key = k.as_str().unwrap_or("?");
        let t = v
            .as_tensor()
            .ok_or_else(|| r.fail(format!("model entry `{key}` is not a tensor")))?;
        if !wrapped {
            params.push((key.to_string(), t));
        } else if let Some(rest) = key.strip_prefix("model.") {
            params.push((rest.to_string(), t));
        } else if let Some(n) = key
            .strip_prefix("shadow_params.")
            .and_then(|n| n.parse().ok())
        {
            shadow.insert(n, t);
        } else if key != "num_updates" {
            return Err(r.fail(format!(
                "model key `{key}` cannot be mapped: the EMA wrapper holds `model.*`, \
                 `shadow_params.*` and `num_updates`"
            )));
        }
    }

    let ell = s.usize("target_length")?;
    let v = s.usize("vocab_size")?;
    let codec =
        Codec::new(v as u32, ell).map_err(|e| r.fail(format!("args.target_length {ell}: {e}")))?;
    let find = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, t)| t.shape.clone())
    };
    let out = find("unet.out.2.weight")
        .ok_or_else(|| r.fail("the state dict has no `model.unet.out.2.weight`"))?;
    let classes = if ell == 1 { v + 1 } else { v };
    if out.len() != 4 || !out[0].is_multiple_of(classes) {
        return Err(r.fail(format!(
            "model.unet.out.2.weight has shape {out:?}: not C × {classes} output channels"
        )));
    }
    let channels = out[0] / classes;
    let embed = find("pixel_embedding.embedding_table.weight").ok_or_else(|| {
        r.fail("the state dict has no `model.pixel_embedding.embedding_table.weight`")
    })?;
    let rows = codec.mask_id() as usize + 1;
    if embed.len() != 2 || embed[0] != rows {
        return Err(r.fail(format!(
            "model.pixel_embedding.embedding_table.weight has shape {embed:?}; V = {v}, ℓ = {ell} \
             (b = {}) need {rows} rows",
            codec.base()
        )));
    }
    let embed_dim = embed[1] * ell;
    let st = structure(r, &params)?;
    if channels * embed_dim != st.widths[0] {
        return Err(r.fail(format!(
            "{channels} channels × embedding {embed_dim} ≠ the first width {}: the official U-Net \
             has no input projection",
            st.widths[0]
        )));
    }
    let ss = find("unet.input_blocks.1.0.emb_layers.embedding_table").unwrap_or_default();
    if ss.iter().product::<usize>() != 2 * st.widths[0] {
        return Err(r.fail(format!(
            "unet.input_blocks.1.0.emb_layers.embedding_table has shape {ss:?}: only the \
             scale-shift res-blocks of the official model (use_scale_shift_norm=True) are \
             imported"
        )));
    }
    let seq = s.usize("seq_length")?;
    let side = ((seq / channels.max(1)) as f64).sqrt().round() as usize;
    if channels == 0 || side * side * channels != seq {
        return Err(r.fail(format!(
            "args.seq_length {seq} is not H·W·{channels} of a square image"
        )));
    }
    let base_ch = st.widths.iter().copied().fold(0, gcd);
    let unet = UnetConfig {
        embed_dim,
        channels: base_ch,
        channel_mult: st.widths.iter().map(|w| w / base_ch).collect(),
        num_res_blocks: st.num_res_blocks,
        attention_ds: (0..st.levels)
            .filter(|&l| st.attention[l])
            .map(|l| 1 << l)
            .collect(),
        head_channels: opts.unet_head_channels,
        groups: opts.unet_groups,
        dropout: opts.unet_dropout,
        scale_shift: true,
    };

    let mut notes = vec![format!(
        "U-Net GroupNorm groups {} and head width {} (not recorded in the file: the official \
         constants unless --unet-groups / --unet-head-channels say otherwise)",
        opts.unet_groups, opts.unet_head_channels
    )];
    if ell == 1 {
        notes.push(
            "ℓ = 1: the head's mask-class channels are dropped; the 256 value logits are exact, \
             the official softmax also spreads mass on the mask class (docs/import.md)"
                .into(),
        );
    }
    if s.bool_or("use_corrector_step", false)? {
        notes.push("args.use_corrector_step: the corrector is not implemented here; sampling runs without it".into());
    }

    let mut cfg = RunConfig {
        seed: s.int("seed").map_or(0, |x| x.max(0) as u64),
        ..RunConfig::default()
    };
    cfg.data.kind = DataKind::Image;
    cfg.data.source = String::new();
    cfg.data.flip = true;
    cfg.data.image = Some(ImageShape {
        height: side,
        width: side,
        channels,
    });
    cfg.data.seq_len = seq;
    cfg.prime = PrimeConfig {
        ell,
        carry_over: false,
    };
    cfg.model = ModelConfig::Unet(unet);
    cfg.schedule = Schedule::Polynomial {
        n: s.float_or("schedule_n", 3.0)?,
    };
    let t = &mut cfg.train;
    t.objective = Objective::CrossEntropy;
    t.lr = s.float_or("lr", 1e-4)?;
    if let Ok(b) = s.floats("optimizer_betas")
        && let [b1, b2] = b[..]
    {
        (t.beta1, t.beta2) = (b1, b2);
    }
    t.weight_decay = 0.01; // torch AdamW's default: the image code does not set it
    t.grad_clip = 0.0;
    t.ema_decay = 0.999; // image/models/ema.py's default
    t.antithetic = false;
    t.warmup_steps = 0;
    t.lr_schedule = LrSchedule::Constant;
    t.batch_size = s.usize("batch_size").unwrap_or(64) * s.usize("world_size").unwrap_or(1).max(1);
    cfg.sample.steps = s.usize("nfe").unwrap_or(0);
    cfg.sample.draw = if s.bool_or("carry_over", false)? {
        DrawMode::Marginals
    } else {
        DrawMode::Joint
    };
    if let Ok(p) = s.floats("temperature_parameters")
        && let [a, b, c] = p[..]
    {
        cfg.sample.temperature_schedule = [a, b, c];
    }
    if s.bool_or("use_timestep_scheduler", false)?
        && let Ok(p) = s.floats("timestep_parameters")
        && let [a, b, c] = p[..]
    {
        cfg.sample.time_warp = Some([a, b, c]);
    }
    cfg.validate()
        .map_err(|e| r.fail(format!("the config read from the checkpoint: {e}")))?;

    let head = if ell == 1 {
        Layout::DropLastOfEachGroup {
            groups: channels,
            keep: v,
        }
    } else {
        Layout::Same
    };
    let prefix = if wrapped { "model." } else { "" };
    let map = |key: &str, t: &TensorRef| -> Result<NamedTensor> {
        let shown = format!("model key `{prefix}{key}`");
        r.map(key, &shown, t, target(key, &st, head), "discrete U-Net")
    };
    let model = params
        .iter()
        .map(|(k, t)| map(k, t))
        .collect::<Result<Vec<_>>>()?;
    let ema = if !wrapped {
        notes.push(
            "the checkpoint has no EMA (args.use_ema was off): the run's EMA starts as the weights"
                .into(),
        );
        None
    } else {
        if shadow.len() != params.len()
            || shadow.keys().next_back() != params.len().checked_sub(1).as_ref()
        {
            return Err(r.fail(format!(
                "the EMA has {} shadow_params but the model {} parameters",
                shadow.len(),
                params.len()
            )));
        }
        let mut out = Vec::with_capacity(params.len());
        for ((key, t), (i, s)) in params.iter().zip(&shadow) {
            if s.shape != t.shape {
                return Err(r.fail(format!(
                    "shadow_params.{i} has shape {:?} but its parameter `model.{key}` {:?}",
                    s.shape, t.shape
                )));
            }
            out.push(map(key, s)?);
        }
        Some(out)
    };
    let epoch = root["epoch"].as_int().unwrap_or(0).max(0) as u64;
    Ok(Imported {
        config: cfg,
        model,
        ema,
        progress: Progress::Epochs(epoch),
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_block_indices_skip_the_downsamplers() {
        // 3 levels × 2 res-blocks: input_blocks 1, 2 | (3 down) | 4, 5 | (6 down) | 7, 8.
        let st = Structure {
            levels: 3,
            num_res_blocks: 2,
            widths: vec![8, 16, 16],
            attention: vec![false, true, false],
        };
        let name = |k: &str| target(k, &st, Layout::Same).map(|(n, _)| n);
        assert_eq!(
            name("unet.input_blocks.2.0.in_layers.2.weight").as_deref(),
            Some("down.1.res.conv1.weight")
        );
        assert_eq!(
            name("unet.input_blocks.4.1.qkv.bias").as_deref(),
            Some("down.2.attn.qkv.bias")
        );
        assert_eq!(
            name("unet.input_blocks.8.0.skip_connection.bias").as_deref(),
            Some("down.5.res.skip.bias")
        );
        assert_eq!(name("unet.input_blocks.3.0.in_layers.0.weight"), None);
        assert_eq!(
            name("unet.output_blocks.8.0.out_layers.3.weight").as_deref(),
            Some("up.8.res.conv2.weight")
        );
        assert_eq!(name("unet.output_blocks.9.0.out_layers.3.weight"), None);
        assert_eq!(
            name("unet.middle_block.1.proj_out.weight").as_deref(),
            Some("mid_attn.proj.weight")
        );
        assert_eq!(name("unet.label_emb.weight"), None);
    }
}
