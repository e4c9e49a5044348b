//! The API's flags and environment variables: the clap surface only. The
//! process turns them into [`Settings`] once ([`ApiArgs::settings`]); the
//! rest of the crate reads those.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use crate::settings::{
    HttpLimits, RateLimits, RetentionSettings, Settings, UploadLimits, WebhookSettings,
    duration_at_least,
};

#[derive(Args, Debug, Clone)]
pub struct ApiArgs {
    /// Address to listen on.
    #[arg(long, env = "BYTEEDIT_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// Model used when a request names none. Unset: the only model served.
    #[arg(long, env = "BYTEEDIT_DEFAULT_MODEL")]
    pub default_model: Option<String>,
    /// Largest `POST /v1/edits` body, in megabytes (image + mask + fields).
    #[arg(long, env = "BYTEEDIT_MAX_UPLOAD_MB", default_value_t = 64)]
    pub max_upload_mb: usize,
    /// Longest image side accepted, in pixels (after outpainting extension).
    #[arg(long, env = "BYTEEDIT_MAX_IMAGE_SIDE", default_value_t = 4096)]
    pub max_image_side: u32,
    /// Most pixels accepted, in megapixels (after outpainting extension).
    #[arg(long, env = "BYTEEDIT_MAX_MEGAPIXELS", default_value_t = 16.0)]
    pub max_megapixels: f64,
    /// Requests a minute per API key (a key may have its own limit).
    #[arg(long, env = "BYTEEDIT_RATE_LIMIT", default_value_t = 600,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit: u32,
    /// Requests a key may make at once before the per-minute pace applies.
    #[arg(long, env = "BYTEEDIT_RATE_BURST", default_value_t = 60,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_burst: u32,
    /// Queued jobs per model beyond which submissions get 429 (admission
    /// control: a client then waits instead of growing an unbounded backlog).
    #[arg(long, env = "BYTEEDIT_MAX_QUEUED", default_value_t = 1000,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub max_queued: u64,
    /// How long a finished job keeps its images (input, mask, outputs):
    /// `7d`, `12h`, `30m`, `90s`; `0` or `none` keeps them forever. Jobs
    /// that comparisons or ratings use are always kept.
    #[arg(long, env = "BYTEEDIT_RETENTION", default_value = "7d", value_parser = parse_retention)]
    pub retention: Retention,
    /// Seconds between retention sweeps.
    #[arg(long, env = "BYTEEDIT_RETENTION_SWEEP_SECS", default_value_t = 300.0, value_parser = byteedit_jobs::config::parse_seconds)]
    pub retention_sweep_secs: f64,
    /// Key of the `ByteEdit-Signature` HMAC on webhook deliveries. Without
    /// it deliveries are sent unsigned (receivers cannot tell them from forgeries).
    #[arg(long, env = "BYTEEDIT_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// Attempts per webhook delivery before it is given up.
    #[arg(long, env = "BYTEEDIT_WEBHOOK_MAX_ATTEMPTS", default_value_t = 8)]
    pub webhook_max_attempts: u32,
    /// Delay before the first webhook retry, in seconds; it doubles with each
    /// attempt (at most an hour).
    #[arg(long, env = "BYTEEDIT_WEBHOOK_BACKOFF_SECS", default_value_t = 10.0, value_parser = byteedit_jobs::config::parse_seconds)]
    pub webhook_backoff_secs: f64,
    /// Seconds a receiver has to answer a delivery.
    #[arg(long, env = "BYTEEDIT_WEBHOOK_TIMEOUT_SECS", default_value_t = 10.0, value_parser = byteedit_jobs::config::parse_seconds)]
    pub webhook_timeout_secs: f64,
    /// This API's public base URL (e.g. `https://edit.example.com`), put in
    /// front of the output paths in webhook bodies. Unset: paths only.
    #[arg(long, env = "BYTEEDIT_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Seconds a client has to send a request's line and headers, from the
    /// moment its connection can take one (opened, or the previous response
    /// sent): so also how long an idle keep-alive connection stays open.
    #[arg(long, env = "BYTEEDIT_HEADER_TIMEOUT_SECS", default_value_t = 15.0, value_parser = byteedit_jobs::config::parse_seconds)]
    pub header_timeout_secs: f64,
    /// Seconds a client has to send a request's whole body once its headers
    /// arrived (the default lets a phone send a 64 MB upload at 2 Mbit/s).
    /// Past it the request gets a 408 and the connection is closed.
    #[arg(long, env = "BYTEEDIT_BODY_TIMEOUT_SECS", default_value_t = 300.0, value_parser = byteedit_jobs::config::parse_seconds)]
    pub body_timeout_secs: f64,
    /// Connections served at once (event streams included); one more is
    /// answered 503 `too_many_connections` and closed.
    #[arg(long, env = "BYTEEDIT_MAX_CONNECTIONS", default_value_t = 1024,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,
}

/// How long finished jobs keep their images; `None`: forever. (A newtype,
/// because clap reads an `Option` field as "the flag may be absent".)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention(pub Option<Duration>);

