//! Preference data: JSON Lines files of pairs, in the service's export
//! format (`GET /v1/preferences/export`, images read from the service's
//! storage folder) or in the plain formats of the command line:
//! aesthetic `{"prompt", "preferred", "rejected"}` and alignment
//! `{"image", "preferred_caption", "rejected_caption"}`, image paths
//! relative to the file. Decoded images, the split and the order of each
//! epoch all derive from the data and the seed alone.

use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::Deserialize;

use crate::config::RewardKind;
use crate::error::{Result, TrainError};

/// One side of a pair: a prompt (or caption) and an image file.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub prompt: String,
    pub image: PathBuf,
}

/// `preferred` should score above `rejected`; a tie (a "Same" vote
/// majority) should score equal.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub preferred: Sample,
    pub rejected: Sample,
    pub tie: bool,
}

#[derive(Deserialize)]
struct ExportedImage {
    key: String,
}

/// The fields of the three line formats; which are set says which it is.
#[derive(Deserialize)]
struct Line {
    comparison_id: Option<serde_json::Value>,
    prompt: Option<String>,
    image: Option<String>,
    preferred_caption: Option<String>,
    rejected_caption: Option<String>,
    preferred: Option<serde_json::Value>,
    rejected: Option<serde_json::Value>,
    candidate: Option<ExportedImage>,
    baseline: Option<ExportedImage>,
    #[serde(default)]
    tie: bool,
}

/// Reads the pairs of `path` for `kind`. `storage` is the service's local
/// storage folder that export lines' keys resolve against; ties are kept
/// only when `include_ties`.
pub fn read_pairs(
    path: &Path,
    kind: RewardKind,
    storage: Option<&Path>,
    include_ties: bool,
) -> Result<Vec<Pair>> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::Input {
        path: path.to_owned(),
        message: format!("cannot read the data file: {e}"),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut pairs = Vec::new();
    let mut ties = 0usize;
    for (n, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let bad = |message: String| TrainError::Input {
            path: path.to_owned(),
            message: format!("line {}: {message}", n + 1),
        };
        let line: Line =
            serde_json::from_str(raw).map_err(|e| bad(format!("not a JSON object: {e}")))?;
        let pair = parse_line(line, kind, base, storage).map_err(bad)?;
        if pair.tie {
            ties += 1;
            if !include_ties {
                continue;
            }
        }
        pairs.push(pair);
    }
    if pairs.is_empty() {
        return Err(TrainError::NoData(if ties > 0 {
            format!(
                "{}: all {ties} pairs are ties (\"Same\" majorities); set `include_ties` to train on them",
                path.display()
            )
        } else {
            format!(
                "{}: no pairs to train on (the file is empty)",
                path.display()
            )
        }));
    }
    Ok(pairs)
}

fn parse_line(
    line: Line,
    kind: RewardKind,
    base: &Path,
    storage: Option<&Path>,
) -> std::result::Result<Pair, String> {
    let text_field =
        |v: &Option<serde_json::Value>, name: &str| -> std::result::Result<String, String> {
            match v {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                _ => Err(format!(
                    "`{name}` must be a string (an image path relative to the file)"
                )),
            }
        };
    if line.comparison_id.is_some() {
        if kind != RewardKind::Aesthetic {
            return Err("service export lines train the aesthetic reward (`--kind aesthetic`); alignment needs caption triplets".into());
        }
        let storage = storage.ok_or("an export line's images are storage keys: give the service's storage folder with `--storage`")?;
        let prompt = line.prompt.ok_or("`prompt` is missing")?;
        let key = |v: Option<serde_json::Value>| -> Option<String> {
            serde_json::from_value::<ExportedImage>(v?)
                .ok()
                .map(|i| i.key)
        };
        let (preferred, rejected, tie) = match (key(line.preferred), key(line.rejected)) {
            (Some(p), Some(r)) => (p, r, false),
            _ => {
                let c = line.candidate.ok_or("`candidate` is missing")?.key;
                let b = line.baseline.ok_or("`baseline` is missing")?.key;
                (c, b, true)
            }
        };
        let sample = |key: String| Sample {
            prompt: prompt.clone(),
            image: storage.join(key),
        };
        return Ok(Pair {
            preferred: sample(preferred),
            rejected: sample(rejected),
            tie,
        });
    }
    match kind {
        RewardKind::Coherence => {
            Err("coherence data are {\"image\", \"mask\"} lines, not pairs".into())
        }
        RewardKind::Aesthetic => {
            let prompt = line.prompt.ok_or("`prompt` is missing (aesthetic lines are {\"prompt\", \"preferred\", \"rejected\"})")?;
            let preferred = base.join(text_field(&line.preferred, "preferred")?);
            let rejected = base.join(text_field(&line.rejected, "rejected")?);
            Ok(Pair {
                preferred: Sample {
                    prompt: prompt.clone(),
                    image: preferred,
                },
                rejected: Sample {
                    prompt,
                    image: rejected,
                },
                tie: line.tie,
            })
        }
        RewardKind::Alignment => {
            let missing =
                "alignment lines are {\"image\", \"preferred_caption\", \"rejected_caption\"}";
            let image = base.join(
                line.image
                    .ok_or(format!("`image` is missing ({missing})"))?,
            );
            let preferred = line
                .preferred_caption
                .ok_or(format!("`preferred_caption` is missing ({missing})"))?;
            let rejected = line
                .rejected_caption
                .ok_or(format!("`rejected_caption` is missing ({missing})"))?;
            Ok(Pair {
                preferred: Sample {
                    prompt: preferred,
                    image: image.clone(),
                },
                rejected: Sample {
                    prompt: rejected,
                    image,
                },
                tie: line.tie,
            })
        }
    }
}

/// Splits `pairs` into (train, held-out) by a seeded shuffle: at least one
/// pair on each side.
pub fn split(pairs: Vec<Pair>, fraction: f64, seed: u64) -> Result<(Vec<Pair>, Vec<Pair>)> {
    split_examples(pairs, fraction, seed)
}

/// [`split`] for any examples.
pub fn split_examples<T>(
    mut examples: Vec<T>,
    fraction: f64,
    seed: u64,
) -> Result<(Vec<T>, Vec<T>)> {
    if examples.len() < 2 {
        return Err(TrainError::NoData(format!(
            "{} example(s) cannot be split into training and held-out sets: give at least 2",
            examples.len()
        )));
    }
    examples.shuffle(&mut StdRng::seed_from_u64(seed));
    let held = ((examples.len() as f64 * fraction).round() as usize).clamp(1, examples.len() - 1);
    let train = examples.split_off(held);
    Ok((train, examples))
}

/// The order of training pairs in `epoch`: a fresh seeded shuffle each
/// epoch, so a resumed run sees the same order as an uninterrupted one.
pub fn epoch_order(len: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    let mix = seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    order.shuffle(&mut StdRng::seed_from_u64(mix));
    order
}
