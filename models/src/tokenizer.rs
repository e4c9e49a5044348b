//! CLIP's byte-level BPE tokenizer, as used by Stable Diffusion 1.x/2.x text encoders.
//!
//! It mirrors Hugging Face transformers' `CLIPTokenizer` (with ftfy installed) called as
//! `tokenizer(prompt, padding="max_length", max_length=model_max_length, truncation=True)`:
//! special tokens in the raw prompt are split off first, every other chunk gets ftfy-style
//! cleanup, whitespace collapsing and lowercasing, is split with CLIP's regex, mapped
//! byte-by-byte through GPT-2's `bytes_to_unicode` table and merged with the ranks from
//! `merges.txt` (the last symbol of every word carries `</w>`). The ids are wrapped in
//! BOS/EOS, truncated so EOS is always kept, and padded with the pad id. The ftfy part is a
//! subset covering what prompts realistically contain (HTML entities, curly quotes, Latin
//! ligatures, full-width ASCII, C1 and control characters); mojibake repair and NFC
//! normalisation are not done.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use regex::Regex;
use serde_json::Value;
use unicode_normalization::UnicodeNormalization;

use crate::error::{ModelError, Result};

const START_OF_TEXT: &str = "<|startoftext|>";
const END_OF_TEXT: &str = "<|endoftext|>";
const END_OF_WORD: &str = "</w>";
/// transformers keeps only the first `49152 - 256 - 2` merges of the file (the size of
/// OpenAI's original CLIP vocabulary), so a longer merges file must not use the rest.
const MAX_MERGES: usize = 49152 - 256 - 2;
const DEFAULT_MAX_LENGTH: usize = 77;
/// Word cache bound, so a long-running server fed arbitrary prompts cannot grow it forever.
const MAX_CACHE_ENTRIES: usize = 1 << 16;
/// Symbol id for a byte character that is neither in the vocabulary nor in any merge: it
/// never merges and becomes the unk token.
const UNKNOWN_SYMBOL: u32 = u32::MAX;

/// CLIP's pre-tokenization pattern. The text is lowercased beforehand, `(?i)` only keeps
/// the pattern identical to the reference's `re.IGNORECASE`.
fn word_pattern() -> &'static Regex {
    static PATTERN: OnceLock<Regex> = OnceLock::new();
    PATTERN.get_or_init(|| {
        Regex::new(
            r"(?i)<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
        )
        .expect("the constant CLIP pre-tokenization regex compiles")
    })
}

/// GPT-2's reversible byte → printable character table: printable Latin-1 bytes map to
/// themselves, the rest are shifted to U+0100 and up so no byte becomes whitespace or a
/// control character.
fn bytes_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next_shifted = 0u32;
    for byte in 0..=255u8 {
        let printable = matches!(byte, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let code = if printable {
            u32::from(byte)
        } else {
            let code = 256 + next_shifted;
            next_shifted += 1;
            code
        };
        // All codes are below 0x144, valid scalar values.
        table[usize::from(byte)] = char::from_u32(code).unwrap_or('\u{FFFD}');
    }
    table
}

/// A loaded CLIP tokenizer; cheap to share between threads (`&self` everywhere).
pub struct ClipTokenizer {
    /// Merge table over interned symbols: (left, right) → (rank, merged symbol).
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// Interned symbol → vocabulary id; `None` for merge symbols missing from vocab.json.
    symbol_ids: Vec<Option<u32>>,
    /// Initial symbol for each byte, inside a word and at its end (with `</w>`).
    byte_symbol: [u32; 256],
    byte_symbol_end: [u32; 256],
    /// Special tokens split off the raw text before cleanup, longest first.
    added_tokens: Vec<(String, u32)>,
    /// The reference seeds its BPE cache with these two, so they map to their own ids
    /// even when they only appear after cleanup.
    start_of_text_id: Option<u32>,
    end_of_text_id: Option<u32>,
    cache: Mutex<HashMap<String, Vec<u32>>>,
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
    unk_id: u32,
    max_length: usize,
}

