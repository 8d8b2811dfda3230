//! Tokenising documents into one stream (EOS after each document), through the token cache.

use std::path::Path;

use super::cache::{cache_path, read_cache, write_cache};
use super::corpus::CorpusSource;
use crate::error::Result;
use crate::tokenizer::Tokenizer;

/// Tokenises documents the MDLM way (design §8.1): each without special tokens, EOS
/// ([`Tokenizer::eos`]) appended after each, all concatenated. For `bytes`, EOS is byte 0, so a
/// NUL inside a document reads as a separator.
pub fn tokenize_documents(docs: &[String], tokenizer: &Tokenizer) -> Vec<u32> {
    let eos = tokenizer.eos();
    let mut out = Vec::with_capacity(docs.iter().map(|d| d.len() / 3 + 1).sum());
    for doc in docs {
        out.extend(tokenizer.encode(doc));
        out.push(eos);
    }
    out
}

/// A tokenised corpus before wrapping: [`tokenize_documents`] of its documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenStream {
    /// The concatenated tokens, EOS after each document.
    pub tokens: Vec<u32>,
    /// How many documents.
    pub n_documents: usize,
    /// Whether it was read from the cache.
    pub from_cache: bool,
}

/// Reads and tokenises `source`, through the cache under `cache_dir` when given (created if
/// missing): a valid cache file is read instead of tokenising; a missing, stale or corrupt one
/// is (re)written after tokenising. Errors: those of [`CorpusSource::read_documents`], and a
/// cache file that cannot be written.
pub fn load_tokens(
    source: &CorpusSource,
    tokenizer: &Tokenizer,
    cache_dir: Option<&Path>,
) -> Result<TokenStream> {
    let cache_file = match cache_dir {
        Some(dir) => cache_path(dir, source, tokenizer)?,
        None => None,
    };
    if let Some(path) = &cache_file
        && let Some((tokens, n_documents)) = read_cache(path, tokenizer)
    {
        return Ok(TokenStream {
            tokens,
            n_documents,
            from_cache: true,
        });
    }
    let docs = source.read_documents()?;
    let tokens = tokenize_documents(&docs, tokenizer);
    if let Some(path) = &cache_file {
        write_cache(path, &tokens, docs.len())?;
    }
    Ok(TokenStream {
        tokens,
        n_documents: docs.len(),
        from_cache: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenize_appends_eos_after_each_document() {
        let docs = vec!["ab".to_owned(), "c".to_owned()];
        assert_eq!(
            tokenize_documents(&docs, &Tokenizer::Bytes),
            vec![97, 98, 0, 99, 0]
        );
    }
}
