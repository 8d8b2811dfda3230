//! Tokenizers: `bytes` (V = 256, no vocabulary file) and `gpt2` (tiktoken-rs r50k_base,
//! V = 50257, `<|endoftext|>` = 50256), both fully offline.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// GPT-2's `<|endoftext|>`, used as both BOS and EOS (design §8.1).
pub const GPT2_EOS: u32 = 50256;

/// The tokenizers this project ships.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenizerKind {
    /// UTF-8 bytes, V = 256. There is no spare id, so documents are separated by byte 0 (NUL).
    Bytes,
    /// GPT-2 BPE (r50k_base), V = 50257; EOS = BOS = 50256.
    Gpt2,
}

impl std::str::FromStr for TokenizerKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "bytes" => Ok(TokenizerKind::Bytes),
            "gpt2" => Ok(TokenizerKind::Gpt2),
            other => Err(Error::Tokenizer(format!(
                "unknown tokenizer `{other}`: choose `gpt2` (GPT-2 BPE, V = 50257) or `bytes` (V = 256)"
            ))),
        }
    }
}

impl std::fmt::Display for TokenizerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenizerKind::Bytes => "bytes",
            TokenizerKind::Gpt2 => "gpt2",
        })
    }
}

/// A loaded tokenizer.
pub enum Tokenizer {
    /// See [`TokenizerKind::Bytes`].
    Bytes,
    /// See [`TokenizerKind::Gpt2`].
    Gpt2(Box<tiktoken_rs::CoreBPE>),
}

impl Tokenizer {
    /// Loads a tokenizer (GPT-2's ranks are embedded in tiktoken-rs: no file, no network).
    pub fn new(kind: TokenizerKind) -> Result<Self> {
        Ok(match kind {
            TokenizerKind::Bytes => Tokenizer::Bytes,
            TokenizerKind::Gpt2 => Tokenizer::Gpt2(Box::new(
                tiktoken_rs::r50k_base().map_err(|e| Error::Tokenizer(e.to_string()))?,
            )),
        })
    }

    /// Which tokenizer this is.
    pub fn kind(&self) -> TokenizerKind {
        match self {
            Tokenizer::Bytes => TokenizerKind::Bytes,
            Tokenizer::Gpt2(_) => TokenizerKind::Gpt2,
        }
    }

    /// Vocabulary size V.
    pub fn vocab_size(&self) -> u32 {
        match self {
            Tokenizer::Bytes => 256,
            Tokenizer::Gpt2(_) => 50257,
        }
    }

    /// The document separator / EOS id (also used as BOS).
    pub fn eos(&self) -> u32 {
        match self {
            Tokenizer::Bytes => 0,
            Tokenizer::Gpt2(_) => GPT2_EOS,
        }
    }

    /// Token ids of `text`, without special tokens (`<|endoftext|>` in text is plain text).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        match self {
            Tokenizer::Bytes => text.bytes().map(u32::from).collect(),
            Tokenizer::Gpt2(bpe) => bpe.encode_ordinary(text),
        }
    }

    /// Token ids of `text` in which the EOS written out (`<|endoftext|>` for GPT-2, a NUL byte
    /// for bytes) is the EOS id: how `mdm-prime sample --no-truncate` text, which prints EOS
    /// that way, reads back.
    pub fn encode_with_eos(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Tokenizer::Bytes => Ok(self.encode(text)),
            Tokenizer::Gpt2(bpe) => {
                let allowed = std::collections::HashSet::from(["<|endoftext|>"]);
                bpe.encode(text, &allowed)
                    .map(|(ids, _)| ids)
                    .map_err(|e| Error::Tokenizer(e.to_string()))
            }
        }
    }

    /// The bytes of a token sequence. Errors on an id ≥ V.
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>> {
        if let Some(&bad) = ids.iter().find(|&&x| x >= self.vocab_size()) {
            return Err(Error::Tokenizer(format!(
                "token id {bad} is out of range for {} (V = {})",
                self.kind(),
                self.vocab_size()
            )));
        }
        match self {
            Tokenizer::Bytes => Ok(ids.iter().map(|&x| x as u8).collect()),
            Tokenizer::Gpt2(bpe) => bpe
                .decode_bytes(ids)
                .map_err(|e| Error::Tokenizer(format!("{e:?}"))),
        }
    }

    /// Text of a token sequence; invalid UTF-8 (a split multi-byte character) becomes U+FFFD.
    pub fn decode_lossy(&self, ids: &[u32]) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.decode_bytes(ids)?).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_known_ids() {
        let t = Tokenizer::new(TokenizerKind::Gpt2).unwrap();
        assert_eq!(t.encode("Hello world"), vec![15496, 995]);
        assert_eq!(t.encode("\n"), vec![198]);
        assert_eq!(t.decode_lossy(&[15496, 995]).unwrap(), "Hello world");
        assert_eq!(t.decode_lossy(&[GPT2_EOS]).unwrap(), "<|endoftext|>");
        assert!(t.decode_bytes(&[50257]).is_err());
        // `<|endoftext|>` is plain text to `encode` and the EOS id to `encode_with_eos`.
        assert!(!t.encode("a<|endoftext|>").contains(&GPT2_EOS));
        assert_eq!(
            t.encode_with_eos("Hello<|endoftext|> world").unwrap(),
            vec![15496, GPT2_EOS, 995]
        );
        let b = Tokenizer::new(TokenizerKind::Bytes).unwrap();
        assert_eq!(b.encode_with_eos("a\0b").unwrap(), vec![97, 0, 98]);
    }

    #[test]
    fn bytes_round_trip() {
        let t = Tokenizer::new(TokenizerKind::Bytes).unwrap();
        let ids = t.encode("Call me Ishmael. ¶");
        assert_eq!(ids.len(), "Call me Ishmael. ¶".len());
        assert_eq!(t.decode_lossy(&ids).unwrap(), "Call me Ishmael. ¶");
        assert!("bpe".parse::<TokenizerKind>().is_err());
    }
}
