//! What a user fixes before sampling (design §7.2): the sub-tokens of a prompt, of an infilling
//! template (`--infill "Call me [MASK:5]."`) or single digits (`--fix 5.0=3`), as a
//! [`Template`] the sampler fills around. The parsers of those options live here, next to the
//! checks of every size they read.

use crate::error::{Error, Result};
use crate::subtoken::Codec;
use crate::tokenizer::Tokenizer;

/// Sub-tokens fixed before sampling starts (prompt, infilling template, single digits), one entry
/// per sub-token of a sequence (`L·ℓ`, token-major); `None` = free.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub fixed: Vec<Option<u32>>,
}

impl Template {
    /// Nothing fixed. The caller has checked that `seq_len · ell` entries fit in memory.
    pub fn free(seq_len: usize, ell: usize) -> Self {
        Template {
            fixed: vec![None; seq_len * ell],
        }
    }

    /// Fixes whole tokens at `start..`: their ℓ digits.
    pub fn fix_tokens(&mut self, codec: &Codec, start: usize, ids: &[u32]) -> Result<()> {
        let ell = codec.ell();
        let end = start
            .checked_add(ids.len())
            .and_then(|n| n.checked_mul(ell));
        if end.is_none_or(|end| end > self.fixed.len()) {
            return Err(Error::Value(format!(
                "{} fixed tokens from position {start} do not fit in {} tokens; raise --len",
                ids.len(),
                self.fixed.len() / ell
            )));
        }
        for (k, d) in codec.encode(ids)?.into_iter().enumerate() {
            self.fixed[start * ell + k] = Some(d);
        }
        Ok(())
    }

    /// Fixes digit `j` of token `i` to `value`.
    pub fn fix_digit(&mut self, codec: &Codec, i: usize, j: usize, value: u32) -> Result<()> {
        let ell = codec.ell();
        let slot = i.checked_mul(ell).and_then(|k| k.checked_add(j));
        match slot {
            Some(k) if j < ell && k < self.fixed.len() && value < codec.base() => {
                self.fixed[k] = Some(value);
                Ok(())
            }
            _ => Err(Error::Value(format!(
                "cannot fix digit {j} of token {i} to {value}: need token < {}, digit < ell = \
                 {ell}, value < base {}",
                self.fixed.len() / ell,
                codec.base()
            ))),
        }
    }
}

/// Parses an infilling template: `"Call me [MASK:5]. Some years ago [MASK:20] whale."` gives the
/// tokens of the text (`Some(id)`) and `n` free slots (`None`) per `[MASK:n]`. An unclosed
/// `[MASK:`, a count that is not a number, spans that together would not fit in memory, or a
/// template without any span is an error.
pub fn parse_infill(text: &str, tok: &Tokenizer) -> Result<Vec<Option<u32>>> {
    let mut out = Vec::new();
    let mut rest = text;
    let mut masked: u128 = 0;
    while let Some(start) = rest.find("[MASK:") {
        out.extend(tok.encode(&rest[..start]).into_iter().map(Some));
        let after = &rest[start + "[MASK:".len()..];
        let end = after
            .find(']')
            .ok_or_else(|| Error::Value(format!("unclosed [MASK: in {text:?}")))?;
        let n: usize = after[..end].trim().parse().map_err(|_| {
            Error::Value(format!(
                "[MASK:{}] needs a token count, e.g. [MASK:5]",
                &after[..end]
            ))
        })?;
        masked += n as u128;
        // Each slot is an `Option<u32>` here, then ℓ sub-tokens of a sequence.
        crate::limits::check_fits(&format!("[MASK:{n}] in --infill"), masked, 8)?;
        out.extend(std::iter::repeat_n(None, n));
        rest = &after[end + 1..];
    }
    out.extend(tok.encode(rest).into_iter().map(Some));
    if !out.iter().any(Option::is_none) {
        return Err(Error::Value(
            "the --infill template has no [MASK:n] span to fill".into(),
        ));
    }
    Ok(out)
}

/// Parses a `--fix TOKEN.DIGIT=VALUE` spec (`5.0=3`: digit 0 of token 5 is 3).
pub fn parse_fix(spec: &str) -> Result<(usize, usize, u32)> {
    let parsed = spec.split_once('=').and_then(|(pos, v)| {
        pos.split_once('.')
            .map(|(i, j)| (i.trim().parse(), j.trim().parse(), v.trim().parse()))
    });
    match parsed {
        Some((Ok(i), Ok(j), Ok(v))) => Ok((i, j, v)),
        _ => Err(Error::Value(format!(
            "--fix {spec}: write TOKEN.DIGIT=VALUE, e.g. 5.0=3"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infill_gives_text_tokens_and_free_slots() {
        let t = parse_infill("ab[MASK:2]c", &Tokenizer::Bytes).unwrap();
        assert_eq!(t, [Some(97), Some(98), None, None, Some(99)]);
        for (bad, want) in [
            ("x[MASK:3", "unclosed"),
            ("[MASK:x]", "needs a token count"),
            ("no spans", "no [MASK:n] span"),
            ("[MASK:99999999999999999]", "would not fit"),
            (
                "[MASK:1000000000000000000][MASK:1000000000000000000]",
                "would not fit",
            ),
        ] {
            let e = parse_infill(bad, &Tokenizer::Bytes)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn fix_specs_and_out_of_range_digits() {
        assert_eq!(parse_fix("5.0=3").unwrap(), (5, 0, 3));
        assert!(parse_fix("5=3").is_err() && parse_fix("a.0=3").is_err());
        let codec = Codec::new(256, 2).unwrap(); // base 16
        let mut t = Template::free(4, 2);
        t.fix_digit(&codec, 3, 1, 15).unwrap();
        assert_eq!(t.fixed[7], Some(15));
        // Token indices so large that i·ℓ overflows are errors, not a wrapped slot.
        for (i, j, v) in [(4, 0, 0), (0, 2, 0), (0, 0, 16), (usize::MAX / 2 + 1, 0, 0)] {
            assert!(t.fix_digit(&codec, i, j, v).is_err(), "{i}.{j}={v}");
        }
        assert!(t.fix_tokens(&codec, usize::MAX, &[1]).is_err());
        t.fix_tokens(&codec, 2, &[255, 0]).unwrap();
        assert_eq!(&t.fixed[4..], &[Some(15), Some(15), Some(0), Some(0)]);
    }
}
