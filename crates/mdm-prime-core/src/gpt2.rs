//! The burn-free half of a GPT-2 judge for `mdm-prime genppl` (docs/genppl.md): its
//! `config.json` as Hugging Face `transformers` writes it ([`Gpt2Config`]), and which tensors
//! of its `model.safetensors` hold which weight ([`Gpt2Config::layout`]). The network itself
//! runs in the burn crate (`mdm_prime::gpt2`).
//!
//! Tensor names are those of `transformers.GPT2Model`, with or without the `transformer.`
//! prefix that `GPT2LMHeadModel.save_pretrained` adds; `lm_head.weight` is optional (GPT-2 ties
//! it to `wte.weight`). The projections are HF `Conv1D`s, whose weights are `[in, out]`.

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The activations this implementation computes: `gelu_new` is GPT-2's tanh approximation
/// `0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³)))`; `gelu_pytorch_tanh` is the same formula.
pub const ACTIVATIONS: [&str; 2] = ["gelu_new", "gelu_pytorch_tanh"];

/// Per-layer buffers of older `transformers` versions (the causal mask and its fill value):
/// present in the released `gpt2` files, not weights; skipped when loading.
const BUFFERS: [&str; 2] = ["attn.bias", "attn.masked_bias"];

/// What `config.json` says about the network (the keys this implementation reads; the others,
/// dropout rates and generation settings among them, do not change a forward pass in
/// evaluation and are ignored).
#[derive(Debug, Clone, PartialEq)]
pub struct Gpt2Config {
    pub vocab_size: usize,
    /// The context: learned positions `0..n_positions`.
    pub n_positions: usize,
    /// Model width D.
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    /// The MLP's inner width (`n_inner`, `null` = 4·D).
    pub n_inner: usize,
    pub layer_norm_epsilon: f64,
    /// The token a sequence starts from (`bos_token_id`, else `eos_token_id`; 50256 when the
    /// file names neither, as `transformers.GPT2Config`).
    pub bos_token_id: u32,
}

/// `config.json` key `key` as a positive integer, or `default` when absent or `null`.
fn positive(
    obj: &Map<String, Value>,
    path: &Path,
    key: &str,
    default: Option<usize>,
) -> Result<usize> {
    match obj.get(key) {
        None | Some(Value::Null) => default.ok_or_else(|| {
            Error::data(
                path,
                format!(
                    "has no `{key}`; a GPT-2 config.json names it (e.g. 768 for `n_embd` of gpt2)"
                ),
            )
        }),
        Some(v) => v
            .as_u64()
            .filter(|&n| n > 0)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| {
                Error::data(
                    path,
                    format!("`{key}` is {v}; it must be a positive integer"),
                )
            }),
    }
}

/// `config.json` key `key` as a boolean that must equal `want` (the value this implementation
/// computes); absent means `transformers`' default, which is `want`.
fn flag(obj: &Map<String, Value>, path: &Path, key: &str, want: bool) -> Result<()> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Bool(b)) if *b == want => Ok(()),
        Some(v) => Err(Error::data(
            path,
            format!("`{key}` is {v}; this GPT-2 implementation computes only `{key}: {want}`"),
        )),
    }
}

