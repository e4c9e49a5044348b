//! The text encoder's tokenizer: BERT uncased WordPiece from the folder's
//! `vocab.txt` (as `BertTokenizer` reads it), plus BLIP's added `[DEC]` and
//! `[ENC]` tokens, truncated and padded to the model's text length (35 for
//! ImageReward). Hugging Face's `tokenizers` does the work; this module only
//! assembles it as BLIP configures `BertTokenizer`, and checks the folder.

use std::path::Path;

use serde::Deserialize;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{AddedToken, PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::error::{Result, RewardError};

/// BLIP's tokens added after the vocabulary, in the order BLIP adds them
/// (`bos_token` `[DEC]`, then `[ENC]`), when the folder does not list them.
const BLIP_ADDED: [&str; 2] = ["[DEC]", "[ENC]"];

/// A text as the encoder takes it: `max_length` ids and their mask (1 for
/// a token, 0 for padding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub attention_mask: Vec<u32>,
}

/// `tokenizer_config.json`, the one setting read from it.
#[derive(Deserialize)]
struct TokenizerConfig {
    #[serde(default = "lower_case_by_default")]
    do_lower_case: bool,
}

fn lower_case_by_default() -> bool {
    true
}

#[derive(Debug, Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    max_length: usize,
}

impl TextTokenizer {
    /// Reads `dir/vocab.txt` (required), `dir/added_tokens.json` and
    /// `dir/tokenizer_config.json` (optional: BLIP's tokens and lower-casing
    /// otherwise), for texts of `max_length` tokens.
    pub fn from_folder(dir: &Path, max_length: usize) -> Result<Self> {
        let vocab = dir.join("vocab.txt");
        if !vocab.is_file() {
            return Err(RewardError::MissingFile {
                path: vocab,
                hint: "put the text encoder's WordPiece vocabulary there (for the released ImageReward, bert-base-uncased's vocab.txt); nothing is downloaded at run time".into(),
            });
        }
        let invalid = |path: &Path, message: String| RewardError::InvalidFile {
            path: path.to_owned(),
            message,
        };
        let vocab_path = vocab.to_string_lossy().into_owned();
        let special = |token: &str| token.to_owned();
        let model = WordPiece::from_file(&vocab_path)
            .unk_token(special("[UNK]"))
            .build()
            .map_err(|e| invalid(&vocab, e.to_string()))?;
        let config_path = dir.join("tokenizer_config.json");
        let lower_case = match std::fs::read_to_string(&config_path) {
            Ok(text) => {
                serde_json::from_str::<TokenizerConfig>(&text)
                    .map_err(|e| invalid(&config_path, e.to_string()))?
                    .do_lower_case
            }
            Err(_) => true,
        };
        let mut inner = Tokenizer::new(model);
        // BertTokenizer: clean the text, split CJK characters, strip accents
        // when lower-casing (its `strip_accents: None`).
        inner.with_normalizer(Some(BertNormalizer::new(true, true, None, lower_case)));
        inner.with_pre_tokenizer(Some(BertPreTokenizer));
        let id = |token: &str| {
            inner
                .token_to_id(token)
                .ok_or_else(|| invalid(&vocab, format!("has no `{token}` token")))
        };
        let (cls, sep, pad) = (id("[CLS]")?, id("[SEP]")?, id("[PAD]")?);
        inner.with_post_processor(Some(BertProcessing::new(
            (special("[SEP]"), sep),
            (special("[CLS]"), cls),
        )));
        add_tokens(&mut inner, dir)?;
        inner.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(max_length),
            pad_id: pad,
            pad_token: special("[PAD]"),
            ..PaddingParams::default()
        }));
        inner
            .with_truncation(Some(TruncationParams {
                max_length,
                ..TruncationParams::default()
            }))
            .map_err(|e| RewardError::Tokenizer(e.to_string()))?;
        Ok(Self { inner, max_length })
    }

    /// The ids and mask of `text`: `[CLS]`, its WordPieces, `[SEP]`, padding.
    pub fn encode(&self, text: &str) -> Result<Encoded> {
        let encoding = self
            .inner
            .encode(text, true)
            .map_err(|e| RewardError::Tokenizer(e.to_string()))?;
        Ok(Encoded {
            ids: encoding.get_ids().to_vec(),
            attention_mask: encoding.get_attention_mask().to_vec(),
        })
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The id of a token of the vocabulary or an added one.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Ids in all: the vocabulary and the added tokens (the text
    /// encoder's embedding table must have this many rows).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

/// Adds the folder's added tokens (or BLIP's) after the vocabulary, and
/// checks they got the ids the folder says: the embedding rows they index.
fn add_tokens(inner: &mut Tokenizer, dir: &Path) -> Result<()> {
    let path = dir.join("added_tokens.json");
    let listed: Option<Vec<(String, u32)>> = match std::fs::read_to_string(&path) {
        Ok(text) => {
            let map: std::collections::BTreeMap<String, u32> = serde_json::from_str(&text)
                .map_err(|e| RewardError::InvalidFile {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            let mut pairs: Vec<(String, u32)> = map.into_iter().collect();
            pairs.sort_by_key(|(_, id)| *id);
            Some(pairs)
        }
        Err(_) => None,
    };
    let names: Vec<String> = match &listed {
        Some(pairs) => pairs.iter().map(|(t, _)| t.clone()).collect(),
        None => BLIP_ADDED.iter().map(|t| t.to_string()).collect(),
    };
    let tokens: Vec<AddedToken> = names
        .iter()
        .map(|t| AddedToken::from(t.clone(), true))
        .collect();
    inner.add_special_tokens(&tokens);
    for (token, want) in listed.iter().flatten() {
        let got = inner.token_to_id(token);
        if got != Some(*want) {
            return Err(RewardError::InvalidFile {
                path,
                message: format!(
                    "`{token}` is listed as id {want} but follows the vocabulary as id {}; the added tokens must come right after vocab.txt's entries, in id order",
                    got.map_or("none".into(), |g| g.to_string())
                ),
            });
        }
    }
    Ok(())
}