impl Clone for ClipTokenizer {
    fn clone(&self) -> Self {
        let cache = self.cache.lock().map(|c| c.clone()).unwrap_or_default();
        Self {
            merges: self.merges.clone(),
            symbol_ids: self.symbol_ids.clone(),
            byte_symbol: self.byte_symbol,
            byte_symbol_end: self.byte_symbol_end,
            added_tokens: self.added_tokens.clone(),
            start_of_text_id: self.start_of_text_id,
            end_of_text_id: self.end_of_text_id,
            cache: Mutex::new(cache),
            bos_id: self.bos_id,
            eos_id: self.eos_id,
            pad_id: self.pad_id,
            unk_id: self.unk_id,
            max_length: self.max_length,
        }
    }
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("merges", &self.merges.len())
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("pad_id", &self.pad_id)
            .field("unk_id", &self.unk_id)
            .field("max_length", &self.max_length)
            .finish_non_exhaustive()
    }
}

impl ClipTokenizer {
    /// Loads `vocab.json`, `merges.txt` and the optional json configs from a diffusers `tokenizer/` folder.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let meta = std::fs::metadata(dir).map_err(|e| ModelError::io(dir, e))?;
        if !meta.is_dir() {
            return Err(invalid(
                dir,
                "expected a folder holding vocab.json and merges.txt",
            ));
        }

        let vocab_path = dir.join("vocab.json");
        let vocab_text = read_text(&vocab_path)?;
        let vocab: HashMap<String, u32> = serde_json::from_str(&vocab_text)
            .map_err(|e| invalid(dir, format!("vocab.json is not a string → id map: {e}")))?;
        if vocab.is_empty() {
            return Err(invalid(dir, "vocab.json is empty"));
        }

        let merges_text = read_text(&dir.join("merges.txt"))?;

        // special_tokens_map.json wins over tokenizer_config.json, as in transformers.
        let config = read_optional_json(dir, "tokenizer_config.json")?;
        let special_map = read_optional_json(dir, "special_tokens_map.json")?;
        let special = |key: &str, default: &str| -> String {
            [&special_map, &config]
                .into_iter()
                .flatten()
                .find_map(|json| token_content(json.get(key)?))
                .unwrap_or_else(|| default.to_owned())
        };
        let bos = special("bos_token", START_OF_TEXT);
        let eos = special("eos_token", END_OF_TEXT);
        let pad = special("pad_token", END_OF_TEXT);
        let unk = special("unk_token", END_OF_TEXT);
        let lookup = |role: &str, token: &str| -> Result<u32> {
            vocab
                .get(token)
                .copied()
                .ok_or_else(|| invalid(dir, format!("{role} token `{token}` is not in vocab.json")))
        };
        let bos_id = lookup("bos", &bos)?;
        let eos_id = lookup("eos", &eos)?;
        let pad_id = lookup("pad", &pad)?;
        let unk_id = lookup("unk", &unk)?;

        let max_length = match config.as_ref().and_then(|c| c.get("model_max_length")) {
            None | Some(Value::Null) => DEFAULT_MAX_LENGTH,
            // transformers writes ~1e30 for "no limit"; SD text encoders take 77 positions.
            Some(v) if v.as_f64().is_some_and(|x| x >= 1e6) => DEFAULT_MAX_LENGTH,
            Some(v) => match v.as_u64().and_then(|n| usize::try_from(n).ok()) {
                Some(n) if n >= 2 => n,
                _ => {
                    return Err(invalid(
                        dir,
                        format!(
                            "tokenizer_config.json model_max_length {v} must be an integer >= 2 (room for BOS and EOS)"
                        ),
                    ));
                }
            },
        };

        // Intern every vocabulary entry and merge symbol so BPE works on integers.
        let mut interned: HashMap<String, u32> = HashMap::with_capacity(vocab.len() + 1024);
        let mut symbol_ids: Vec<Option<u32>> = Vec::with_capacity(vocab.len() + 1024);
        for (token, &id) in &vocab {
            interned.insert(token.clone(), symbol_ids.len() as u32);
            symbol_ids.push(Some(id));
        }
        let mut intern = |s: &str, symbol_ids: &mut Vec<Option<u32>>| -> u32 {
            if let Some(&sym) = interned.get(s) {
                return sym;
            }
            let sym = symbol_ids.len() as u32;
            interned.insert(s.to_owned(), sym);
            symbol_ids.push(None);
            sym
        };

