//! What each part of the API needs to know, as plain values. They are built
//! once from the flags ([`crate::ApiArgs::settings`]) where the process is
//! assembled, so domain code never sees clap, and tests can state exactly
//! the settings they mean.

use std::time::Duration;

/// Everything the API reads from its configuration, by consumer.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The uploads accepted (`validation.rs`, the multipart routes' body limit).
    pub uploads: UploadLimits,
    /// Model used when a request names none; `None`: the only model served.
    pub default_model: Option<String>,
    /// Per-key pace and queue admission (`limits.rs`).
    pub rate: RateLimits,
    /// The retention sweep (`retention.rs`).
    pub retention: RetentionSettings,
    /// The webhook dispatcher (`webhooks.rs`).
    pub webhooks: WebhookSettings,
    /// Connection and body-read limits (`server.rs`, `routes/guards.rs`).
    pub http: HttpLimits,
}

/// How long a client may take and how many may be connected: what keeps
/// slow or idle clients from holding the server's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// A request's line and headers must arrive within this, counted from
    /// the moment the connection can take a request (when it opens, or when
    /// the previous response on it ended): so it is also the keep-alive
    /// idle timeout. hyper's `header_read_timeout`.
    pub header_timeout: Duration,
    /// A request's whole body must arrive within this after its headers.
    pub body_timeout: Duration,
    /// Connections served at once; one more gets a 503 and is closed.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(15),
            body_timeout: Duration::from_secs(300),
            max_connections: 1024,
        }
    }
}

/// The largest uploads accepted; sides and megapixels apply after
/// outpainting extension.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct UploadLimits {
    /// Longest side of the image (and of the outpainted canvas), in pixels.
    pub max_image_side: u32,
    /// Most pixels of the image (and of the outpainted canvas), in millions.
    pub max_megapixels: f64,
    /// Largest body of a multipart route (image + mask + fields), in megabytes.
    pub max_upload_mb: usize,
}

impl UploadLimits {
    /// [`UploadLimits::max_upload_mb`] in bytes.
    pub fn max_upload_bytes(&self) -> usize {
        self.max_upload_mb.saturating_mul(1024 * 1024)
    }
}

/// How fast a key may call, and how deep a model's queue may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Requests a minute per key, unless the key has a limit of its own.
    pub per_minute: u32,
    /// Requests a key may make at once before the pace applies.
    pub burst: u32,
    /// Queued jobs per model beyond which submissions get 429.
    pub max_queued: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionSettings {
    /// How long a finished job keeps its images; `None`: forever.
    pub keep: Option<Duration>,
    /// Time between two sweeps.
    pub sweep_every: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WebhookSettings {
    /// Key of the `ByteEdit-Signature` HMAC; `None`: deliveries are unsigned.
    pub secret: Option<String>,
    /// Attempts per delivery before it is given up.
    pub max_attempts: u32,
    /// Wait before the first retry; it doubles with each attempt.
    pub backoff: Duration,
    /// Time a receiver has to answer.
    pub timeout: Duration,
    /// Put in front of output paths in bodies (`https://edit.example.com`).
    pub public_url: Option<String>,
}

/// `secs` as a duration of at least `min` (a zero period would spin; the
/// flags refuse negative and non-finite values, a struct literal may not).
pub(crate) fn duration_at_least(secs: f64, min: Duration) -> Duration {
    Duration::try_from_secs_f64(secs)
        .unwrap_or(if secs > 0.0 { Duration::MAX } else { min })
        .max(min)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_clamped_not_panicking() {
        let min = Duration::from_millis(100);
        assert_eq!(duration_at_least(2.5, min), Duration::from_millis(2500));
        assert_eq!(duration_at_least(0.0, min), min);
        assert_eq!(duration_at_least(-1.0, min), min);
        assert_eq!(duration_at_least(f64::NAN, min), min);
        assert_eq!(duration_at_least(f64::INFINITY, min), Duration::MAX);
    }
}
