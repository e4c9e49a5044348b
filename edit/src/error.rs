//! Why a request was refused: a stable code (the API's `error.code`), the
//! field to fix, and a sentence that says how.

/// A request that cannot be run as given. Every message names the field
/// (in the caller's spelling, see [`Naming`]) and the bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error("{message}")]
    MissingField {
        field: &'static str,
        message: String,
    },
    #[error("{message}")]
    InvalidField { field: String, message: String },
    #[error("{message}")]
    UnknownField { field: String, message: String },
    #[error("{message}")]
    InvalidImage {
        field: &'static str,
        message: String,
    },
    #[error("{message}")]
    ImageTooLarge {
        field: &'static str,
        message: String,
    },
    #[error("{message}")]
    SizeMismatch { message: String },
    #[error("{message}")]
    EmptyMask { message: String },
}

impl EditError {
    /// The stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingField { .. } => "missing_field",
            Self::InvalidField { .. } => "invalid_field",
            Self::UnknownField { .. } => "unknown_field",
            Self::InvalidImage { .. } => "invalid_image",
            Self::ImageTooLarge { .. } => "image_too_large",
            Self::SizeMismatch { .. } => "size_mismatch",
            Self::EmptyMask { .. } => "empty_mask",
        }
    }

    /// The form field the caller should change.
    pub fn field(&self) -> &str {
        match self {
            Self::MissingField { field, .. }
            | Self::InvalidImage { field, .. }
            | Self::ImageTooLarge { field, .. } => field,
            Self::InvalidField { field, .. } | Self::UnknownField { field, .. } => field,
            Self::SizeMismatch { .. } | Self::EmptyMask { .. } => "mask",
        }
    }
}

/// Most characters of a caller's value a message quotes: enough to
/// recognise it, while a megabyte of junk is not echoed back.
pub const QUOTED_CHARS: usize = 40;

/// A caller's value in backticks for a message: whole if short, else its
/// first [`QUOTED_CHARS`] characters, `…` and how many more there were.
/// Cut at a character boundary, never inside one.
pub fn quote(value: &str) -> String {
    match value.char_indices().nth(QUOTED_CHARS) {
        None => format!("`{value}`"),
        Some((cut, _)) => {
            let more = value[cut..].chars().count();
            format!("`{}…` ({more} more characters)", &value[..cut])
        }
    }
}

/// How messages spell fields: as form fields (`extend_left`,
/// `task=outpaint`) for the API, or as flags (`--extend-left`,
/// `--task outpaint`) for the CLI, so each caller reads the name it typed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Naming {
    #[default]
    Form,
    Flags,
}

impl Naming {
    /// A field's name in backticks.
    pub fn field(self, name: &str) -> String {
        match self {
            Self::Form => format!("`{name}`"),
            Self::Flags => format!("`--{}`", name.replace('_', "-")),
        }
    }

    /// A field set to a value, in backticks.
    pub fn set(self, name: &str, value: &str) -> String {
        match self {
            Self::Form => format!("`{name}={value}`"),
            Self::Flags => format!("`--{} {value}`", name.replace('_', "-")),
        }
    }

    /// Rewrites a message written with form names (`` `name` ``) into this
    /// naming, for messages made where the naming is not known (parsers).
    pub fn respell(self, message: &str, names: &[&str]) -> String {
        match self {
            Self::Form => message.to_owned(),
            Self::Flags => {
                let mut out = message.to_owned();
                for name in names {
                    out = out.replace(&format!("`{name}`"), &self.field(name));
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_value_is_quoted_by_its_first_characters_and_a_count() {
        assert_eq!(quote("abc"), "`abc`");
        assert_eq!(quote(""), "``");
        let forty = "x".repeat(QUOTED_CHARS);
        assert_eq!(quote(&forty), format!("`{forty}`"));
        assert_eq!(
            quote(&format!("{forty}y")),
            format!("`{forty}…` (1 more characters)")
        );
        let nines = "9".repeat(500_000);
        let quoted = quote(&nines);
        assert_eq!(
            quoted,
            format!("`{}…` (499960 more characters)", &nines[..40])
        );
        // Several bytes a character: counted and cut by characters.
        for c in ['é', '€', '𝄞'] {
            let long: String = std::iter::repeat_n(c, 100).collect();
            let quoted = quote(&long);
            let kept: String = std::iter::repeat_n(c, QUOTED_CHARS).collect();
            assert_eq!(quoted, format!("`{kept}…` (60 more characters)"), "{c}");
        }
        let mixed = format!("{}é{}", "a".repeat(39), "b".repeat(10));
        assert!(quote(&mixed).starts_with(&format!("`{}é…`", "a".repeat(39))));
    }
}
