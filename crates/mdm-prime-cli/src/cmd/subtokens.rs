//! `mdm-prime subtokens`: token ids (or a text's tokens) and their ℓ base-b digits.

use std::io::Write;

use anyhow::bail;
use mdm_prime_core::{Codec, Tokenizer, TokenizerKind};

use crate::args::SubtokensArgs;

pub fn run(args: SubtokensArgs) -> anyhow::Result<()> {
    let tokenizer = match &args.tokenizer {
        Some(name) => Some(Tokenizer::new(name.parse::<TokenizerKind>()?)?),
        None => None,
    };
    let vocab = match (args.vocab, &tokenizer) {
        (Some(v), Some(t)) if v != t.vocab_size() => bail!(
            "--vocab {v} disagrees with tokenizer {} (V = {}); drop --vocab or change it",
            t.kind(),
            t.vocab_size()
        ),
        (Some(v), _) => v,
        (None, Some(t)) => t.vocab_size(),
        (None, None) => bail!("give --vocab V or --tokenizer gpt2|bytes"),
    };
    let codec = Codec::new(vocab, args.ell)?;
    let ids = match (&args.text, &tokenizer) {
        (Some(text), Some(t)) => t.encode(text),
        _ if args.ids.is_empty() => bail!("nothing to show: give --ids 1,2,3 or --text \"...\""),
        _ => args.ids.clone(),
    };

    // Check every id before printing anything.
    let rows = ids
        .iter()
        .map(|&id| codec.digits(id).map(|d| (id, d)))
        .collect::<Result<Vec<_>, _>>()?;

    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "# V = {vocab}, ell = {}, base = {}, mask id = {}, codes b^ell = {} ({} invalid)",
        codec.ell(),
        codec.base(),
        codec.mask_id(),
        codec.num_codes(),
        codec.num_codes() - vocab as u64
    )?;
    for (id, digits) in rows {
        let digits: Vec<String> = digits.iter().map(u32::to_string).collect();
        write!(out, "{id} {}", digits.join(" "))?;
        if let Some(t) = &tokenizer {
            write!(out, "\t{:?}", t.decode_lossy(&[id])?)?;
        }
        writeln!(out)?;
    }
    Ok(())
}
