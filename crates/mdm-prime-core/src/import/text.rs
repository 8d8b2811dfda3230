//! The official text checkpoints: Lightning `.ckpt` of `text/diffusion.py::Diffusion` with the
//! DiT of `text/models/dit.py` (`DIT` for ℓ = 1, `PerceiverDIT` for ℓ > 1).
//!
//! Parameter names (official → this project's `model::Dit`; PyTorch `Linear` weights are
//! `[out, in]`, burn's `[in, out]`, so every Linear weight is transposed):
//!
//! | official (`backbone.` stripped) | here | layout |
//! |---|---|---|
//! | `vocab_embed.embedding` `[rows, D/ℓ]` | `vocab_embed.weight` | same (rows: V+1 for ℓ = 1, b+1 else) |
//! | `sigma_map.mlp.{0,2}.{weight,bias}` | `sigma_map.lin{1,2}.*` | transpose |
//! | `rotary_emb.inv_freq` | — (recomputed) | checked to be base 10000 |
//! | `blocks.k.norm{1,2}.weight` | `blocks.k.norm{1,2}.gamma` | same |
//! | `blocks.k.attn_qkv.weight` `[3D, D]` | `blocks.k.qkv.weight` `[D, 3D]` | transpose; both `(three, heads, head_dim)` |
//! | `blocks.k.attn_out.weight` | `blocks.k.attn_out.weight` | transpose |
//! | `blocks.k.mlp.{0,2}.*` | `blocks.k.mlp_{in,out}.*` | transpose |
//! | `blocks.k.adaLN_modulation.*` | `blocks.k.ada_ln.*` | transpose; chunks (shift, scale, gate)×(attn, mlp) in both |
//! | `output_layer.norm_final.weight` | `norm_final.gamma` | same |
//! | `output_layer.adaLN_modulation.*` | `ada_ln_final.*` | transpose; (shift, scale) in both |
//! | `output_layer.linear.*` `[V(+1), D]` | `head.*` `[D, V]` | transpose; ℓ = 1 drops the mask row |
//!
//! ℓ = 1: MDLM's head has V + 1 outputs and `_subs_parameterization` adds −10⁶ to the mask
//! class's logit before the softmax, so its probability is exactly 0 in float32; this project's
//! head has no mask class, which is the same distribution. The EMA (`ema.shadow_params`) is a
//! list in `backbone.parameters()` order: the state dict's keys without its one buffer
//! (`rotary_emb.inv_freq`).

use super::{Imported, Layout, NamedTensor, Progress, Reader, Settings, plain};
use crate::config::{
    DataKind, DitConfig, LrSchedule, ModelConfig, PrimeConfig, RunConfig, TrainConfig,
};
use crate::error::Result;
use crate::objective::Objective;
use crate::schedule::Schedule;
use crate::subtoken::Codec;
use crate::tokenizer::TokenizerKind;
use crate::torch::{TensorRef, Value};

/// `LogLinearNoise(eps=1e-3)` (`text/utils/noise_schedule.py`): ε is its default, not a config key.
const LOGLINEAR_EPS: f64 = 1e-3;

/// This project's name and layout for the official parameter `key` (`backbone.` stripped), given
/// the head's kept rows (`keep`, V) and whether the head has a mask row to drop (ℓ = 1).
fn target(key: &str, v: usize, drop_mask: bool) -> Option<(String, Layout)> {
    let t = Layout::Transpose;
    let direct = match key {
        "vocab_embed.embedding" => Some(("vocab_embed.weight", Layout::Same)),
        "sigma_map.mlp.0.weight" => Some(("sigma_map.lin1.weight", t)),
        "sigma_map.mlp.0.bias" => Some(("sigma_map.lin1.bias", Layout::Same)),
        "sigma_map.mlp.2.weight" => Some(("sigma_map.lin2.weight", t)),
        "sigma_map.mlp.2.bias" => Some(("sigma_map.lin2.bias", Layout::Same)),
        "output_layer.norm_final.weight" => Some(("norm_final.gamma", Layout::Same)),
        "output_layer.adaLN_modulation.weight" => Some(("ada_ln_final.weight", t)),
        "output_layer.adaLN_modulation.bias" => Some(("ada_ln_final.bias", Layout::Same)),
        "output_layer.linear.weight" if drop_mask => {
            Some(("head.weight", Layout::TransposeKeepRows(v)))
        }
        "output_layer.linear.weight" => Some(("head.weight", t)),
        "output_layer.linear.bias" if drop_mask => Some(("head.bias", Layout::KeepFirst(v))),
        "output_layer.linear.bias" => Some(("head.bias", Layout::Same)),
        _ => None,
    };
    if let Some((name, layout)) = direct {
        return Some((name.to_string(), layout));
    }
    let rest = key.strip_prefix("blocks.")?;
    let (k, param) = rest.split_once('.')?;
    k.parse::<usize>().ok()?;
    let (name, layout) = match param {
        "norm1.weight" => ("norm1.gamma", Layout::Same),
        "norm2.weight" => ("norm2.gamma", Layout::Same),
        "attn_qkv.weight" => ("qkv.weight", t),
        "attn_out.weight" => ("attn_out.weight", t),
        "mlp.0.weight" => ("mlp_in.weight", t),
        "mlp.0.bias" => ("mlp_in.bias", Layout::Same),
        "mlp.2.weight" => ("mlp_out.weight", t),
        "mlp.2.bias" => ("mlp_out.bias", Layout::Same),
        "adaLN_modulation.weight" => ("ada_ln.weight", t),
        "adaLN_modulation.bias" => ("ada_ln.bias", Layout::Same),
        _ => return None,
    };
    Some((format!("blocks.{k}.{name}"), layout))
}

