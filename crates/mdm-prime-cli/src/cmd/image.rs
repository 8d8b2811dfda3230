//! Image runs: sample grids, imputation grids (original / observed / completions), and the
//! rendering of a partially observed image.

use std::path::Path;

use anyhow::{Context, bail};
use burn::tensor::Device;
use mdm_prime::checkpoint::write_atomic;
use mdm_prime::model::Denoiser;
use mdm_prime::sampler::{Sample, SampleSettings, Template, sample_each, sample_unconditional};
use mdm_prime::subtoken::PrimeTables;
use mdm_prime_core::Codec;
use mdm_prime_core::config::{DataKind, RunConfig};
use mdm_prime_core::data::image::{ImageShape, Images, write_png_grid};
use serde_json::json;

/// The image shape of a run, or an error saying that this is a text run.
pub fn shape_of(cfg: &RunConfig, command: &str) -> anyhow::Result<ImageShape> {
    match (cfg.data.kind, cfg.data.image) {
        (DataKind::Image, Some(shape)) => Ok(shape),
        (DataKind::Image, None) => bail!(
            "{command}: the run's config has [data] kind = \"image\" but no image shape; it was \
             not trained by this program (train writes the shape into config.toml)"
        ),
        (DataKind::Text, _) => bail!(
            "{command} works on image runs, and this is a text run ([data] kind = \"text\", \
             source {}); use `mdm-prime sample` for text",
            cfg.data.source
        ),
    }
}

/// `n` unconditional samples as a PNG grid (`cols` wide) and JSON lines (tokens, NFE, idle steps).
#[allow(clippy::too_many_arguments)]
pub fn sample_grid<M: Denoiser>(
    model: &M,
    tables: &PrimeTables,
    cfg: &RunConfig,
    settings: &SampleSettings,
    n: usize,
    png: &Path,
    jsonl: &Path,
    device: &Device,
    progress: &mut dyn FnMut(usize, usize),
) -> anyhow::Result<Vec<Sample>> {
    let shape = shape_of(cfg, "sample")?;
    let samples = sample_unconditional(model, tables, cfg, settings, n, device, progress)?;
    let images: Vec<&[u32]> = samples.iter().map(|s| s.tokens.as_slice()).collect();
    make_parent(png)?;
    write_png_grid(png, &images, shape, grid_cols(n))?;
    let mut lines = String::new();
    for (k, s) in samples.iter().enumerate() {
        let line = json!({"index": k, "tokens": s.tokens, "nfe": s.nfe, "idle_steps": s.idle_steps,
            "steps": s.steps, "invalid_codes": s.invalid_codes, "seed": settings.seed,
            "shape": [shape.height, shape.width, shape.channels]});
        lines.push_str(&format!("{line}\n"));
    }
    make_parent(jsonl)?;
    write_atomic(jsonl, lines.as_bytes())?;
    Ok(samples)
}

/// Writes each sample as its own PNG, `dir/<prefix><index:06>.png` (for `mdm-prime fid` and
/// other tools that read folders of images), and returns them as [`Images`].
pub fn write_pngs(
    samples: &[Sample],
    shape: ImageShape,
    dir: &Path,
    prefix: &str,
) -> anyhow::Result<Images> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (k, s) in samples.iter().enumerate() {
        write_png_grid(
            &dir.join(format!("{prefix}{k:06}.png")),
            &[&s.tokens],
            shape,
            1,
        )?;
    }
    Ok(Images::from_tokens(
        shape,
        samples.iter().map(|s| s.tokens.as_slice()),
    )?)
}

/// Completes each of `originals` `completions` times from the sub-tokens `observed` flags
/// (one per sub-token, the same for every image) and writes one PNG: a row of originals, a row of
/// what was observed, then one row per completion. Returns the completions, image-major.
#[allow(clippy::too_many_arguments)]
pub fn impute_grid<M: Denoiser>(
    model: &M,
    tables: &PrimeTables,
    cfg: &RunConfig,
    settings: &SampleSettings,
    originals: &[&[u32]],
    observed: &[bool],
    completions: usize,
    png: &Path,
    device: &Device,
    progress: &mut dyn FnMut(usize, usize),
) -> anyhow::Result<Vec<Sample>> {
    let shape = shape_of(cfg, "impute")?;
    let codec = tables.codec();
    let mut templates = Vec::new();
    let mut observed_images = Vec::new();
    for img in originals {
        let y0 = codec.encode(img)?;
        let fixed: Vec<Option<u32>> = y0
            .iter()
            .zip(observed)
            .map(|(&d, &o)| o.then_some(d))
            .collect();
        observed_images.push(render_observed(codec, &fixed));
        for _ in 0..completions {
            templates.push(Template {
                fixed: fixed.clone(),
            });
        }
    }
    let (samples, _) = sample_each(
        model,
        tables,
        cfg.solver(),
        settings,
        &templates,
        0,
        device,
        progress,
    )?;
    let mut grid: Vec<&[u32]> = originals.to_vec();
    grid.extend(observed_images.iter().map(|v| v.as_slice()));
    for c in 0..completions {
        grid.extend((0..originals.len()).map(|i| samples[i * completions + c].tokens.as_slice()));
    }
    make_parent(png)?;
    write_png_grid(png, &grid, shape, originals.len())?;
    Ok(samples)
}

/// A partially observed image as pixels: unobserved digits take the middle value ⌊b/2⌋ (so a
/// fully unobserved pixel is mid-grey and an observed most significant digit shows its bucket),
/// clamped to V − 1.
pub fn render_observed(codec: &Codec, fixed: &[Option<u32>]) -> Vec<u32> {
    let (ell, b) = (codec.ell(), codec.base() as u64);
    fixed
        .chunks_exact(ell)
        .map(|digits| {
            let code = digits
                .iter()
                .fold(0u64, |acc, d| acc * b + d.map_or(b / 2, u64::from));
            code.min(codec.vocab_size() as u64 - 1) as u32
        })
        .collect()
}

/// Columns of a grid of n images: about square.
pub fn grid_cols(n: usize) -> usize {
    ((n as f64).sqrt().ceil() as usize).max(1)
}

fn make_parent(path: &Path) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observed_rendering() {
        let codec = Codec::new(256, 2).unwrap(); // b = 16
        let fixed = [Some(15), Some(15), Some(3), None, None, None];
        // 255; 3·16 + 8 = 56; 8·16 + 8 = 136.
        assert_eq!(render_observed(&codec, &fixed), vec![255, 56, 136]);
        let codec3 = Codec::new(256, 3).unwrap(); // b = 7: 6·49 + 3·7 + 3 = 318 → 255
        assert_eq!(render_observed(&codec3, &[Some(6), None, None]), vec![255]);
        assert_eq!(grid_cols(16), 4);
        assert_eq!(grid_cols(5), 3);
    }
}