impl Gpt2Config {
    /// Reads `config.json` at `path`; every error names the file and the key.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = crate::fsutil::read_input(path)?;
        Self::parse(path, &bytes)
    }

    /// Parses the bytes of a `config.json` (`path` names it in errors) and checks it.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::data(path, format!("is not valid JSON ({e})")))?;
        let Value::Object(obj) = value else {
            return Err(Error::data(path, "is not a JSON object"));
        };
        if let Some(t) = obj.get("model_type").filter(|t| *t != "gpt2") {
            return Err(Error::data(
                path,
                format!("`model_type` is {t}: only GPT-2 (`\"gpt2\"`) can be a judge"),
            ));
        }
        let act = obj
            .get("activation_function")
            .cloned()
            .unwrap_or(Value::from("gelu_new"));
        if !act.as_str().is_some_and(|a| ACTIVATIONS.contains(&a)) {
            return Err(Error::data(
                path,
                format!(
                    "`activation_function` is {act}; this GPT-2 implementation computes \
                     `gelu_new` (GPT-2's tanh approximation) only"
                ),
            ));
        }
        flag(&obj, path, "scale_attn_weights", true)?;
        flag(&obj, path, "scale_attn_by_inverse_layer_idx", false)?;
        flag(&obj, path, "add_cross_attention", false)?;
        let eps = match obj.get("layer_norm_epsilon") {
            None | Some(Value::Null) => 1e-5,
            Some(v) => v
                .as_f64()
                .filter(|e| *e > 0.0 && e.is_finite())
                .ok_or_else(|| {
                    Error::data(
                        path,
                        format!("`layer_norm_epsilon` is {v}; it must be a positive number"),
                    )
                })?,
        };
        let n_embd = positive(&obj, path, "n_embd", None)?;
        let vocab_size = positive(&obj, path, "vocab_size", None)?;
        let bos = ["bos_token_id", "eos_token_id"]
            .iter()
            .find_map(|k| obj.get(*k).filter(|v| !v.is_null()).map(|v| (*k, v)));
        let bos_token_id = match bos {
            None => crate::tokenizer::GPT2_EOS,
            Some((k, v)) => v
                .as_u64()
                .filter(|&b| (b as usize) < vocab_size)
                .map(|b| b as u32)
                .ok_or_else(|| {
                    Error::data(
                        path,
                        format!(
                            "`{k}` is {v}; it must be a token id below vocab_size = {vocab_size}"
                        ),
                    )
                })?,
        };
        let config = Gpt2Config {
            vocab_size,
            n_positions: positive(&obj, path, "n_positions", None)?,
            n_embd,
            n_layer: positive(&obj, path, "n_layer", None)?,
            n_head: positive(&obj, path, "n_head", None)?,
            n_inner: positive(&obj, path, "n_inner", Some(n_embd.saturating_mul(4)))?,
            layer_norm_epsilon: eps,
            bos_token_id,
        };
        config.check(path)?;
        Ok(config)
    }

    /// Sizes that cannot work, and weights that do not fit in memory.
    fn check(&self, path: &Path) -> Result<()> {
        if !self.n_embd.is_multiple_of(self.n_head) {
            return Err(Error::data(
                path,
                format!(
                    "`n_embd` = {} is not divisible by `n_head` = {}; the heads split the width evenly",
                    self.n_embd, self.n_head
                ),
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(Error::data(
                path,
                format!(
                    "the head size `n_embd` / `n_head` = {} is odd; this implementation needs an \
                     even head size (every released GPT-2 has 64)",
                    self.head_dim()
                ),
            ));
        }
        if self.n_positions < 2 {
            return Err(Error::data(
                path,
                "`n_positions` must be at least 2 (a token and its context)",
            ));
        }
        crate::limits::check_bytes(
            &format!(
                "the GPT-2 judge of {} ({} parameters, f32)",
                path.display(),
                self.parameters()
            ),
            self.parameters().saturating_mul(4),
            "use a smaller judge",
        )
    }

    /// Channels per attention head.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Parameters of the network (the tied head counted once).
    pub fn parameters(&self) -> u128 {
        self.shapes()
            .iter()
            .map(|(_, s)| s.iter().fold(1u128, |p, &d| p.saturating_mul(d as u128)))
            .fold(0u128, u128::saturating_add)
    }

    /// Every weight's name (without the `transformer.` prefix) and shape, in `GPT2Model`'s
    /// order: `wte` `[V, D]`, `wpe` `[P, D]`, per layer `ln_1`, `attn.c_attn` (`[D, 3D]`, Conv1D
    /// `[in, out]`), `attn.c_proj` `[D, D]`, `ln_2`, `mlp.c_fc` `[D, I]`, `mlp.c_proj` `[I, D]`,
    /// then `ln_f`.
    pub fn shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (d, i) = (self.n_embd, self.n_inner);
        let mut out = vec![
            ("wte.weight".to_string(), vec![self.vocab_size, d]),
            ("wpe.weight".to_string(), vec![self.n_positions, d]),
        ];
        for l in 0..self.n_layer {
            let p = |n: &str| format!("h.{l}.{n}");
            out.extend([
                (p("ln_1.weight"), vec![d]),
                (p("ln_1.bias"), vec![d]),
                (p("attn.c_attn.weight"), vec![d, d.saturating_mul(3)]),
                (p("attn.c_attn.bias"), vec![d.saturating_mul(3)]),
                (p("attn.c_proj.weight"), vec![d, d]),
                (p("attn.c_proj.bias"), vec![d]),
                (p("ln_2.weight"), vec![d]),
                (p("ln_2.bias"), vec![d]),
                (p("mlp.c_fc.weight"), vec![d, i]),
                (p("mlp.c_fc.bias"), vec![i]),
                (p("mlp.c_proj.weight"), vec![i, d]),
                (p("mlp.c_proj.bias"), vec![d]),
            ]);
        }
        out.push(("ln_f.weight".to_string(), vec![d]));
        out.push(("ln_f.bias".to_string(), vec![d]));
        out
    }

    /// How the tensors `file` holds (name, shape) map onto [`Gpt2Config::shapes`]: the name
    /// prefix in use and whether an untied `lm_head.weight` `[V, D]` is there. A missing weight,
    /// a shape that differs from the config's, or a tensor that is none of these (besides the
    /// old mask buffers `h.N.attn.bias`, `h.N.attn.masked_bias`) is an error listing them
    /// (`path` names the weights file).
    pub fn layout(&self, path: &Path, file: &[(String, Vec<usize>)]) -> Result<Layout> {
        let prefix = if file.iter().any(|(n, _)| n.starts_with("transformer.")) {
            "transformer."
        } else {
            ""
        };
        let mut problems = Vec::new();
        let mut expected = self.shapes();
        expected.push(("lm_head.weight".into(), vec![self.vocab_size, self.n_embd]));
        let full = |n: &str| {
            if n == "lm_head.weight" {
                n.to_string()
            } else {
                format!("{prefix}{n}")
            }
        };
        for (name, shape) in &expected {
            match file.iter().find(|(n, _)| *n == full(name)) {
                None if name == "lm_head.weight" => {}
                None => problems.push(format!("missing {} {shape:?}", full(name))),
                Some((_, got)) if got != shape => problems.push(format!(
                    "{} is {got:?} in the file but {shape:?} by config.json",
                    full(name)
                )),
                Some(_) => {}
            }
        }
        let is_buffer = |n: &str| {
            n.strip_prefix(prefix)
                .and_then(|n| n.strip_prefix("h."))
                .and_then(|n| n.split_once('.'))
                .is_some_and(|(l, rest)| l.parse::<usize>().is_ok() && BUFFERS.contains(&rest))
        };
        for (name, _) in file {
            let known = expected.iter().any(|(e, _)| full(e) == *name);
            if !known && !is_buffer(name) {
                problems.push(format!("unexpected {name}"));
            }
        }
        if !problems.is_empty() {
            let shown: Vec<&str> = problems.iter().take(6).map(String::as_str).collect();
            return Err(Error::data(
                path,
                format!(
                    "does not hold the GPT-2 that config.json describes ({} problems: {}{}); \
                     check that model.safetensors and config.json come from the same model \
                     (n_layer = {}, n_embd = {}, vocab_size = {}, n_positions = {})",
                    problems.len(),
                    shown.join("; "),
                    if problems.len() > 6 { "; …" } else { "" },
                    self.n_layer,
                    self.n_embd,
                    self.vocab_size,
                    self.n_positions
                ),
            ));
        }
        Ok(Layout {
            prefix,
            lm_head: file.iter().any(|(n, _)| n == "lm_head.weight"),
        })
    }
}