        let mut merges = HashMap::with_capacity(MAX_MERGES);
        // Like transformers: trim the file, drop the `#version` header line, cap the count.
        let mut lines = merges_text.trim().lines().enumerate().peekable();
        if lines
            .peek()
            .is_some_and(|(_, line)| line.starts_with("#version"))
        {
            lines.next();
        }
        let mut merged = String::new();
        for (rank, (line_no, line)) in lines.take(MAX_MERGES).enumerate() {
            let mut parts = line.split_whitespace();
            let (Some(left), Some(right), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(invalid(
                    dir,
                    format!(
                        "merges.txt line {} is `{line}`, expected two symbols",
                        line_no + 1
                    ),
                ));
            };
            merged.clear();
            merged.push_str(left);
            merged.push_str(right);
            let key = (
                intern(left, &mut symbol_ids),
                intern(right, &mut symbol_ids),
            );
            let value = (rank as u32, intern(&merged, &mut symbol_ids));
            // A repeated pair keeps its last rank, as a Python dict built from the list does.
            merges.insert(key, value);
        }

        let byte_chars = bytes_to_unicode();
        let mut byte_symbol = [UNKNOWN_SYMBOL; 256];
        let mut byte_symbol_end = [UNKNOWN_SYMBOL; 256];
        let mut buf = String::new();
        for (byte, &c) in byte_chars.iter().enumerate() {
            buf.clear();
            buf.push(c);
            if let Some(&sym) = interned.get(&buf) {
                byte_symbol[byte] = sym;
            }
            buf.push_str(END_OF_WORD);
            if let Some(&sym) = interned.get(&buf) {
                byte_symbol_end[byte] = sym;
            }
        }

        // transformers splits every special token (bos, eos, unk, pad) out of the raw text
        // before cleanup; for SD 2's pad `!` that means each `!` becomes id 0 on its own.
        let mut added_tokens: Vec<(String, u32)> = Vec::new();
        for (token, id) in [
            (&bos, bos_id),
            (&eos, eos_id),
            (&unk, unk_id),
            (&pad, pad_id),
        ] {
            if !token.is_empty() && !added_tokens.iter().any(|(t, _)| t == token) {
                added_tokens.push((token.clone(), id));
            }
        }
        added_tokens.sort_by_key(|(token, _)| std::cmp::Reverse(token.len()));

