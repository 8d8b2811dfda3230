//! Which training/evaluation objective (design §4). The tensor implementations live in the
//! `mdm-prime` crate (`objective.rs`); this enum is what configs and reports name.

use serde::{Deserialize, Serialize};

/// The two per-token objectives of design §4.5. Both equal MDLM's objective when ℓ = 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// The paper's token-joint objective (§4.1–4.2): `−log p_θ(x₀ⁱ | y_t) · w(t)` for every
    /// token. **Not an upper bound on the NLL when ℓ > 1** (§4.5); it can fall below the entropy.
    Paper,
    /// The valid sub-token bound (§4.5): `Σ_{j masked} −log p̄_θ(y₀^{i,j} | y_t) · w(t)`, with
    /// `p̄` the digit marginal. This is what perplexity is reported from.
    Elbo,
    /// The paper's image recipe (§4.4): unweighted cross-entropy `−log p_θ(x₀ⁱ | y_t)` over
    /// every token, masked or not. A training loss only, not a likelihood.
    #[serde(rename = "cross_entropy")]
    CrossEntropy,
}

impl Objective {
    /// The label used in reports.
    pub fn label(&self) -> &'static str {
        match self {
            Objective::Paper => "paper objective (not a bound when ell > 1)",
            Objective::Elbo => "sub-token ELBO (valid bound)",
            Objective::CrossEntropy => "unweighted cross-entropy (image training recipe)",
        }
    }
}

impl std::str::FromStr for Objective {
    type Err = String;

    /// The names [`Display`](std::fmt::Display) writes (and configs use).
    fn from_str(s: &str) -> Result<Self, String> {
        [Objective::Paper, Objective::Elbo, Objective::CrossEntropy]
            .into_iter()
            .find(|o| o.to_string() == s)
            .ok_or_else(|| format!("unknown objective {s}: use paper, elbo or cross_entropy"))
    }
}

impl std::fmt::Display for Objective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Objective::Paper => "paper",
            Objective::Elbo => "elbo",
            Objective::CrossEntropy => "cross_entropy",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_an_unknown_one_is_named() {
        for o in [Objective::Paper, Objective::Elbo, Objective::CrossEntropy] {
            assert_eq!(o.to_string().parse::<Objective>(), Ok(o));
        }
        let err = "bound".parse::<Objective>().unwrap_err();
        assert!(err.contains("bound") && err.contains("elbo"), "{err}");
    }
}
