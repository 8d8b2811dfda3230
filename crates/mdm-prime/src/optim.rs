//! What burn lacks or does differently (stack.md traps): AdamW with PyTorch's semantics and
//! state keyed by parameter path, global-norm gradient clipping, warm-up + constant/cosine LR,
//! and the EMA of weights.

use std::collections::HashMap;

use burn::module::Module;
use burn::tensor::Tensor;
use mdm_prime_core::config::{LrSchedule, TrainConfig};

use crate::params::{map_params, params_by_path};

/// `‖g‖₂` over all gradients together (PyTorch `clip_grad_norm_`'s total norm).
pub fn global_norm(grads: &HashMap<String, Tensor<1>>) -> f64 {
    // Summed in path order: a HashMap's iteration order changes from process to process, and
    // with it the rounding of the f64 sum, the clipping factor and every later weight.
    // One read-back for all parameters (a device sync per parameter would stall a GPU), the
    // per-parameter sums then added on the host in that order. Each sum is `ops::sum_squares`,
    // whose order of additions is fixed: burn-flex's own sum of a tensor of 4 Mi elements or
    // more follows rayon's work stealing and changed the last bits run to run.
    let mut paths: Vec<&String> = grads.keys().collect();
    paths.sort();
    if paths.is_empty() {
        return 0.0;
    }
    let sums: Vec<Tensor<1>> = paths
        .into_iter()
        .map(|p| crate::ops::sum_squares(&grads[p]))
        .collect();
    let sums: Vec<f32> = Tensor::cat(sums, 0)
        .try_into_vec_as()
        .unwrap_or_else(|_| vec![f32::NAN]);
    sums.iter().map(|&s| s as f64).sum::<f64>().sqrt()
}

/// The clipping factor `min(1, max_norm / (norm + 1e-6))` (PyTorch); 1 when clipping is off.
pub fn clip_factor(norm: f64, max_norm: f64) -> f64 {
    if max_norm > 0.0 {
        (max_norm / (norm + 1e-6)).min(1.0)
    } else {
        1.0
    }
}

/// Learning rate at optimiser step `step` (0-based): linear warm-up from `lr/warmup` to `lr`
/// over `warmup_steps` (transformers' `get_constant_schedule_with_warmup`), then constant, or
/// cosine down to `min_lr` at `steps`.
pub fn learning_rate(cfg: &TrainConfig, step: u64) -> f64 {
    if step < cfg.warmup_steps {
        return cfg.lr * (step + 1) as f64 / cfg.warmup_steps as f64;
    }
    match cfg.lr_schedule {
        LrSchedule::Constant => cfg.lr,
        LrSchedule::Cosine => {
            let span = cfg.steps.saturating_sub(cfg.warmup_steps).max(1) as f64;
            let progress = ((step - cfg.warmup_steps) as f64 / span).min(1.0);
            cfg.min_lr
                + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
        }
    }
}

/// AdamW exactly as PyTorch's `torch.optim.AdamW` (decoupled weight decay, bias correction,
/// ε outside the square root), with hyper-parameters always set explicitly.
#[derive(Debug, Clone)]
pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Completed updates (PyTorch's `step`, shared by all parameters).
    pub step: u64,
    /// `(exp_avg, exp_avg_sq)` by parameter path, flattened.
    pub moments: HashMap<String, (Tensor<1>, Tensor<1>)>,
}

impl AdamW {
    pub fn new(cfg: &TrainConfig) -> Self {
        AdamW {
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: cfg.adam_eps,
            weight_decay: cfg.weight_decay,
            step: 0,
            moments: HashMap::new(),
        }
    }

    /// One update of every parameter that has a gradient; `grad_scale` multiplies the
    /// gradients first (the clipping factor).
    pub fn step<M: Module>(
        &mut self,
        module: M,
        grads: &HashMap<String, Tensor<1>>,
        lr: f64,
        grad_scale: f64,
    ) -> M {
        self.step += 1;
        let (b1, b2) = (self.beta1, self.beta2);
        let bc1 = 1.0 - b1.powi(self.step as i32);
        let bc2 = 1.0 - b2.powi(self.step as i32);
        let (eps, wd) = (self.eps, self.weight_decay);
        let moments = &mut self.moments;
        map_params(module, &mut |path, p| {
            let g = grads.get(path)?.clone().mul_scalar(grad_scale);
            let (m, v) = match moments.remove(path) {
                Some(mv) => mv,
                None => (g.zeros_like(), g.zeros_like()),
            };
            let m = m.mul_scalar(b1) + g.clone().mul_scalar(1.0 - b1);
            let v = v.mul_scalar(b2) + g.square().mul_scalar(1.0 - b2);
            let denom = v.clone().div_scalar(bc2).sqrt().add_scalar(eps);
            let p = if wd > 0.0 {
                p.mul_scalar(1.0 - lr * wd)
            } else {
                p
            };
            let p = p - m.clone().div(denom).mul_scalar(lr / bc1);
            moments.insert(path.to_string(), (m, v));
            Some(p)
        })
    }
}