        Ok(Self {
            merges,
            symbol_ids,
            byte_symbol,
            byte_symbol_end,
            added_tokens,
            start_of_text_id: vocab.get(START_OF_TEXT).copied(),
            end_of_text_id: vocab.get(END_OF_TEXT).copied(),
            cache: Mutex::new(HashMap::new()),
            bos_id,
            eos_id,
            pad_id,
            unk_id,
            max_length,
        })
    }

    /// Token ids for one prompt, padded/truncated to `max_length()`.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let body_len = self.max_length.saturating_sub(2);
        let mut ids = Vec::with_capacity(self.max_length);
        ids.push(self.bos_id);
        let mut rest = text;
        // Stop early once the body is full: truncation only ever drops the tail.
        while !rest.is_empty() && ids.len() <= body_len {
            let (chunk, special, after) = self.split_added_token(rest);
            if !chunk.is_empty() {
                let cleaned = clean_text(chunk);
                for piece in word_pattern().find_iter(&cleaned) {
                    if ids.len() > body_len {
                        break;
                    }
                    self.push_word(piece.as_str(), &mut ids);
                }
            }
            if let Some(id) = special {
                ids.push(id);
            }
            rest = after;
        }
        ids.truncate(1 + body_len);
        ids.push(self.eos_id);
        ids.resize(self.max_length, self.pad_id);
        ids
    }

    /// Sequence length every `encode` result has, BOS and EOS included (77 for SD).
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Id placed first in every sequence (`<|startoftext|>`).
    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    /// Id that ends the prompt, kept even when the prompt is truncated.
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// Id filling the rest of the sequence (`<|endoftext|>` for SD 1.x, `!` = 0 for SD 2.x).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Splits `text` at the first special token: (text before it, its id, text after it).
    fn split_added_token<'a>(&self, text: &'a str) -> (&'a str, Option<u32>, &'a str) {
        for (pos, _) in text.char_indices() {
            let tail = &text[pos..];
            // Longest first, so overlapping specials resolve like the reference's trie.
            if let Some((token, id)) = self
                .added_tokens
                .iter()
                .find(|(t, _)| tail.starts_with(t.as_str()))
            {
                return (&text[..pos], Some(*id), &tail[token.len()..]);
            }
        }
        (text, None, "")
    }

    /// Appends the ids of one pre-tokenized word, through the cache.
    fn push_word(&self, word: &str, ids: &mut Vec<u32>) {
        if word == START_OF_TEXT || word == END_OF_TEXT {
            let id = if word == START_OF_TEXT {
                self.start_of_text_id
            } else {
                self.end_of_text_id
            };
            ids.push(id.unwrap_or(self.unk_id));
            return;
        }
        // A poisoned lock only means another thread panicked mid-insert; the map is still usable.
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cached) = cache.get(word) {
            ids.extend_from_slice(cached);
            return;
        }
        let word_ids = self.bpe(word);
        ids.extend_from_slice(&word_ids);
        if cache.len() >= MAX_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(word.to_owned(), word_ids);
    }

    /// Byte-level BPE of one word: repeatedly merge every occurrence (left to right) of the
    /// adjacent pair with the lowest rank, exactly as the reference loop does.
    fn bpe(&self, word: &str) -> Vec<u32> {
        let bytes = word.as_bytes();
        let Some((&last, init)) = bytes.split_last() else {
            return Vec::new();
        };
        let mut symbols: Vec<u32> = init
            .iter()
            .map(|&b| self.byte_symbol[usize::from(b)])
            .collect();
        symbols.push(self.byte_symbol_end[usize::from(last)]);

        let mut next = Vec::with_capacity(symbols.len());
        while symbols.len() > 1 {
            let best = symbols
                .windows(2)
                .filter_map(|pair| self.merges.get(&(pair[0], pair[1])))
                .min_by_key(|(rank, _)| *rank);
            let Some(&(rank, _)) = best else { break };
            next.clear();
            let mut i = 0;
            while i < symbols.len() {
                if i + 1 < symbols.len()
                    && let Some(&(r, merged)) = self.merges.get(&(symbols[i], symbols[i + 1]))
                    && r == rank
                {
                    next.push(merged);
                    i += 2;
                    continue;
                }
                next.push(symbols[i]);
                i += 1;
            }
            std::mem::swap(&mut symbols, &mut next);
        }

        symbols
            .into_iter()
            .map(|sym| {
                self.symbol_ids
                    .get(sym as usize)
                    .copied()
                    .flatten()
                    .unwrap_or(self.unk_id)
            })
            .collect()
    }
}

fn invalid(dir: &Path, message: impl Into<String>) -> ModelError {
    ModelError::Tokenizer {
        path: dir.to_path_buf(),
        message: message.into(),
    }
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))
}

/// Reads an optional json config; absent is fine, unreadable or malformed is an error.
fn read_optional_json(dir: &Path, name: &str) -> Result<Option<Value>> {
    let path: PathBuf = dir.join(name);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ModelError::io(&path, e)),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| invalid(dir, format!("{name} is not valid json: {e}")))
}

/// A special token entry is either a plain string or an `AddedToken` object with `content`.
fn token_content(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Object(map) => map.get("content")?.as_str().map(str::to_owned),
        _ => None,
    }
}

