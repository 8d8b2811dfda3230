//! GPT-2 on burn, to judge samples (`mdm-prime genppl`, docs/genppl.md): a Hugging Face
//! `model.safetensors` + `config.json` (f32, f16 or bf16 weights, read as f32), evaluated in
//! f32, forward only.
//!
//! The network (Radford et al. 2019; `transformers`' `modeling_gpt2.py`):
//! - input `h₀ = wte[x] + wpe[0..L]` (learned absolute positions, L ≤ `n_positions`);
//! - per layer, pre-LayerNorm: `h ← h + c_proj(attn(c_attn(LN₁(h))))`, then
//!   `h ← h + mlp.c_proj(gelu_new(mlp.c_fc(LN₂(h))))`; `attn` is causal multi-head attention,
//!   `softmax(q·kᵀ/√hd)·v` per head (the project's tiled kernel with no rotation:
//!   [`Rope::identity`]); `gelu_new(x) = 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³)))`;
//! - `LN(x) = (x − mean)/√(var + ε)·γ + β` over the width, biased variance, ε =
//!   `layer_norm_epsilon`;
//! - logits `LN_f(h)·Wᵀ` with W = `lm_head.weight` when the file has one, else `wte` (tied).
//!
//! HF `Conv1D` weights are `[in, out]`: a projection is `x·W + b` as stored. The tensor names
//! and every check on them are in [`mdm_prime_core::gpt2`].

use std::path::Path;

use burn::tensor::module::embedding;
use burn::tensor::{Device, Int, Tensor, TensorData};
use mdm_prime_core::checkpoint::FloatTensors;
use mdm_prime_core::gpt2::{Gpt2Config, Layout};

use crate::ops::{Rope, gelu_tanh, rotary_attention};
use crate::{Error, Result};

/// A LayerNorm with its affine parameters.
struct LayerNorm {
    weight: Tensor<1>,
    bias: Tensor<1>,
    eps: f64,
}

impl LayerNorm {
    /// `(x − mean)/√(var + ε)·γ + β` over the last dim (biased variance, as `torch.nn.LayerNorm`).
    ///
    /// # Shapes
    /// `x: [B, L, D]` → `[B, L, D]`.
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let (var, mean) = x.clone().var_mean_bias(2);
        let w = self
            .weight
            .clone()
            .unsqueeze_dim::<2>(0)
            .unsqueeze_dim::<3>(0);
        let b = self
            .bias
            .clone()
            .unsqueeze_dim::<2>(0)
            .unsqueeze_dim::<3>(0);
        (x - mean) / (var + self.eps).sqrt() * w + b
    }
}

/// HF's `Conv1D`: a linear map whose weight is stored `[in, out]`.
struct Conv1d {
    weight: Tensor<2>,
    bias: Tensor<1>,
}

impl Conv1d {
    /// `x·W + b`.
    ///
    /// # Shapes
    /// `x: [B, L, in]` → `[B, L, out]`.
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, l, d] = x.dims();
        let out = self.weight.dims()[1];
        (x.reshape([b * l, d]).matmul(self.weight.clone()) + self.bias.clone().unsqueeze_dim(0))
            .reshape([b, l, out])
    }
}

/// One transformer block.
struct Block {
    ln_1: LayerNorm,
    c_attn: Conv1d,
    c_proj: Conv1d,
    ln_2: LayerNorm,
    c_fc: Conv1d,
    mlp_proj: Conv1d,
}

impl Block {
    /// # Shapes
    /// `x: [B, L, D]` → `[B, L, D]`; `rope` is [`Rope::identity`] of `[L, hd]`.
    fn forward(&self, x: Tensor<3>, heads: usize, rope: &Rope) -> Tensor<3> {
        // c_attn's output is [q | k | v], each `[H, hd]`: the `[3, H, hd]` layout the kernel reads.
        let qkv = self.c_attn.forward(self.ln_1.forward(x.clone()));
        let x = x + self
            .c_proj
            .forward(rotary_attention(qkv, heads, rope, true));
        let m = self.c_fc.forward(self.ln_2.forward(x.clone()));
        x + self.mlp_proj.forward(gelu_tanh(m))
    }
}

/// A GPT-2 language model on one device.
pub struct Gpt2 {
    config: Gpt2Config,
    /// `[V, D]`.
    wte: Tensor<2>,
    /// `[n_positions, D]`.
    wpe: Tensor<2>,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    /// The output projection, transposed once: `[D, V]`.
    head: Tensor<2>,
    device: Device,
}

