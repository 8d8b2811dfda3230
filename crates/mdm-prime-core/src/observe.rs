//! What is observed of an image when the rest is imputed (conditional generation from partial
//! observations, design §7.3): whole pixels in a region or at random, and/or chosen digit slots
//! of every pixel (e.g. the most significant digit). The result is one flag per sub-token, in the
//! token-major layout of a sequence (`(h·W + w)·C + c` tokens, ℓ digits each).

use std::str::FromStr;

use rand::{Rng, RngExt};

use crate::data::image::ImageShape;
use crate::error::{Error, Result};

/// One kind of observation; several combine by union.
#[derive(Debug, Clone, PartialEq)]
pub enum Observe {
    /// Every pixel with w < W/2 (all channels, all digits).
    LeftHalf,
    /// Every pixel with w ≥ W/2.
    RightHalf,
    /// Every pixel with h < H/2.
    TopHalf,
    /// Every pixel with h ≥ H/2.
    BottomHalf,
    /// Everything except a centred square of this side, which is left to fill.
    Border(usize),
    /// Only a centred square of this side.
    Center(usize),
    /// Each pixel (all channels) with this probability.
    Random(f64),
    /// These digit slots (0 = most significant) of every pixel channel.
    Digits(Vec<usize>),
}

const FORMS: &str = "left-half, right-half, top-half, bottom-half, center:S (only a centred \
                     S×S square), border:S (all but a centred S×S square), random:F (each pixel \
                     with probability F), digits:J[,J…] (digit slots, 0 = most significant)";

impl FromStr for Observe {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: String| Error::Value(format!("--observe {s}: {why}; forms: {FORMS}"));
        let (name, arg) = s.trim().split_once(':').unwrap_or((s.trim(), ""));
        let side = || {
            arg.parse::<usize>()
                .map_err(|_| bad("needs a side in pixels, e.g. center:14".into()))
        };
        Ok(match name {
            "left-half" => Observe::LeftHalf,
            "right-half" => Observe::RightHalf,
            "top-half" => Observe::TopHalf,
            "bottom-half" => Observe::BottomHalf,
            "center" => Observe::Center(side()?),
            "border" => Observe::Border(side()?),
            "random" => match arg.parse::<f64>() {
                Ok(f) if (0.0..=1.0).contains(&f) => Observe::Random(f),
                _ => return Err(bad("needs a fraction in [0, 1], e.g. random:0.3".into())),
            },
            "digits" => {
                let slots: std::result::Result<Vec<usize>, _> =
                    arg.split(',').map(|j| j.trim().parse()).collect();
                match slots {
                    Ok(v) if !v.is_empty() => Observe::Digits(v),
                    _ => return Err(bad("needs digit slots, e.g. digits:0 or digits:0,6".into())),
                }
            }
            _ => return Err(bad("unknown form".into())),
        })
    }
}

