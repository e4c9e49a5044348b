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
    /// Secret that `POST /v1/volunteers` needs (header `X-Admin-Token`) to
    /// register an expert; without it no experts can be registered. API keys
    /// with roles replace this with issue 6.
    #[arg(long, env = "BYTEEDIT_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}

impl Default for ApiArgs {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            default_model: None,
            max_upload_mb: 64,
            max_image_side: 4096,
            max_megapixels: 16.0,
            admin_token: None,
        }
    }
}
