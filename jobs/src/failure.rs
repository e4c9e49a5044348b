//! Why a job failed, as the stable `error.code` clients read. Every code is
//! documented in one table, "Job failure codes" in `docs/ARCHITECTURE.md`
//! (a test below keeps the two in step).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::job::JobError;

/// Declares the codes once: the variants, [`FailureCode::ALL`], the
/// strings and the retry policy cannot drift apart.
macro_rules! failure_codes {
    ($( $(#[doc = $doc:literal])* $variant:ident = $code:literal, retried: $retried:literal; )*) => {
        /// A failed job's `error.code` (serialized as the snake_case string).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum FailureCode {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl FailureCode {
            pub const ALL: &'static [FailureCode] = &[$(Self::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $code,)*
                }
            }

            /// Whether a failure with this code puts the job back in the
            /// queue (with backoff, until `--max-attempts`) instead of
            /// failing it at once.
            pub fn is_retried(self) -> bool {
                match self {
                    $(Self::$variant => $retried,)*
                }
            }
        }
    };
}

failure_codes! {
    /// The input cannot be used as given (an upload that does not decode,
    /// no mask for a task that needs one, a request the engine refuses).
    InvalidInput = "invalid_input", retried: false;
    /// The job's uploads are gone from storage.
    InputMissing = "input_missing", retried: false;
    /// Storage could not be read or written (an outage).
    StorageError = "storage_error", retried: true;
    /// The engine, or decoding or encoding, panicked on this input.
    PoisonInput = "poison_input", retried: false;
    /// Started more than `--max-attempts` times; its worker stopped
    /// answering each time.
    WorkerLost = "worker_lost", retried: false;
    /// The API could not put the job on the queue (Redis unreachable).
    QueueUnavailable = "queue_unavailable", retried: false;
    /// Delivered to a worker that does not serve the job's model.
    ModelNotServed = "model_not_served", retried: false;
    /// An output image could not be encoded as PNG.
    OutputEncodingFailed = "output_encoding_failed", retried: false;
    /// A file the engine needed could not be read.
    FileUnreadable = "file_unreadable", retried: false;
    /// A config file of the model is not valid.
    ModelConfigInvalid = "model_config_invalid", retried: false;
    /// The model's config asks for something this engine does not support.
    ModelUnsupported = "model_unsupported", retried: false;
    /// The model's weights are unreadable or do not fit its config.
    ModelWeightsInvalid = "model_weights_invalid", retried: false;
    /// The model's tokenizer files are not valid.
    TokenizerInvalid = "tokenizer_invalid", retried: false;
    /// An engine failure without a code of its own.
    EngineError = "engine_error", retried: false;
}

impl FromStr for FailureCode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .iter()
            .copied()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown failure code `{s}`"))
    }
}

impl fmt::Display for FailureCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl JobError {
    pub fn new(code: FailureCode, message: impl Into<String>) -> Self {
        Self {
            code: code.as_str().to_owned(),
            message: message.into(),
        }
    }

    /// The typed code; `None` for a code this version does not know (a row
    /// written by another version).
    pub fn failure_code(&self) -> Option<FailureCode> {
        self.code.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_strings_and_parse_back() {
        for &code in FailureCode::ALL {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::Value::from(code.as_str())
            );
            assert_eq!(code.as_str().parse::<FailureCode>(), Ok(code));
        }
    }

    /// The table in `docs/ARCHITECTURE.md` is the codes' documentation:
    /// every code has a row with the right retry answer, and no row names a
    /// code that does not exist.
    #[test]
    fn every_code_is_in_the_architecture_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/ARCHITECTURE.md");
        let doc = std::fs::read_to_string(path).expect("docs/ARCHITECTURE.md");
        let section = doc
            .split("\n## Job failure codes")
            .nth(1)
            .expect("a section `## Job failure codes`");
        let section = section.split("\n## ").next().unwrap_or(section);
        let rows: Vec<(String, String)> = section
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                // | `code` | when | retried |
                let code = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
                Some((code.to_owned(), cells.get(3)?.to_lowercase()))
            })
            .collect();
        for &code in FailureCode::ALL {
            let (_, retried) = rows
                .iter()
                .find(|(c, _)| c == code.as_str())
                .unwrap_or_else(|| panic!("`{code}` has no row in the table"));
            assert_eq!(
                retried.starts_with("yes"),
                code.is_retried(),
                "`{code}`: the table says retried `{retried}`"
            );
        }
        for (code, _) in &rows {
            assert!(
                code.parse::<FailureCode>().is_ok(),
                "the table lists `{code}`, which is no FailureCode"
            );
        }
    }
}
