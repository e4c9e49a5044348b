//! The tokenizer against ImageReward's own (`BertTokenizer` as BLIP sets it
//! up): ids and masks of the fixture's prompts, exactly.

use std::path::PathBuf;

use byteedit_rewards::{RewardError, TextTokenizer};

fn fixture() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/imagereward-tiny"
    ))
}

/// An I64 tensor of `expected.safetensors` as u32s.
fn expected(name: &str) -> Vec<u32> {
    let bytes = std::fs::read(fixture().join("expected.safetensors")).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = tensors.tensor(name).unwrap();
    assert_eq!(view.dtype(), safetensors::Dtype::I64);
    view.data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
        .collect()
}

#[test]
fn ids_and_masks_equal_imagerewards_tokenizer() {
    let tokenizer = TextTokenizer::from_folder(&fixture(), 35).unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("expected.json")).unwrap())
            .unwrap();
    let prompts = meta["prompts"].as_array().unwrap();
    assert!(!prompts.is_empty());
    for (i, prompt) in prompts.iter().enumerate() {
        let encoded = tokenizer.encode(prompt.as_str().unwrap()).unwrap();
        assert_eq!(
            encoded.ids,
            expected(&format!("case{i}.input_ids")),
            "{prompt}"
        );
        assert_eq!(
            encoded.attention_mask,
            expected(&format!("case{i}.attention_mask")),
            "{prompt}"
        );
    }
}

#[test]
fn blips_added_tokens_follow_the_vocabulary_and_long_texts_are_cut() {
    let tokenizer = TextTokenizer::from_folder(&fixture(), 35).unwrap();
    let vocab_len = std::fs::read_to_string(fixture().join("vocab.txt"))
        .unwrap()
        .lines()
        .count() as u32;
    assert_eq!(tokenizer.token_id("[DEC]"), Some(vocab_len));
    assert_eq!(tokenizer.token_id("[ENC]"), Some(vocab_len + 1));
    assert_eq!(tokenizer.vocab_size(), vocab_len as usize + 2);
    // Never split, whatever the case rules.
    let encoded = tokenizer.encode("[ENC] a photo").unwrap();
    assert_eq!(encoded.ids[1], vocab_len + 1);
    // Truncated to 35 with [SEP] kept last; no padding then.
    let long = tokenizer.encode(&"the apple ".repeat(40)).unwrap();
    let sep = tokenizer.token_id("[SEP]").unwrap();
    assert_eq!(long.ids.len(), 35);
    assert_eq!(long.ids[34], sep);
    assert!(long.attention_mask.iter().all(|&m| m == 1));
    // Upper case and accents read as the lower-case word.
    let plain = tokenizer.encode("a red apple").unwrap();
    assert_eq!(tokenizer.encode("A RÉD Apple").unwrap(), plain);
}

#[test]
fn a_folder_without_a_vocabulary_says_where_to_put_it() {
    let empty = tempfile_dir();
    let error = TextTokenizer::from_folder(&empty, 35).err().unwrap();
    assert!(matches!(error, RewardError::MissingFile { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("vocab.txt") && message.contains("bert-base-uncased"),
        "{message}"
    );
    std::fs::remove_dir_all(empty).unwrap();
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("byteedit-rewards-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
