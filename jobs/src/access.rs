//! API keys and roles: who may do what.
//!
//! A key reads `bek_<id>_<secret>`. The id finds its record without scanning;
//! the secret is checked against the stored SHA-256 in constant time, so
//! response times say nothing about how much of a guess was right. Secrets are
//! 244 random bits, so a fast hash is enough (no password stretching needed).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;
use uuid::Uuid;

const PREFIX: &str = "bek_";

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Submits edits and reads its own jobs.
    Client,
    /// Votes on comparisons (and rates outputs, if an expert); nothing else.
    Volunteer,
    /// Manages keys, runs comparisons, reads statistics and every job.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Volunteer => "volunteer",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "client" => Ok(Self::Client),
            "volunteer" => Ok(Self::Volunteer),
            "admin" => Ok(Self::Admin),
            other => Err(format!(
                "unknown role {}; use client, volunteer or admin",
                byteedit_edit::quote(other)
            )),
        }
    }
}

/// A freshly made key: `text` is shown once, `secret_hash` is stored.
pub struct IssuedKey {
    pub id: Uuid,
    pub text: String,
    pub secret_hash: Vec<u8>,
}

impl IssuedKey {
    pub fn generate() -> Self {
        let id = Uuid::now_v7();
        // Two v4 UUIDs: 244 bits from the OS's CSPRNG.
        let secret = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
        Self {
            id,
            text: format!("{PREFIX}{}_{secret}", id.simple()),
            secret_hash: secret_hash(&secret),
        }
    }
}

/// Splits a presented key into its id and secret; `None` if it is not
/// shaped like a key at all.
pub fn parse(key: &str) -> Option<(Uuid, &str)> {
    let (id, secret) = key.strip_prefix(PREFIX)?.split_once('_')?;
    let id = Uuid::try_parse(id).ok()?;
    (!secret.is_empty()).then_some((id, secret))
}

pub fn secret_hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Whether `secret` matches the stored hash, in constant time.
pub fn verify(secret: &str, stored_hash: &[u8]) -> bool {
    secret_hash(secret).ct_eq(stored_hash).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_key_parses_and_verifies_and_a_changed_one_does_not() {
        let key = IssuedKey::generate();
        let (id, secret) = parse(&key.text).expect("parses");
        assert_eq!(id, key.id);
        assert!(verify(secret, &key.secret_hash));
        let mut wrong = secret.to_owned();
        wrong.replace_range(0..1, if wrong.starts_with('0') { "1" } else { "0" });
        assert!(!verify(&wrong, &key.secret_hash));
        assert!(parse("vol_abc").is_none());
        assert!(parse("bek_notauuid_secret").is_none());
        assert!(parse(&format!("bek_{}_", key.id.simple())).is_none());
    }

    #[test]
    fn roles_round_trip_through_text() {
        for role in [Role::Client, Role::Volunteer, Role::Admin] {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("root".parse::<Role>().unwrap_err().contains("client"));
    }
}