/// EMA decay after `updates` previous updates: `min(decay, (1 + n)/(10 + n))` (design §8.1).
pub fn ema_decay(decay: f64, updates: u64) -> f64 {
    decay.min((1.0 + updates as f64) / (10.0 + updates as f64))
}

/// `ema ← d·ema + (1 − d)·θ` for every parameter, matched by path.
pub fn ema_update<M: Module, N: Module>(ema: N, model: &M, decay: f64) -> N {
    let current = params_by_path(model);
    map_params(ema, &mut |path, e| {
        let theta = current.get(path)?.clone();
        Some(e.mul_scalar(decay) + theta.mul_scalar(1.0 - decay))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn global_norm_does_not_depend_on_the_map_order() {
        // Squares 1e16 and eight 1s: in f64, 1e16 + 1 = 1e16, so the sum depends on the order
        // (1e16 first: 1e16; the ones first: 1e16 + 8). Each new HashMap iterates in its own
        // order; the norm must not.
        let d = Device::default();
        let t = |v: f32| Tensor::<1>::from_data(TensorData::new(vec![v], [1]), &d);
        let norms: Vec<u64> = (0..16)
            .map(|_| {
                let mut g = HashMap::new();
                g.insert("big".to_string(), t(1e8));
                for k in 0..8 {
                    g.insert(format!("one{k}"), t(1.0));
                }
                global_norm(&g).to_bits()
            })
            .collect();
        assert!(norms.iter().all(|&n| n == norms[0]), "{norms:?}");
    }

    #[derive(Module, Debug)]
    struct Toy {
        w: Param<Tensor<2>>,
    }

    #[test]
    fn adamw_matches_pytorch_by_hand() {
        // One parameter w = [1, -2], gradient g = 2w (loss = Σ w²), lr 0.1, wd 0.01.
        // Step 1 by hand: m = 0.1 g, v = 0.001 g², m̂ = g, v̂ = g², update = g/(|g| + ε) ≈ sign(g).
        // w ← w(1 − lr·wd) − lr·sign(g) = [1·0.999 − 0.1, −2·0.999 + 0.1] = [0.899, −1.898].
        let d = Device::default().autodiff();
        let toy = Toy {
            w: Param::from_tensor(
                Tensor::from_data(TensorData::new(vec![1.0f32, -2.0], [1, 2]), &d).require_grad(),
            ),
        };
        let cfg = TrainConfig {
            weight_decay: 0.01,
            ..TrainConfig::default()
        };
        let mut opt = AdamW::new(&cfg);
        let loss = toy.w.val().square().sum();
        let grads = crate::params::grads_by_path(&toy, &loss.backward());
        assert_eq!(grads.len(), 1);
        let toy = opt.step(toy, &grads, 0.1, 1.0);
        let w: Vec<f32> = toy.w.val().try_into_vec_as().unwrap();
        assert!(
            (w[0] - 0.899).abs() < 1e-6 && (w[1] + 1.898).abs() < 1e-6,
            "{w:?}"
        );
        assert!(
            toy.w.val().is_require_grad(),
            "updated parameters stay trainable"
        );
    }

    #[test]
    fn lr_warmup_then_constant_or_cosine() {
        let cfg = TrainConfig {
            lr: 1.0,
            warmup_steps: 4,
            steps: 14,
            ..TrainConfig::default()
        };
        assert_eq!(learning_rate(&cfg, 0), 0.25);
        assert_eq!(learning_rate(&cfg, 3), 1.0);
        assert_eq!(learning_rate(&cfg, 100), 1.0);
        let cos = TrainConfig {
            lr_schedule: LrSchedule::Cosine,
            min_lr: 0.0,
            ..cfg
        };
        assert!(
            (learning_rate(&cos, 9) - 0.5).abs() < 1e-12,
            "half-way down"
        );
        assert!(learning_rate(&cos, 14).abs() < 1e-12);
    }

    #[test]
    fn clipping_and_ema_decay() {
        assert_eq!(clip_factor(0.5, 1.0), 1.0);
        assert!((clip_factor(4.0, 1.0) - 1.0 / (4.0 + 1e-6)).abs() < 1e-15);
        assert_eq!(clip_factor(4.0, 0.0), 1.0);
        assert_eq!(ema_decay(0.9999, 0), 0.1);
        assert_eq!(ema_decay(0.9999, 10), 11.0 / 20.0);
        assert_eq!(ema_decay(0.5, 1000), 0.5);
        let d = Device::default();
        let mut grads = HashMap::new();
        grads.insert(
            "a".to_string(),
            Tensor::<1>::from_data(TensorData::new(vec![3.0f32], [1]), &d),
        );
        grads.insert(
            "b".to_string(),
            Tensor::<1>::from_data(TensorData::new(vec![4.0f32], [1]), &d),
        );
        assert!((global_norm(&grads) - 5.0).abs() < 1e-9);
    }
}