/// ftfy-style cleanup, then `whitespace_clean` (collapse runs, strip) and lowercasing.
fn clean_text(text: &str) -> String {
    // ftfy leaves entities alone when the text looks like HTML markup.
    let unescaped;
    let text = if text.contains('<') {
        text
    } else {
        unescaped = unescape_html(text);
        &unescaped
    };

    let mut fixed = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        // Terminal colour codes such as `ESC[1;31m` are dropped whole.
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            let mut lookahead = chars.clone();
            lookahead.next();
            while lookahead
                .peek()
                .is_some_and(|&d| d.is_ascii_digit() || d == ';')
            {
                lookahead.next();
            }
            if lookahead.peek().is_some_and(|d| d.is_ascii_alphabetic()) {
                lookahead.next();
                chars = lookahead;
                continue;
            }
        }
        let c = c1_to_cp1252(c).unwrap_or(c);
        if is_removed_control(c) {
            continue;
        }
        match fix_char(c) {
            Some(replacement) => fixed.push_str(replacement),
            None => fixed.push(c),
        }
    }

    // ftfy (and the fast tokenizer's normalizer) compose characters with NFC,
    // so "e" + combining accent and "é" give the same tokens.
    let fixed: String = fixed.nfc().collect();
    let mut out = String::with_capacity(fixed.len());
    for word in fixed.split(char::is_whitespace).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out.to_lowercase()
}

