//! API settings (flags and environment).

use std::net::SocketAddr;

use clap::Args;

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
        }
    }
}