/// Which of the `L·ℓ` sub-tokens of an image are observed under the union of `obs`.
/// `rng` is drawn from only by [`Observe::Random`]. A digit slot ≥ ℓ or a square larger than the
/// image is an error.
pub fn observed_slots(
    obs: &[Observe],
    shape: ImageShape,
    ell: usize,
    rng: &mut impl Rng,
) -> Result<Vec<bool>> {
    let (hh, ww, cc) = (shape.height, shape.width, shape.channels);
    let mut out = vec![false; shape.tokens() * ell];
    let mark_pixel = |out: &mut Vec<bool>, h: usize, w: usize| {
        for c in 0..cc {
            let k = shape.index(h, w, c) * ell;
            out[k..k + ell].iter_mut().for_each(|o| *o = true);
        }
    };
    for o in obs {
        let in_square = |side: usize, h: usize, w: usize| {
            let (top, left) = ((hh - side) / 2, (ww - side) / 2);
            (top..top + side).contains(&h) && (left..left + side).contains(&w)
        };
        if let Observe::Center(side) | Observe::Border(side) = o
            && (*side > hh || *side > ww)
        {
            return Err(Error::Value(format!(
                "--observe: a {side}×{side} square does not fit in a {shape} image"
            )));
        }
        match o {
            Observe::Digits(slots) => {
                if let Some(&j) = slots.iter().find(|&&j| j >= ell) {
                    return Err(Error::Value(format!(
                        "--observe digits:{j}: the run has ell = {ell} digits per pixel (slots 0..{})",
                        ell - 1
                    )));
                }
                for k in 0..shape.tokens() {
                    for &j in slots {
                        out[k * ell + j] = true;
                    }
                }
            }
            _ => {
                for h in 0..hh {
                    for w in 0..ww {
                        let keep = match o {
                            Observe::LeftHalf => w < ww / 2,
                            Observe::RightHalf => w >= ww / 2,
                            Observe::TopHalf => h < hh / 2,
                            Observe::BottomHalf => h >= hh / 2,
                            Observe::Center(s) => in_square(*s, h, w),
                            Observe::Border(s) => !in_square(*s, h, w),
                            Observe::Random(f) => rng.random::<f64>() < *f,
                            Observe::Digits(_) => unreachable!("handled above"),
                        };
                        if keep {
                            mark_pixel(&mut out, h, w);
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn regions_and_digits() {
        let shape = ImageShape::new(4, 4, 1);
        let mut rng = StdRng::seed_from_u64(0);
        let left = observed_slots(&[Observe::LeftHalf], shape, 2, &mut rng).unwrap();
        // Token (h, w) has slots 2k, 2k+1 with k = 4h + w: observed iff w < 2.
        for h in 0..4 {
            for w in 0..4 {
                let k = 4 * h + w;
                assert_eq!(left[2 * k], w < 2);
                assert_eq!(left[2 * k + 1], w < 2);
            }
        }
        let msd = observed_slots(&[Observe::Digits(vec![0])], shape, 2, &mut rng).unwrap();
        assert!(msd.chunks(2).all(|d| d == [true, false]));
        let both = observed_slots(
            &[Observe::RightHalf, Observe::Digits(vec![0])],
            shape,
            2,
            &mut rng,
        )
        .unwrap();
        assert_eq!(both.iter().filter(|&&o| o).count(), 16 + 8);
        let center = observed_slots(&[Observe::Center(2)], shape, 1, &mut rng).unwrap();
        let idx: Vec<usize> = (0..16).filter(|&k| center[k]).collect();
        assert_eq!(idx, vec![5, 6, 9, 10]);
        let border = observed_slots(&[Observe::Border(2)], shape, 1, &mut rng).unwrap();
        assert!((0..16).all(|k| border[k] != center[k]));
    }

    #[test]
    fn rgb_pixels_are_observed_whole_and_random_fraction_is_close() {
        let shape = ImageShape::new(2, 2, 3);
        let mut rng = StdRng::seed_from_u64(1);
        let top = observed_slots(&[Observe::TopHalf], shape, 4, &mut rng).unwrap();
        assert_eq!(top.iter().filter(|&&o| o).count(), 2 * 3 * 4);
        assert!(top[..24].iter().all(|&o| o) && top[24..].iter().all(|&o| !o));
        let big = ImageShape::new(100, 100, 1);
        let r = observed_slots(&[Observe::Random(0.3)], big, 1, &mut rng).unwrap();
        let frac = r.iter().filter(|&&o| o).count() as f64 / 10_000.0;
        assert!((frac - 0.3).abs() < 5.0 * (0.3f64 * 0.7 / 10_000.0).sqrt());
    }

    #[test]
    fn parse_and_errors() {
        assert_eq!("center:14".parse::<Observe>().unwrap(), Observe::Center(14));
        assert_eq!(
            "digits:0,6".parse::<Observe>().unwrap(),
            Observe::Digits(vec![0, 6])
        );
        assert_eq!(
            "random:0.5".parse::<Observe>().unwrap(),
            Observe::Random(0.5)
        );
        for bad in ["upper-half", "center", "random:2", "digits:", "digits:a"] {
            let e = bad.parse::<Observe>().unwrap_err().to_string();
            assert!(e.contains("forms:"), "{bad}: {e}");
        }
        let mut rng = StdRng::seed_from_u64(0);
        let shape = ImageShape::new(4, 4, 1);
        let e = observed_slots(&[Observe::Digits(vec![2])], shape, 2, &mut rng).unwrap_err();
        assert!(e.to_string().contains("ell = 2"));
        let e = observed_slots(&[Observe::Center(5)], shape, 2, &mut rng).unwrap_err();
        assert!(e.to_string().contains("does not fit"));
    }
}
