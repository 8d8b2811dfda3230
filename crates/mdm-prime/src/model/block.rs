//! The DiT block of MDLM (`DDiTBlock`, design §6.2): pre-norm adaLN with 6-way shift/scale/gate
//! modulation, bias-free LayerNorm, rotary attention (bidirectional; causal in the
//! autoregressive baseline), GELU-tanh MLP.

use burn::module::Module;
use burn::nn::{
    Dropout, DropoutConfig, Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig,
};
use burn::tensor::Device;
use burn::tensor::Tensor;

/// GELU, tanh approximation: `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))` (PyTorch's
/// `approximate="tanh"`), the fused op of [`crate::ops::gelu_tanh`] (one pass forward, one
/// backward; the composed version cost nine passes and scalar `tanhf`, docs/performance.md).
pub use crate::ops::gelu_tanh;
use crate::ops::{LN_EPS, Rope, dropout, layer_norm_modulate, rotary_attention};

/// `lin` applied to `x: [B, L, D]`. In training, as one `[B·L, D]` matmul: burn keeps
/// `[B, L, D] × [D, N]` as B batched products when L fills its row tiles, and their backward
/// was measured 20 % slower on a cpu-bytes training step. Without autodiff (sampling,
/// evaluation) the batched forward, run batch-parallel, measured faster than the single matmul
/// (cpu-bytes sample 14.8–16.3 s against 15.7–17.6 s), so it is kept (docs/performance.md).
///
/// With `bf16`, the product runs in bfloat16 ([`linear_bf16`]).
pub fn rows(lin: &Linear, x: Tensor<3>, bf16: bool) -> Tensor<3> {
    if bf16 {
        return linear_bf16(lin, x);
    }
    if !x.is_autodiff() {
        return lin.forward(x);
    }
    let [b, l, d] = x.dims();
    let y = lin.forward(x.reshape([b * l, d]));
    let n = y.dims()[1];
    y.reshape([b, l, n])
}

/// `lin` on `x: [B, L, D]` with the matmul in bfloat16: input and weight rounded to bf16, the
/// product (accumulated as the backend does: f32 on tensor cores, f32 on flex) returned as f32,
/// the bias added in f32. The weights themselves stay f32 (the master copy the optimiser
/// updates); the casts carry gradients back to them. `[train] precision = "bf16"`.
pub fn linear_bf16(lin: &Linear, x: Tensor<3>) -> Tensor<3> {
    use burn::tensor::FloatDType;
    let [b, l, d] = x.dims();
    let w = lin.weight.val().cast(FloatDType::BF16);
    let y = x
        .reshape([b * l, d])
        .cast(FloatDType::BF16)
        .matmul(w)
        .cast(FloatDType::F32);
    let y = match &lin.bias {
        Some(bias) => y + bias.val().unsqueeze_dim(0),
        None => y,
    };
    let n = y.dims()[1];
    y.reshape([b, l, n])
}

/// A bias-free LayerNorm (learned weight only), ε = 1e-5.
pub fn layer_norm(d: usize, device: &Device) -> LayerNorm {
    LayerNormConfig::new(d)
        .with_bias(false)
        .with_epsilon(LN_EPS)
        .init(device)
}

/// A zero-initialised Linear (weights and bias): the adaLN modulations and the output head.
pub fn zero_linear(d_in: usize, d_out: usize, device: &Device) -> Linear {
    LinearConfig::new(d_in, d_out)
        .with_initializer(Initializer::Zeros)
        .init(device)
}

/// One DiT block.
#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    #[test]
    fn gelu_tanh_matches_burn_and_pytorch_values() {
        let d = Device::default();
        let v = vec![-3.0f32, -1.0, -0.1, 0.0, 0.5, 1.0, 2.5];
        let x = Tensor::<3>::from_data(TensorData::new(v.clone(), [1, 1, 7]), &d);
        let ours: Vec<f32> = gelu_tanh(x.clone()).try_into_vec_as().unwrap();
        let burn: Vec<f32> = burn::tensor::activation::gelu_approximate(x)
            .try_into_vec_as()
            .unwrap();
        for (a, b) in ours.iter().zip(&burn) {
            assert!((a - b).abs() < 1e-6, "{ours:?} vs {burn:?}");
        }
        // torch.nn.functional.gelu(torch.tensor(1.0), approximate="tanh") = 0.8411920
        assert!((ours[5] - 0.841192).abs() < 1e-6);
    }
}

#[derive(Module, Debug)]
pub struct DitBlock {
    norm1: LayerNorm,
    qkv: Linear,
    attn_out: Linear,
    norm2: LayerNorm,
    mlp_in: Linear,
    mlp_out: Linear,
    /// `Linear(cond → 6D)`, zero-initialised: shift/scale/gate for attention and MLP.
    ada_ln: Linear,
    dropout: Dropout,
    n_heads: usize,
    /// Matmuls in bfloat16 (`[train] precision = "bf16"`); set by [`crate::model::Dit::with_bf16_matmuls`].
    pub(crate) bf16: bool,
    /// Causal attention (position i sees positions ≤ i); set by the autoregressive baseline.
    pub(crate) causal: bool,
}

impl DitBlock {
    /// A block of width `d`, `n_heads` heads, MLP width `mlp_ratio·d`, conditioning `cond_dim`.
    pub fn new(
        d: usize,
        n_heads: usize,
        mlp_ratio: usize,
        cond_dim: usize,
        dropout: f64,
        device: &Device,
    ) -> Self {
        DitBlock {
            norm1: layer_norm(d, device),
            qkv: LinearConfig::new(d, 3 * d).with_bias(false).init(device),
            attn_out: LinearConfig::new(d, d).with_bias(false).init(device),
            norm2: layer_norm(d, device),
            mlp_in: LinearConfig::new(d, mlp_ratio * d).init(device),
            mlp_out: LinearConfig::new(mlp_ratio * d, d).init(device),
            ada_ln: zero_linear(cond_dim, 6 * d, device),
            dropout: DropoutConfig::new(dropout).init(),
            n_heads,
            bf16: false,
            causal: false,
        }
    }

    /// # Shapes
    /// `x: [B, L, D]`, `c: [B, cond]`, rotary tables for L positions → `[B, L, D]`.
    pub fn forward(&self, x: Tensor<3>, c: Tensor<2>, rope: &Rope) -> Tensor<3> {
        let [b, _, d] = x.dims();
        let m = self.ada_ln.forward(c).reshape([b, 1, 6 * d]).chunk(6, 2);
        let [
            shift_msa,
            scale_msa,
            gate_msa,
            shift_mlp,
            scale_mlp,
            gate_mlp,
        ]: [Tensor<3>; 6] = m.try_into().expect("chunk(6) gives 6 parts");

        // Attention branch: projection, then rotary attention as one fused op.
        let span = crate::profile::span("attention");
        let xn = layer_norm_modulate(x.clone(), self.norm1.gamma.val(), shift_msa, scale_msa);
        let qkv = rows(&self.qkv, xn, self.bf16);
        let attn = rotary_attention(qkv, self.n_heads, rope, self.causal);
        let attn = rows(&self.attn_out, attn, self.bf16);
        let x = x + gate_msa * dropout(attn, &self.dropout);
        drop(span);
        let _span = crate::profile::span("mlp");

        // MLP branch.
        let xn = layer_norm_modulate(x.clone(), self.norm2.gamma.val(), shift_mlp, scale_mlp);
        let y = rows(
            &self.mlp_out,
            gelu_tanh(rows(&self.mlp_in, xn, self.bf16)),
            self.bf16,
        );
        x + gate_mlp * dropout(y, &self.dropout)
    }
}