const ROTARY: &str = "rotary_emb.inv_freq";

pub(crate) fn read(r: &Reader<'_>) -> Result<Imported> {
    let root = r.value();
    let hp = plain(&root["hyper_parameters"]);
    let config = match hp.get("config") {
        Some(c @ Value::Dict(_)) => c.clone(),
        _ => {
            return Err(r.fail(
                "hyper_parameters has no `config` dict: not a checkpoint of the official \
                 text/diffusion.py (its save_hyperparameters() stores the Hydra config there)",
            ));
        }
    };
    let s = Settings {
        root: &config,
        origin: "hyper_parameters.config",
        path: &r.path,
    };
    let why = "the only setting of the released models";
    s.require_str("backbone", &["dit"], why)?;
    s.require_str("parameterization", &["subs"], why)?;
    s.require_str("diffusion", &["absorbing_state"], why)?;
    s.require_str("noise.type", &["loglinear"], why)?;
    if s.get("T").is_some() && s.int("T")? != 0 {
        return Err(r.fail(format!(
            "hyper_parameters.config.T is {}: only continuous time (T = 0) can be imported",
            s.int("T")?
        )));
    }

    // The backbone's tensors, `backbone.` stripped, in state-dict order.
    let state = root["state_dict"]
        .as_dict()
        .ok_or_else(|| r.fail("`state_dict` is not a dict"))?;
    let mut params: Vec<(String, &TensorRef)> = Vec::new();
    let mut inv_freq = None;
    for (k, v) in state {
        let key = k.as_str().unwrap_or("?");
        let t = v
            .as_tensor()
            .ok_or_else(|| r.fail(format!("state_dict entry `{key}` is not a tensor")))?;
        match key.strip_prefix("backbone.") {
            Some(ROTARY) => inv_freq = Some(t),
            Some(rest) => params.push((rest.to_string(), t)),
            None => {
                return Err(r.fail(format!(
                    "state_dict key `{key}` cannot be mapped: only `backbone.*` parameters are \
                     known (LogLinearNoise has none)"
                )));
            }
        }
    }
    let shape_of = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, t)| &t.shape)
    };
    let missing = |name: &str| r.fail(format!("state_dict has no `backbone.{name}`"));

    // Sizes: from the config, checked against the tensors.
    let ell = s.usize("prime.target_length")?;
    let head = shape_of("output_layer.linear.weight")
        .ok_or_else(|| missing("output_layer.linear.weight"))?;
    let head_rows = head[0];
    let v = if ell == 1 {
        head_rows.saturating_sub(1)
    } else {
        head_rows
    };
    let tokenizer = match v {
        50257 => TokenizerKind::Gpt2,
        256 => TokenizerKind::Bytes,
        _ => {
            return Err(r.fail(format!(
                "the head has {head_rows} outputs, so V = {v}: this project's tokenizers have V = \
                 50257 (GPT-2) or 256 (bytes)"
            )));
        }
    };
    if ell > 1 && s.get("prime.vocab_size").is_some() && s.usize("prime.vocab_size")? != v {
        return Err(r.fail(format!(
            "hyper_parameters.config.prime.vocab_size is {} but the head has {v} outputs",
            s.usize("prime.vocab_size")?
        )));
    }
    if tokenizer == TokenizerKind::Gpt2
        && let Some(name) = s.get("data.tokenizer_name_or_path").and_then(Value::as_str)
        && !name.starts_with("gpt2")
    {
        return Err(r.fail(format!(
            "hyper_parameters.config.data.tokenizer_name_or_path is {name:?}, but V = 50257 is \
             read here as the GPT-2 tokenizer"
        )));
    }
    let codec =
        Codec::new(v as u32, ell).map_err(|e| r.fail(format!("prime.target_length {ell}: {e}")))?;
    let d_model = s.usize("model.hidden_size")?;
    let n_heads = s.usize("model.n_heads")?;
    let n_layers = s.usize("model.n_blocks")?;
    let cond_dim = s.usize("model.cond_dim")?;
    let mlp_rows = shape_of("blocks.0.mlp.0.weight").map_or(4 * d_model, |sh| sh[0]);
    if d_model == 0 || n_heads == 0 || !mlp_rows.is_multiple_of(d_model) {
        return Err(r.fail(format!(
            "model.hidden_size {d_model}, n_heads {n_heads} and the MLP's {mlp_rows} rows do not \
             form a DiT"
        )));
    }
    let embed =
        shape_of("vocab_embed.embedding").ok_or_else(|| missing("vocab_embed.embedding"))?;
    let rows = codec.mask_id() as usize + 1;
    if embed.as_slice() != [rows, d_model / ell] {
        return Err(r.fail(format!(
            "backbone.vocab_embed.embedding has shape {embed:?}; V = {v}, ℓ = {ell} (b = {}) and \
             D = {d_model} need [{rows}, {}]",
            codec.base(),
            d_model / ell
        )));
    }
    let blocks_in_file = params
        .iter()
        .filter_map(|(k, _)| {
            k.strip_prefix("blocks.")?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()
        .map_or(0, |m| m + 1);
    if blocks_in_file != n_layers {
        return Err(r.fail(format!(
            "hyper_parameters.config.model.n_blocks is {n_layers} but the state dict has \
             {blocks_in_file} blocks"
        )));
    }
    if let Some(t) = inv_freq {
        check_rotary(r, t, d_model / n_heads)?;
    }

    let mut notes = Vec::new();
    let carry_over = if ell == 1 {
        notes.push(
            "ℓ = 1 (MDLM): the head's mask row is dropped and carry_over = true (SUBS), as \
             text/diffusion.py::_subs_parameterization computes"
                .to_string(),
        );
        true
    } else {
        s.boolean("prime.carry_over")?
    };
    let precision = s
        .get("trainer.precision")
        .and_then(Value::as_str)
        .unwrap_or("32");
    if precision.starts_with("bf16") {
        notes.push(
            "the official run trained under bf16 autocast; the imported run computes in f32 \
             (set train.precision = \"bf16\" to fine-tune with bf16 matmuls)"
                .to_string(),
        );
    }

    let mut cfg = RunConfig {
        seed: s.int("seed").map_or(1, |x| x.max(0) as u64),
        ..RunConfig::default()
    };
    cfg.data.kind = DataKind::Text;
    cfg.data.tokenizer = tokenizer;
    cfg.data.seq_len = s.usize("model.length")?;
    cfg.data.source = String::new();
    cfg.prime = PrimeConfig { ell, carry_over };
    cfg.model = ModelConfig::Dit(DitConfig {
        d_model,
        n_layers,
        n_heads,
        cond_dim,
        mlp_ratio: mlp_rows / d_model,
        dropout: s.float_or("model.dropout", 0.1)?,
        time_conditioning: s.bool_or("time_conditioning", false)?,
    });
    cfg.schedule = Schedule::Loglinear { eps: LOGLINEAR_EPS };
    cfg.train = train_config(&s)?;
    cfg.sample.steps = s
        .get("sampling.steps")
        .map(|_| s.usize("sampling.steps"))
        .transpose()?
        .unwrap_or(0);
    cfg.validate()
        .map_err(|e| r.fail(format!("the config read from the checkpoint: {e}")))?;

    // The weights, then the EMA in the same parameter order.
    let drop_mask = ell == 1;
    let map = |key: &str, t: &TensorRef| -> Result<NamedTensor> {
        let shown = format!("state_dict key `backbone.{key}`");
        r.map(key, &shown, t, target(key, v, drop_mask), "DiT")
    };
    let model = params
        .iter()
        .map(|(k, t)| map(k, t))
        .collect::<Result<Vec<_>>>()?;
    let ema = match root.get("ema").filter(|e| !matches!(e, Value::None)) {
        None => {
            notes.push("the checkpoint has no EMA: the run's EMA starts as the weights".into());
            None
        }
        Some(e) => {
            let shadow = e["shadow_params"]
                .as_list()
                .ok_or_else(|| r.fail("ema.shadow_params is not a list"))?;
            if shadow.len() != params.len() {
                return Err(r.fail(format!(
                    "ema.shadow_params has {} tensors but the backbone {} parameters",
                    shadow.len(),
                    params.len()
                )));
            }
            let mut out = Vec::with_capacity(shadow.len());
            for (i, ((key, t), s)) in params.iter().zip(shadow).enumerate() {
                let st = s
                    .as_tensor()
                    .ok_or_else(|| r.fail(format!("ema.shadow_params.{i} is not a tensor")))?;
                if st.shape != t.shape {
                    return Err(r.fail(format!(
                        "ema.shadow_params.{i} has shape {:?} but its parameter `backbone.{key}` \
                         {:?}",
                        st.shape, t.shape
                    )));
                }
                out.push(map(key, st)?);
            }
            Some(out)
        }
    };
    let step = root["global_step"].as_int().unwrap_or(0).max(0) as u64;
    Ok(Imported {
        config: cfg,
        model,
        ema,
        progress: Progress::Steps(step),
        notes,
    })
}

/// The training settings `configs/config.yaml` records (`optim`, `training`, `trainer`,
/// `lr_scheduler`, `loader`), for fine-tuning.
fn train_config(s: &Settings<'_>) -> Result<TrainConfig> {
    let mut t = TrainConfig {
        objective: Objective::Paper,
        ..TrainConfig::default()
    };
    t.lr = s.float_or("optim.lr", t.lr)?;
    t.beta1 = s.float_or("optim.beta1", t.beta1)?;
    t.beta2 = s.float_or("optim.beta2", t.beta2)?;
    t.adam_eps = s.float_or("optim.eps", t.adam_eps)?;
    t.weight_decay = s.float_or("optim.weight_decay", t.weight_decay)?;
    t.grad_clip = s.float_or("trainer.gradient_clip_val", 0.0)?;
    t.ema_decay = s.float_or("training.ema", t.ema_decay)?;
    t.antithetic = s.bool_or("training.antithetic_sampling", t.antithetic)?;
    t.sampling_eps = s.float_or("training.sampling_eps", t.sampling_eps)?;
    t.warmup_steps = s.float_or("lr_scheduler.num_warmup_steps", 0.0)? as u64;
    let target = s
        .get("lr_scheduler._target_")
        .and_then(Value::as_str)
        .unwrap_or("");
    t.lr_schedule = if target.contains("cosine") {
        LrSchedule::Cosine
    } else {
        LrSchedule::Constant
    };
    if let Some(Value::Int(n)) = s.get("loader.global_batch_size") {
        t.batch_size = (*n).max(1) as usize;
    }
    if let Some(Value::Int(n)) = s.get("trainer.max_steps") {
        t.steps = (*n).max(0) as u64;
    }
    Ok(t)
}

/// `Rotary(dim)` stores `inv_freq = 1 / 10000^(2i/dim)`; this project recomputes it, so the file's
/// must be that one.
fn check_rotary(r: &Reader<'_>, t: &TensorRef, head_dim: usize) -> Result<()> {
    let got = r.values(ROTARY, t)?;
    let ok = got.len() == head_dim / 2
        && got.iter().enumerate().all(|(i, &f)| {
            let want = 10000f64.powf(-((2 * i) as f64) / head_dim as f64);
            ((f as f64) - want).abs() <= 1e-6 * want.max(1e-3)
        });
    if ok {
        Ok(())
    } else {
        Err(r.fail(format!(
            "backbone.rotary_emb.inv_freq is not the base-10000 rotary of head dim {head_dim} \
             ({} values); this project's attention computes exactly that one",
            got.len()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_official_dit_parameter_has_a_target() {
        for key in [
            "vocab_embed.embedding",
            "sigma_map.mlp.0.weight",
            "sigma_map.mlp.2.bias",
            "blocks.11.attn_qkv.weight",
            "blocks.0.adaLN_modulation.bias",
            "output_layer.linear.weight",
        ] {
            assert!(target(key, 10, false).is_some(), "{key}");
        }
        assert_eq!(
            target("blocks.3.mlp.2.weight", 10, false),
            Some(("blocks.3.mlp_out.weight".into(), Layout::Transpose))
        );
        assert_eq!(
            target("output_layer.linear.bias", 10, true),
            Some(("head.bias".into(), Layout::KeepFirst(10)))
        );
        for key in [
            "blocks.x.norm1.weight",
            "blocks.0.attn.weight",
            "noise.sigmas",
            "lm_head",
        ] {
            assert_eq!(target(key, 10, false), None, "{key}");
        }
    }
}