impl Gpt2 {
    /// Loads `dir/config.json` and `dir/model.safetensors` (the layout of a Hugging Face
    /// download, e.g. `openai-community/gpt2-large`) onto `device`. A missing file, a config
    /// this implementation does not compute, or weights that do not match it is an error
    /// naming the file and the key.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let (config_path, weights_path) = (dir.join("config.json"), dir.join("model.safetensors"));
        for (path, what) in [
            (&config_path, "its config (`n_embd`, `n_layer`, …)"),
            (&weights_path, "its weights"),
        ] {
            if !path.is_file() {
                return Err(Error::checkpoint(
                    path,
                    format!(
                        "not found: a GPT-2 judge is a folder with model.safetensors and \
                         config.json ({what} here), as Hugging Face's `save_pretrained` writes \
                         them (docs/genppl.md)"
                    ),
                ));
            }
        }
        let config = Gpt2Config::load(&config_path)?;
        let bytes = mdm_prime_core::fsutil::read_input(&weights_path)?;
        let file = FloatTensors::parse(&weights_path, bytes)?;
        let layout = config.layout(&weights_path, &file.shapes()?)?;
        Self::from_file(config, &file, layout, device)
    }

    /// The network from weights already checked against `config` ([`Gpt2Config::layout`]).
    pub fn from_file(
        config: Gpt2Config,
        file: &FloatTensors,
        layout: Layout,
        device: &Device,
    ) -> Result<Self> {
        let shapes = config.shapes();
        let get = |name: &str| -> Result<TensorData> {
            let shape = shapes
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, s)| s.clone())
                .unwrap_or_default();
            let key = format!("{}{name}", layout.prefix);
            Ok(TensorData::new(file.f32(&key)?, shape))
        };
        let t2 = |name: &str| -> Result<Tensor<2>> { Ok(Tensor::from_data(get(name)?, device)) };
        let t1 = |name: &str| -> Result<Tensor<1>> { Ok(Tensor::from_data(get(name)?, device)) };
        let eps = config.layer_norm_epsilon;
        let ln = |p: &str| -> Result<LayerNorm> {
            Ok(LayerNorm {
                weight: t1(&format!("{p}.weight"))?,
                bias: t1(&format!("{p}.bias"))?,
                eps,
            })
        };
        let conv = |p: &str| -> Result<Conv1d> {
            Ok(Conv1d {
                weight: t2(&format!("{p}.weight"))?,
                bias: t1(&format!("{p}.bias"))?,
            })
        };
        let blocks = (0..config.n_layer)
            .map(|l| {
                Ok(Block {
                    ln_1: ln(&format!("h.{l}.ln_1"))?,
                    c_attn: conv(&format!("h.{l}.attn.c_attn"))?,
                    c_proj: conv(&format!("h.{l}.attn.c_proj"))?,
                    ln_2: ln(&format!("h.{l}.ln_2"))?,
                    c_fc: conv(&format!("h.{l}.mlp.c_fc"))?,
                    mlp_proj: conv(&format!("h.{l}.mlp.c_proj"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // The head `[V, D]`, transposed on the host once so that every matmul reads it in order.
        let (v, d) = (config.vocab_size, config.n_embd);
        let w = match layout.lm_head {
            true => file.f32("lm_head.weight")?,
            false => file.f32(&format!("{}wte.weight", layout.prefix))?,
        };
        let mut head = vec![0.0f32; v * d];
        for (r, row) in w.chunks_exact(d).enumerate() {
            for (c, &x) in row.iter().enumerate() {
                head[c * v + r] = x;
            }
        }
        Ok(Gpt2 {
            wte: t2("wte.weight")?,
            wpe: t2("wpe.weight")?,
            ln_f: ln("ln_f")?,
            head: Tensor::from_data(TensorData::new(head, [d, v]), device),
            blocks,
            config,
            device: device.clone(),
        })
    }

    pub fn config(&self) -> &Gpt2Config {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The final hidden states (after `ln_f`) of token ids: row i depends on ids `0..=i` only.
    ///
    /// # Panics
    /// When L > `n_positions` (the caller cuts windows: `genppl::windows`).
    ///
    /// # Shapes
    /// `ids: [B, L]` → `[B, L, D]`.
    pub fn hidden(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        let l = ids.dims()[1];
        assert!(
            l <= self.config.n_positions,
            "{l} tokens exceed the judge's {} positions",
            self.config.n_positions
        );
        let pos = self.wpe.clone().narrow(0, 0, l).unsqueeze_dim::<3>(0);
        let mut h = embedding(self.wte.clone(), ids) + pos;
        let rope = Rope::identity(l, self.config.head_dim(), &self.device);
        for block in &self.blocks {
            h = block.forward(h, self.config.n_head, &rope);
        }
        self.ln_f.forward(h)
    }

    /// Logits from hidden states.
    ///
    /// # Shapes
    /// `h: [B, L, D]` → `[B, L, V]`.
    pub fn head(&self, h: Tensor<3>) -> Tensor<3> {
        let [b, l, d] = h.dims();
        h.reshape([b * l, d])
            .matmul(self.head.clone())
            .reshape([b, l, self.config.vocab_size])
    }

    /// Next-token logits: row i scores token i + 1 given ids `0..=i`.
    ///
    /// # Shapes
    /// `ids: [B, L]` → `[B, L, V]`.
    pub fn logits(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.head(self.hidden(ids))
    }
}