/// `7d`, `12h`, `30m`, `90s` or a number of seconds; `0`/`none`/`forever`: no expiry.
pub fn parse_retention(raw: &str) -> Result<Retention, String> {
    parse_duration(raw).map(Retention)
}

fn parse_duration(raw: &str) -> Result<Option<Duration>, String> {
    let raw = raw.trim();
    if matches!(raw, "none" | "forever" | "never") {
        return Ok(None);
    }
    let (number, unit) = match raw.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => raw.split_at(i),
        None => (raw, "s"),
    };
    let scale = match unit {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => {
            return Err(format!(
                "`{raw}`: use a number with s, m, h or d (e.g. 7d), or none"
            ));
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{raw}`: use a number with s, m, h or d (e.g. 7d), or none"))?;
    // Up to a century: beyond it a Duration would overflow.
    if !value.is_finite() || value < 0.0 || value * scale > 3.2e9 {
        return Err(format!("`{raw}` must be 0 to about 100 years"));
    }
    Ok((value > 0.0).then(|| Duration::from_secs_f64(value * scale)))
}

impl ApiArgs {
    /// The settings each part of the API reads, from these flags.
    pub fn settings(&self) -> Settings {
        // Periods are at least 0.1 s: a zero one would spin.
        let tenth = Duration::from_millis(100);
        Settings {
            uploads: UploadLimits {
                max_image_side: self.max_image_side,
                max_megapixels: self.max_megapixels,
                max_upload_mb: self.max_upload_mb,
            },
            default_model: self.default_model.clone(),
            rate: RateLimits {
                per_minute: self.rate_limit,
                burst: self.rate_burst,
                max_queued: self.max_queued,
            },
            retention: RetentionSettings {
                keep: self.retention.0,
                sweep_every: duration_at_least(self.retention_sweep_secs, tenth),
            },
            webhooks: WebhookSettings {
                secret: self.webhook_secret.clone(),
                max_attempts: self.webhook_max_attempts,
                backoff: duration_at_least(self.webhook_backoff_secs, Duration::ZERO),
                timeout: duration_at_least(self.webhook_timeout_secs, tenth),
                public_url: self.public_url.clone(),
            },
            http: HttpLimits {
                header_timeout: duration_at_least(self.header_timeout_secs, tenth),
                body_timeout: duration_at_least(self.body_timeout_secs, tenth),
                max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
            },
        }
    }
}

impl Default for ApiArgs {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            default_model: None,
            max_upload_mb: 64,
            max_image_side: 4096,
            max_megapixels: 16.0,
            rate_limit: 600,
            rate_burst: 60,
            max_queued: 1000,
            retention: Retention(Some(Duration::from_secs(7 * 86400))),
            retention_sweep_secs: 300.0,
            webhook_secret: None,
            webhook_max_attempts: 8,
            webhook_backoff_secs: 10.0,
            webhook_timeout_secs: 10.0,
            public_url: None,
            header_timeout_secs: 15.0,
            body_timeout_secs: 300.0,
            max_connections: 1024,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_durations_parse() {
        let secs = |s| Ok(Retention(Some(Duration::from_secs(s))));
        assert_eq!(parse_retention("7d"), secs(604_800));
        assert_eq!(parse_retention("12h"), secs(43_200));
        assert_eq!(parse_retention("90"), secs(90));
        assert_eq!(parse_retention("0"), Ok(Retention(None)));
        assert_eq!(parse_retention("none"), Ok(Retention(None)));
        assert!(parse_retention("7w").unwrap_err().contains("7w"));
        assert!(parse_retention("-1d").is_err());
    }

    /// The flags as the binary parses them (defaults included).
    #[test]
    fn the_flags_parse_with_their_defaults() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            api: ApiArgs,
        }
        let cli = Cli::try_parse_from(["byteedit"]).unwrap();
        assert_eq!(cli.api.retention, ApiArgs::default().retention);
        assert_eq!(cli.api.webhook_max_attempts, 8);
        let cli = Cli::try_parse_from(["byteedit", "--retention", "none", "--webhook-secret", "s"])
            .unwrap();
        assert_eq!(cli.api.retention, Retention(None));
        assert_eq!(cli.api.webhook_secret.as_deref(), Some("s"));
        assert!(Cli::try_parse_from(["byteedit", "--retention", "soon"]).is_err());
    }

    #[test]
    fn settings_carry_the_flags() {
        let args = ApiArgs {
            max_upload_mb: 3,
            webhook_secret: Some("s".into()),
            retention_sweep_secs: 0.0,
            ..ApiArgs::default()
        };
        let settings = args.settings();
        assert_eq!(settings.uploads.max_upload_bytes(), 3 * 1024 * 1024);
        assert_eq!(settings.uploads.max_image_side, 4096);
        assert_eq!(settings.rate.per_minute, 600);
        assert_eq!(settings.webhooks.secret.as_deref(), Some("s"));
        assert_eq!(settings.webhooks.backoff, Duration::from_secs(10));
        assert_eq!(
            settings.retention.keep,
            Some(Duration::from_secs(7 * 86400))
        );
        assert_eq!(settings.retention.sweep_every, Duration::from_millis(100));
        assert_eq!(settings.http, crate::settings::HttpLimits::default());
    }
}
