//! The sampler's controls beyond the text sampler of design §7.1: the image solvers of §7.3.
//!
//! - [`DrawMode`]: how revealed digits get their values. `Joint` draws one whole token x̂ from
//!   the (filtered) token distribution and gives each revealed digit x̂'s digit (§7.1, and the
//!   image `MDM_Prime_EulerSolver`); `Marginals` draws each revealed digit independently from its
//!   digit marginal `p̄_j(v) = Σ_{x : f(x)_j = v} p(x)` ([`crate::Codec::digit_marginals`]) (the image `MDM_Prime_CO_EulerSolver`), which
//!   can form invalid codes when b^ℓ > V and the filter is off.
//! - [`Warp`]: the time warp `g(τ) = 1 − a(1 − τ)^p + c` of the image grid, in flow time τ
//!   (τ = 0 masked, τ = 1 data; this project's t = 1 − τ). `(1, 1, 0)` is the identity.
//! - [`Tempering`]: logits divided by `a·τ^p + c` at flow time τ; `(1, 0, 0)` is the identity,
//!   `(−0.2, 2, 1)` gives `1 − 0.2τ²`, sharper toward the data end.
//!
//! [`Solver`] bundles them with the schedule; `Solver::from(&schedule)` is the text sampler.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::sampling::time_grid;
use crate::schedule::Schedule;

/// How the digits revealed at a step get their values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DrawMode {
    /// One token x̂ per position from the token distribution; revealed digits take x̂'s digits.
    #[default]
    Joint,
    /// Each revealed digit drawn independently from its marginal.
    Marginals,
}

/// The time warp `g(τ) = 1 − a(1 − τ)^p + c` (design §7.3), as `[a, p, c]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Warp(pub [f64; 3]);

impl Warp {
    /// `g(τ)`, clamped to [0, 1].
    pub fn apply(&self, tau: f64) -> f64 {
        let [a, p, c] = self.0;
        (1.0 - a * (1.0 - tau).powf(p) + c).clamp(0.0, 1.0)
    }
}

/// The temperature schedule `a·τ^p + c` (design §7.3), as `[a, p, c]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Tempering(pub [f64; 3]);

impl Tempering {
    /// The identity `(1, 0, 0)`: temperature 1 at every time.
    pub const IDENTITY: Tempering = Tempering([1.0, 0.0, 0.0]);

    /// The temperature at this project's time t (flow time τ = 1 − t): `a·τ^p + c`.
    pub fn at(&self, t: f64) -> f64 {
        let [a, p, c] = self.0;
        a * (1.0 - t).powf(p) + c
    }
}

/// Everything about a reverse process that is not the network: schedule, grid, draws, tempering.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Solver {
    pub schedule: Schedule,
    pub draw: DrawMode,
    /// `None`: the text grid `linspace(1, 1e-5, T+1)` (§7.1); `Some`: the image grid
    /// `t_i = 1 − g(i/T)` (§7.3).
    pub warp: Option<Warp>,
    pub tempering: Tempering,
}

impl From<&Schedule> for Solver {
    /// The text sampler of §7.1: joint draws, the text grid, no tempering schedule.
    fn from(schedule: &Schedule) -> Self {
        Solver {
            schedule: *schedule,
            draw: DrawMode::Joint,
            warp: None,
            tempering: Tempering::IDENTITY,
        }
    }
}

impl Solver {
    /// The T + 1 times of a T-step reverse process, from t = 1 (masked) down.
    pub fn grid(&self, steps: usize) -> Vec<f64> {
        match self.warp {
            None => time_grid(steps),
            Some(w) => (0..=steps)
                .map(|i| 1.0 - w.apply(i as f64 / steps as f64))
                .collect(),
        }
    }

    /// Checks that the grid runs from masked toward data (never backwards, not standing still)
    /// and that the temperature stays positive.
    pub fn validate(&self, steps: usize) -> Result<()> {
        let grid = self.grid(steps.max(1));
        let last = grid[grid.len() - 1];
        if grid.windows(2).any(|w| w[1] > w[0]) || grid[0] <= last {
            return Err(Error::config(
                "sample.time_warp",
                format!(
                    "{:?} makes time run backwards or stand still (the README's (1, 0, 0) is \
                     g ≡ 0, design §7.3); (1, 1, 0) is the identity",
                    self.warp.map(|w| w.0)
                ),
            ));
        }
        if grid.iter().any(|&t| self.tempering.at(t) <= 0.0) {
            return Err(Error::config(
                "sample.temperature_schedule",
                format!(
                    "{:?} reaches a temperature ≤ 0; (1, 0, 0) is the identity",
                    self.tempering.0
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warp_and_tempering_formulas() {
        // Identity warp (1, 1, 0): g(τ) = τ, so the image grid is t_i = 1 − i/T.
        let s = Solver {
            warp: Some(Warp([1.0, 1.0, 0.0])),
            ..Solver::from(&Schedule::Polynomial { n: 3.0 })
        };
        let g = s.grid(4);
        for (i, t) in g.iter().enumerate() {
            assert!((t - (1.0 - i as f64 / 4.0)).abs() < 1e-15);
        }
        // (1, 1.7, 0) at τ = 0.5: 1 − 0.5^1.7 = 1 − 0.307786 = 0.692214 (to 6 places).
        assert!((Warp([1.0, 1.7, 0.0]).apply(0.5) - 0.692214).abs() < 1e-6);
        // The degenerate README warp (1, 0, 0): g ≡ 0 (design §7.3), clamped times all 1.
        assert!(Warp([1.0, 0.0, 0.0]).apply(0.3).abs() < 1e-15);
        // Tempering (−0.2, 2, 1) at t = 0.25 (τ = 0.75): 1 − 0.2·0.5625 = 0.8875.
        assert!((Tempering([-0.2, 2.0, 1.0]).at(0.25) - 0.8875).abs() < 1e-15);
        assert_eq!(Tempering::IDENTITY.at(0.3), 1.0);
        assert!(s.validate(8).is_ok());
        let bad = Solver {
            tempering: Tempering([-2.0, 1.0, 1.0]),
            ..s
        };
        assert!(
            bad.validate(8)
                .unwrap_err()
                .to_string()
                .contains("temperature")
        );
        let backwards = Solver {
            warp: Some(Warp([-1.0, 1.0, 0.0])),
            ..s
        };
        assert!(backwards.validate(8).is_err());
        let degenerate = Solver {
            warp: Some(Warp([1.0, 0.0, 0.0])),
            ..s
        };
        assert!(degenerate.validate(8).is_err());
    }

    #[test]
    fn text_solver_uses_the_text_grid() {
        // linspace(1, 1e-5, T + 1) (design §7.1): t_0 = 1, t_T = 1e-5, step (1 − 1e-5)/T.
        let g = Solver::from(&Schedule::default()).grid(16);
        assert_eq!((g.len(), g[0]), (17, 1.0));
        assert!((g[16] - 1e-5).abs() < 1e-15);
        assert!((g[1] - (1.0 - 0.99999 / 16.0)).abs() < 1e-15);
    }
}