/// Where a weights file keeps its tensors ([`Gpt2Config::layout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// `"transformer."` or `""`: prepended to the names of [`Gpt2Config::shapes`].
    pub prefix: &'static str,
    /// The file has its own `lm_head.weight` (used instead of `wte.weight`).
    pub lm_head: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINY: &str = r#"{"model_type": "gpt2", "vocab_size": 97, "n_positions": 16,
        "n_embd": 16, "n_layer": 2, "n_head": 2, "n_inner": null, "layer_norm_epsilon": 1e-5,
        "activation_function": "gelu_new", "bos_token_id": 96, "eos_token_id": 96,
        "attn_pdrop": 0.1, "use_cache": true}"#;

    fn parse(json: &str) -> Result<Gpt2Config> {
        Gpt2Config::parse(Path::new("judge/config.json"), json.as_bytes())
    }

    fn with(key: &str, value: &str) -> String {
        let mut v: Value = serde_json::from_str(TINY).unwrap();
        v[key] = serde_json::from_str(value).unwrap();
        v.to_string()
    }

    #[test]
    fn tiny_config_reads_and_counts_parameters() {
        let c = parse(TINY).unwrap();
        assert_eq!(
            (c.vocab_size, c.n_positions, c.n_embd, c.n_layer, c.n_head),
            (97, 16, 16, 2, 2)
        );
        assert_eq!((c.n_inner, c.head_dim(), c.bos_token_id), (64, 8, 96));
        // wte 97·16 + wpe 16·16 + 2 layers × (4·16 + 16·48 + 48 + 16·16 + 16 + 16·64 + 64 + 64·16 + 16)
        // + ln_f 2·16 = 1552 + 256 + 2·3280 + 32.
        assert_eq!(c.parameters(), 1552 + 256 + 2 * 3280 + 32);
        // gpt2 (124M): 124,439,808 parameters with the head tied.
        let gpt2 = r#"{"vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12,
            "n_head": 12}"#;
        let c = parse(gpt2).unwrap();
        assert_eq!(c.parameters(), 124_439_808);
        assert_eq!((c.layer_norm_epsilon, c.bos_token_id), (1e-5, 50256));
    }

    #[test]
    fn bad_configs_name_the_key() {
        let cases = [
            (
                with("activation_function", "\"relu\""),
                "`activation_function` is \"relu\"",
            ),
            (with("n_head", "3"), "not divisible by `n_head` = 3"),
            (with("n_embd", "\"16\""), "`n_embd` is \"16\""),
            (with("n_layer", "0"), "`n_layer` is 0"),
            (with("model_type", "\"llama\""), "only GPT-2"),
            (
                with("scale_attn_by_inverse_layer_idx", "true"),
                "`scale_attn_by_inverse_layer_idx`",
            ),
            (with("layer_norm_epsilon", "-1"), "`layer_norm_epsilon`"),
            (with("bos_token_id", "97"), "`bos_token_id` is 97"),
            (
                with("n_head", "16"),
                "head size `n_embd` / `n_head` = 1 is odd",
            ),
            (r#"{"n_embd": 16}"#.into(), "has no `vocab_size`"),
            (
                with("n_positions", "18446744073709551615"),
                "the GPT-2 judge",
            ),
            (with("n_embd", "9223372036854775808"), "the GPT-2 judge"),
            ("[1]".into(), "not a JSON object"),
            ("{".into(), "not valid JSON"),
        ];
        for (json, needle) in cases {
            let e = parse(&json).unwrap_err().to_string();
            assert!(
                e.contains("judge/config.json") && e.contains(needle),
                "{json}: {e}"
            );
        }
        assert_eq!(
            parse(&with("activation_function", "\"gelu_pytorch_tanh\"")).unwrap(),
            parse(TINY).unwrap()
        );
    }

    #[test]
    fn layouts_with_and_without_prefix_and_their_problems() {
        let c = parse(&with("n_layer", "1")).unwrap();
        let path = Path::new("judge/model.safetensors");
        let plain = c.shapes();
        assert_eq!(plain.len(), 2 + 12 + 2);
        let l = c.layout(path, &plain).unwrap();
        assert_eq!(
            l,
            Layout {
                prefix: "",
                lm_head: false
            }
        );
        let mut prefixed: Vec<_> = plain
            .iter()
            .map(|(n, s)| (format!("transformer.{n}"), s.clone()))
            .collect();
        prefixed.push(("lm_head.weight".into(), vec![97, 16]));
        prefixed.push(("transformer.h.0.attn.bias".into(), vec![1, 1, 16, 16]));
        let l = c.layout(path, &prefixed).unwrap();
        assert_eq!(
            l,
            Layout {
                prefix: "transformer.",
                lm_head: true
            }
        );

        let mut broken = plain.clone();
        broken.retain(|(n, _)| n != "h.0.ln_2.bias");
        broken[0].1 = vec![96, 16];
        broken.push(("h.0.attn.rotary".into(), vec![4]));
        let e = c.layout(path, &broken).unwrap_err().to_string();
        for needle in [
            "judge/model.safetensors",
            "3 problems",
            "missing h.0.ln_2.bias [16]",
            "wte.weight is [96, 16] in the file but [97, 16] by config.json",
            "unexpected h.0.attn.rotary",
            "same model",
        ] {
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }
}
