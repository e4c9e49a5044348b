//! The three editing tasks.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::quote;

/// The three editing tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Fill the masked region with what the prompt says.
    Inpaint,
    /// Remove what the mask covers, consistent with the surroundings.
    Erase,
    /// Extend the scene beyond the image's borders.
    Outpaint,
}

impl Task {
    pub const ALL: [Task; 3] = [Self::Inpaint, Self::Erase, Self::Outpaint];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inpaint => "inpaint",
            Self::Erase => "erase",
            Self::Outpaint => "outpaint",
        }
    }
}

impl FromStr for Task {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "`task` must be one of inpaint, erase, outpaint; got {}",
                    quote(s)
                )
            })
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