/// Decodes `&name;`, `&#123;` and `&#x7b;` for the common entities; others stay verbatim.
fn unescape_html(text: &str) -> String {
    if !text.contains('&') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let tail = &rest[amp..];
        let decoded = tail
            .get(1..)
            .and_then(|t| {
                t.find(';')
                    .filter(|&end| end <= 24)
                    .map(|end| (&t[..end], end + 2))
            })
            .and_then(|(entity, consumed)| decode_entity(entity).map(|c| (c, consumed)));
        match decoded {
            Some((c, consumed)) => {
                out.push(c);
                rest = &tail[consumed..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn decode_entity(entity: &str) -> Option<char> {
    if let Some(number) = entity.strip_prefix('#') {
        let code = match number.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => number.parse::<u32>().ok()?,
        };
        if code == 0 {
            return None;
        }
        let c = char::from_u32(code)?;
        // Python's html.unescape reads &#128;..&#159; as Windows-1252, like browsers.
        return Some(c1_to_cp1252(c).unwrap_or(c));
    }
    let c = match entity {
        "amp" | "AMP" => '&',
        "lt" | "LT" => '<',
        "gt" | "GT" => '>',
        "quot" | "QUOT" => '"',
        "apos" => '\'',
        "nbsp" => '\u{a0}',
        "copy" | "COPY" => '©',
        "reg" | "REG" => '®',
        "trade" => '™',
        "hellip" => '…',
        "mdash" => '—',
        "ndash" => '–',
        "lsquo" => '‘',
        "rsquo" => '’',
        "ldquo" => '“',
        "rdquo" => '”',
        "deg" => '°',
        "eacute" => 'é',
        _ => return None,
    };
    Some(c)
}

/// ftfy's `fix_c1_controls`: C1 control characters are almost always Windows-1252 bytes
/// that were decoded as Latin-1.
fn c1_to_cp1252(c: char) -> Option<char> {
    const TABLE: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8d}', 'Ž',
        '\u{8f}', '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9d}',
        'ž', 'Ÿ',
    ];
    let code = u32::from(c);
    (0x80..0xA0)
        .contains(&code)
        .then(|| TABLE[(code - 0x80) as usize])
}

/// ftfy's `remove_control_chars` set (tab, newline, form feed and CR are kept).
fn is_removed_control(c: char) -> bool {
    matches!(
        u32::from(c),
        0x00..=0x08 | 0x0B | 0x0E..=0x1F | 0x7F | 0x206A..=0x206F | 0xFEFF | 0xFFF9..=0xFFFC
    )
}

/// ftfy's `fix_latin_ligatures`, `fix_character_width` and `uncurl_quotes` as one lookup.
fn fix_char(c: char) -> Option<&'static str> {
    // Full-width ASCII U+FF01..U+FF5E is ASCII shifted by 0xFEE0.
    const FULL_WIDTH_ASCII: [&str; 94] = [
        "!", "\"", "#", "$", "%", "&", "'", "(", ")", "*", "+", ",", "-", ".", "/", "0", "1", "2",
        "3", "4", "5", "6", "7", "8", "9", ":", ";", "<", "=", ">", "?", "@", "A", "B", "C", "D",
        "E", "F", "G", "H", "I", "J", "K", "L", "M", "N", "O", "P", "Q", "R", "S", "T", "U", "V",
        "W", "X", "Y", "Z", "[", "\\", "]", "^", "_", "`", "a", "b", "c", "d", "e", "f", "g", "h",
        "i", "j", "k", "l", "m", "n", "o", "p", "q", "r", "s", "t", "u", "v", "w", "x", "y", "z",
        "{", "|", "}", "~",
    ];
    let code = u32::from(c);
    if (0xFF01..=0xFF5E).contains(&code) {
        return FULL_WIDTH_ASCII.get((code - 0xFF01) as usize).copied();
    }
    let fixed = match c {
        '\u{2018}'..='\u{201B}' | '\u{02BC}' => "'",
        '\u{201C}'..='\u{201F}' => "\"",
        'Ĳ' => "IJ",
        'ĳ' => "ij",
        // NFKC gives `ʼn`, whose modifier apostrophe ftfy then uncurls.
        'ŉ' => "'n",
        'Ǉ' => "LJ",
        'ǈ' => "Lj",
        'ǉ' => "lj",
        'Ǌ' => "NJ",
        'ǋ' => "Nj",
        'ǌ' => "nj",
        'Ǳ' => "DZ",
        'ǲ' => "Dz",
        'ǳ' => "dz",
        'ﬀ' => "ff",
        'ﬁ' => "fi",
        'ﬂ' => "fl",
        'ﬃ' => "ffi",
        'ﬄ' => "ffl",
        'ﬅ' | 'ﬆ' => "st",
        '\u{3000}' => " ",
        '\u{FF5F}' => "\u{2985}",
        '\u{FF60}' => "\u{2986}",
        '\u{FF61}' => "\u{3002}",
        '\u{FF62}' => "\u{300C}",
        '\u{FF63}' => "\u{300D}",
        '\u{FF64}' => "\u{3001}",
        '\u{FF65}' => "\u{30FB}",
        '\u{FFE0}' => "\u{A2}",
        '\u{FFE1}' => "\u{A3}",
        '\u{FFE2}' => "\u{AC}",
        '\u{FFE3}' => " \u{304}",
        '\u{FFE4}' => "\u{A6}",
        '\u{FFE5}' => "\u{A5}",
        '\u{FFE6}' => "\u{20A9}",
        '\u{FFE8}' => "\u{2502}",
        '\u{FFE9}' => "\u{2190}",
        '\u{FFEA}' => "\u{2191}",
        '\u{FFEB}' => "\u{2192}",
        '\u{FFEC}' => "\u{2193}",
        '\u{FFED}' => "\u{25A0}",
        '\u{FFEE}' => "\u{25CB}",
        _ => return None,
    };
    Some(fixed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::{Dtype, SafeTensors};

    const FIXTURE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sd15-inpaint-tiny"
    );

    fn fixture_tokenizer() -> ClipTokenizer {
        let dir = Path::new(FIXTURE).join("tokenizer");
        ClipTokenizer::from_dir(&dir).expect("fixture tokenizer loads")
    }

    /// Ids between BOS and EOS, for comparing against known tokenizations.
    fn body(tok: &ClipTokenizer, text: &str) -> Vec<u32> {
        let ids = tok.encode(text);
        let end = ids
            .iter()
            .position(|&id| id == tok.eos_id())
            .expect("eos present");
        ids[1..end].to_vec()
    }

    #[test]
    fn matches_transformers_reference_ids() {
        let tok = fixture_tokenizer();
        let root = Path::new(FIXTURE);
        let expected_json: Value = serde_json::from_str(
            &std::fs::read_to_string(root.join("expected.json")).expect("expected.json"),
        )
        .expect("expected.json parses");
        let prompts = expected_json["prompts"].as_array().expect("prompts array");
        assert_eq!(prompts.len(), 3);
        let bytes = std::fs::read(root.join("expected.safetensors")).expect("expected.safetensors");
        let tensors = SafeTensors::deserialize(&bytes).expect("safetensors parses");
        for (i, prompt) in prompts.iter().enumerate() {
            let prompt = prompt.as_str().expect("prompt string");
            let view = tensors
                .tensor(&format!("tokenizer.{i}.input_ids"))
                .expect("tensor present");
            assert_eq!(view.dtype(), Dtype::I64);
            assert_eq!(view.shape(), &[1, 77]);
            let expected: Vec<u32> = view
                .data()
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")) as u32)
                .collect();
            assert_eq!(tok.encode(prompt), expected, "prompt {i}: {prompt:?}");
        }
    }

    #[test]
    fn reads_special_tokens_and_length() {
        let tok = fixture_tokenizer();
        assert_eq!(tok.max_length(), 77);
        assert_eq!(tok.bos_id(), 49406);
        assert_eq!(tok.eos_id(), 49407);
        assert_eq!(tok.pad_id(), 49407);
        // Known CLIP ids for "a photo of a cat".
        assert_eq!(
            body(&tok, "a photo of a cat"),
            vec![320, 1125, 539, 320, 2368]
        );
    }

    #[test]
    fn truncates_long_prompt_keeping_eos() {
        let tok = fixture_tokenizer();
        let prompt = "a very long prompt about a red apple ".repeat(40);
        let ids = tok.encode(&prompt);
        assert_eq!(ids.len(), 77);
        assert_eq!(ids[0], tok.bos_id());
        assert_eq!(ids[76], tok.eos_id());
        assert!(ids[1..76].iter().all(|&id| id != tok.eos_id()));
        // The kept part is the prompt's own beginning.
        let short = tok.encode("a very long prompt");
        assert_eq!(&ids[..5], &short[..5]);
    }

    #[test]
    fn missing_folder_is_an_error_naming_the_path() {
        let dir = Path::new(FIXTURE).join("no-such-tokenizer");
        let err = ClipTokenizer::from_dir(&dir).expect_err("missing folder must fail");
        assert!(matches!(err, ModelError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("no-such-tokenizer"), "{err}");
    }

    #[test]
    fn ftfy_style_cleanup() {
        let tok = fixture_tokenizer();
        let plain = tok.encode("it's a cat & dog \"fine\"");
        assert_eq!(
            tok.encode("It\u{2019}s   a\tCAT &amp; dog \u{201c}fine\u{201d}  "),
            plain
        );
        assert_eq!(tok.encode("ＣＡＴ"), tok.encode("cat"));
        assert_eq!(tok.encode("\u{fb01}sh"), tok.encode("fish"));
        assert_eq!(tok.encode("\u{1b}[31mred\u{1b}[0m"), tok.encode("red"));
        assert_eq!(clean_text("<b>&amp;</b>"), "<b>&amp;</b>");
        assert_eq!(clean_text("cafe\u{301}"), clean_text("café"));
        assert_eq!(
            clean_text("a &amp; b &#39;c&#x27; &bogus;"),
            "a & b 'c' &bogus;"
        );
    }

    #[test]
    fn special_tokens_in_text_and_sd2_pad() {
        let tok = fixture_tokenizer();
        assert_eq!(body(&tok, "cat<|startoftext|>"), vec![2368, 49406]);

        // An SD 2 style folder: same vocab, pad `!` (id 0), object-style token entries.
        let src = Path::new(FIXTURE).join("tokenizer");
        let dir = std::env::temp_dir().join(format!("clip-tok-sd2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        for name in ["vocab.json", "merges.txt"] {
            std::fs::copy(src.join(name), dir.join(name)).expect("copy fixture");
        }
        std::fs::write(
            dir.join("special_tokens_map.json"),
            r#"{"bos_token": {"content": "<|startoftext|>"}, "eos_token": "<|endoftext|>", "pad_token": "!", "unk_token": "<|endoftext|>"}"#,
        )
        .expect("write map");
        let sd2 = ClipTokenizer::from_dir(&dir).expect("sd2 tokenizer loads");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(sd2.pad_id(), 0);
        assert_eq!(sd2.max_length(), 77);
        let ids = sd2.encode("wow!!");
        assert_eq!(ids[76], 0);
        // `!` is an added token there, so each one is split off as id 0.
        assert_eq!(&ids[2..5], &[0, 0, sd2.eos_id()]);
    }
}
