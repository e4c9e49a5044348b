//! Canvas geometry: how an outpainting canvas is sized (the API checks it
//! before a job is queued, the engine builds it), the rectangles of the
//! canvas, the size the model works at, and the report a finished job gives.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::quote;

/// Where the original image sits on a larger outpainting canvas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Anchor {
    TopLeft,
    Top,
    TopRight,
    Left,
    #[default]
    Center,
    Right,
    BottomLeft,
    Bottom,
    BottomRight,
}

impl Anchor {
    pub const ALL: [Anchor; 9] = [
        Self::TopLeft,
        Self::Top,
        Self::TopRight,
        Self::Left,
        Self::Center,
        Self::Right,
        Self::BottomLeft,
        Self::Bottom,
        Self::BottomRight,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::TopLeft => "top-left",
            Self::Top => "top",
            Self::TopRight => "top-right",
            Self::Left => "left",
            Self::Center => "center",
            Self::Right => "right",
            Self::BottomLeft => "bottom-left",
            Self::Bottom => "bottom",
            Self::BottomRight => "bottom-right",
        }
    }

    /// The share of the added width and height that goes left and above, in halves.
    fn halves(self) -> (u32, u32) {
        let x = match self {
            Self::TopLeft | Self::Left | Self::BottomLeft => 0,
            Self::Top | Self::Center | Self::Bottom => 1,
            Self::TopRight | Self::Right | Self::BottomRight => 2,
        };
        let y = match self {
            Self::TopLeft | Self::Top | Self::TopRight => 0,
            Self::Left | Self::Center | Self::Right => 1,
            Self::BottomLeft | Self::Bottom | Self::BottomRight => 2,
        };
        (x, y)
    }
}

impl FromStr for Anchor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|a| a.as_str()).collect();
                format!(
                    "`anchor` must be one of {}; got {}",
                    names.join(", "),
                    quote(s)
                )
            })
    }
}

impl fmt::Display for Anchor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Pixels added on each side of an image (outpainting).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sides {
    pub left: u32,
    pub right: u32,
    pub top: u32,
    pub bottom: u32,
}

impl Sides {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The size of a `width`x`height` image with these sides added.
    pub fn extend(&self, (width, height): (u32, u32)) -> (u32, u32) {
        (
            width + self.left + self.right,
            height + self.top + self.bottom,
        )
    }
}

/// How the caller asked to extend an image: explicit sides, or a target
/// size or aspect ratio with an anchor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutpaintRequest {
    pub sides: Sides,
    pub target_width: Option<u32>,
    pub target_height: Option<u32>,
    pub aspect_ratio: Option<(u32, u32)>,
    pub anchor: Option<Anchor>,
}

impl OutpaintRequest {
    /// The sides to add to a `width`x`height` image (all 0 when nothing was
    /// asked), or the field at fault and why.
    pub fn resolve(&self, (width, height): (u32, u32)) -> Result<Sides, (&'static str, String)> {
        let sized = self.target_width.is_some()
            || self.target_height.is_some()
            || self.aspect_ratio.is_some();
        if !sized {
            if self.anchor.is_some() {
                return Err((
                    "anchor",
                    "`anchor` places the image on a `target_width`/`target_height` or `aspect_ratio` canvas; give one of those"
                        .into(),
                ));
            }
            return Ok(self.sides);
        }
        let sized_field = if self.aspect_ratio.is_some() {
            "aspect_ratio"
        } else if self.target_width.is_some() {
            "target_width"
        } else {
            "target_height"
        };
        if !self.sides.is_empty() {
            return Err((
                sized_field,
                "give either `extend_*` or `target_width`/`target_height`/`aspect_ratio`, not both"
                    .into(),
            ));
        }
        let target = match self.aspect_ratio {
            Some(_) if self.target_width.is_some() || self.target_height.is_some() => {
                return Err((
                    "aspect_ratio",
                    "give either `aspect_ratio` or `target_width`/`target_height`, not both".into(),
                ));
            }
            Some(ratio) => canvas_for_aspect((width, height), ratio),
            None => (
                self.target_width.unwrap_or(width),
                self.target_height.unwrap_or(height),
            ),
        };
        extension_to((width, height), target, self.anchor.unwrap_or_default())
            .map_err(|m| (sized_field, m))
    }
}

/// The extension that turns a `width`x`height` image into a `target`
/// canvas with the image at `anchor`. The target may not be smaller.
pub fn extension_to(
    (width, height): (u32, u32),
    (target_w, target_h): (u32, u32),
    anchor: Anchor,
) -> Result<Sides, String> {
    if target_w < width || target_h < height {
        return Err(format!(
            "the target canvas {target_w}x{target_h} (`target_width` x `target_height`) is smaller than the image ({width}x{height}); outpainting only extends"
        ));
    }
    let (ax, ay) = anchor.halves();
    let (dw, dh) = (target_w - width, target_h - height);
    let (left, top) = (dw * ax / 2, dh * ay / 2);
    Ok(Sides {
        left,
        right: dw - left,
        top,
        bottom: dh - top,
    })
}

/// The smallest canvas that holds a `width`x`height` image and has the
/// aspect ratio `ratio_w:ratio_h` (one side is kept, the other grows).
pub fn canvas_for_aspect(
    (width, height): (u32, u32),
    (ratio_w, ratio_h): (u32, u32),
) -> (u32, u32) {
    let (w, h, rw, rh) = (width as u64, height as u64, ratio_w as u64, ratio_h as u64);
    if w * rh >= h * rw {
        // Wider than the ratio: grow the height.
        (width, ((w * rh).div_ceil(rw)).max(h) as u32)
    } else {
        (((h * rw).div_ceil(rh)).max(w) as u32, height)
    }
}

/// Parses an aspect ratio written `W:H` (e.g. `16:9`).
pub fn parse_aspect(text: &str) -> Result<(u32, u32), String> {
    let bad = || {
        format!(
            "`aspect_ratio` must be two whole numbers from 1 to 100 written W:H, e.g. 16:9; got {}",
            quote(text)
        )
    };
    let (w, h) = text.split_once(':').ok_or_else(bad)?;
    let side = |s: &str| {
        s.trim()
            .parse::<u32>()
            .ok()
            .filter(|v| (1..=100).contains(v))
    };
    match (side(w), side(h)) {
        (Some(w), Some(h)) => Ok((w, h)),
        _ => Err(bad()),
    }
}

/// A rectangle of the canvas, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl Rect {
    /// The whole of a `width`x`height` image.
    pub fn full((width, height): (u32, u32)) -> Self {
        Self {
            x: 0,
            y: 0,
            width,
            height,
        }
    }
}

/// Largest side of a working size the caller may ask for: the model's
/// memory grows with the square of the latent tokens.
pub const MAX_WORKING_SIDE: u32 = 2048;

/// The size the model edits the crop at, as the caller chose it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WorkingSize {
    /// The crop's aspect ratio at the model's native area (`sample_size`
    /// latents squared): what the model was trained for.
    #[default]
    Native,
    /// The crop as it is, each side rounded to the VAE factor (as
    /// IOPaint's "original" strategy).
    Original,
    /// Exactly this size (as diffusers' `width` and `height`); both sides
    /// multiples of the VAE factor.
    Exact { width: u32, height: u32 },
}

impl WorkingSize {
    /// The working size for a `width`x`height` crop on a model whose native
    /// side is `native` and whose sides must be multiples of `multiple`.
    pub fn for_crop(&self, (width, height): (u32, u32), native: u32, multiple: u32) -> (u32, u32) {
        let m = multiple.max(1);
        let round = |v: f64| ((v / m as f64).round() as u32).max(1) * m;
        match *self {
            Self::Native => {
                let scale = (native as f64 * native as f64 / (width as f64 * height as f64)).sqrt();
                (round(width as f64 * scale), round(height as f64 * scale))
            }
            Self::Original => (round(width as f64), round(height as f64)),
            Self::Exact { width, height } => (width, height),
        }
    }

    /// The nearest size whose sides are multiples of `multiple`, for
    /// messages that suggest one.
    pub fn suggest((width, height): (u32, u32), multiple: u32) -> (u32, u32) {
        Self::Original.for_crop((width, height), 0, multiple)
    }
}

impl FromStr for WorkingSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "`working_size` must be `native`, `original` or WIDTHxHEIGHT (e.g. 512x768, each side 1 to {MAX_WORKING_SIDE}); got {}",
                quote(s)
            )
        };
        match s {
            "native" => return Ok(Self::Native),
            "original" => return Ok(Self::Original),
            _ => {}
        }
        let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
        let side = |v: &str| {
            v.parse::<u32>()
                .ok()
                .filter(|v| (1..=MAX_WORKING_SIDE).contains(v))
        };
        match (side(w), side(h)) {
            (Some(width), Some(height)) => Ok(Self::Exact { width, height }),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for WorkingSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Native => f.write_str("native"),
            Self::Original => f.write_str("original"),
            Self::Exact { width, height } => write!(f, "{width}x{height}"),
        }
    }
}

impl Serialize for WorkingSize {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for WorkingSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The geometry an edit used, reported with its result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Geometry {
    /// The canvas: the input, extended when outpainting. Outputs have this size.
    pub canvas_width: u32,
    pub canvas_height: u32,
    /// Where the input sits on the canvas.
    pub image: Rect,
    /// The region around the mask that the model edited.
    pub crop: Rect,
    /// The size the crop was resized to for the model (multiples of the VAE factor).
    pub working_width: u32,
    pub working_height: u32,
    /// Pixels of the canvas inside the final mask (after grow/shrink, with the outpaint area).
    pub masked_pixels: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_place_the_image() {
        let s = extension_to((100, 50), (140, 90), Anchor::Center).unwrap();
        assert_eq!((s.left, s.right, s.top, s.bottom), (20, 20, 20, 20));
        let s = extension_to((100, 50), (141, 50), Anchor::Center).unwrap();
        assert_eq!((s.left, s.right), (20, 21));
        let s = extension_to((100, 50), (140, 90), Anchor::TopLeft).unwrap();
        assert_eq!((s.left, s.right, s.top, s.bottom), (0, 40, 0, 40));
        let s = extension_to((100, 50), (140, 90), Anchor::BottomRight).unwrap();
        assert_eq!((s.left, s.right, s.top, s.bottom), (40, 0, 40, 0));
        let s = extension_to((100, 50), (140, 90), Anchor::Bottom).unwrap();
        assert_eq!((s.left, s.right, s.top, s.bottom), (20, 20, 40, 0));
        assert!(extension_to((100, 50), (99, 90), Anchor::Center).is_err());
    }

    #[test]
    fn requests_resolve_or_say_what_conflicts() {
        let image = (100, 50);
        let sides = Sides {
            left: 3,
            ..Default::default()
        };
        let given = OutpaintRequest {
            sides,
            ..Default::default()
        };
        assert_eq!(given.resolve(image), Ok(sides));
        let both = OutpaintRequest {
            target_width: Some(120),
            ..given
        };
        assert!(both.resolve(image).unwrap_err().1.contains("not both"));
        let ratio = OutpaintRequest {
            aspect_ratio: Some((1, 1)),
            anchor: Some(Anchor::Top),
            ..Default::default()
        };
        let s = ratio.resolve(image).unwrap();
        assert_eq!((s.left, s.right, s.top, s.bottom), (0, 0, 0, 50));
        let lone_anchor = OutpaintRequest {
            anchor: Some(Anchor::Left),
            ..Default::default()
        };
        assert_eq!(lone_anchor.resolve(image).unwrap_err().0, "anchor");
    }

    #[test]
    fn working_sizes_follow_the_choice() {
        // A 96x64 crop on a 64-px-native model with factor 8.
        assert_eq!(WorkingSize::Native.for_crop((96, 64), 64, 8), (80, 56));
        assert_eq!(WorkingSize::Original.for_crop((96, 64), 64, 8), (96, 64));
        assert_eq!(WorkingSize::Original.for_crop((99, 61), 64, 8), (96, 64));
        assert_eq!(WorkingSize::Original.for_crop((3, 2), 64, 8), (8, 8));
        let exact = WorkingSize::Exact {
            width: 128,
            height: 64,
        };
        assert_eq!(exact.for_crop((96, 64), 64, 8), (128, 64));
        for text in ["native", "original", "128x64"] {
            assert_eq!(text.parse::<WorkingSize>().unwrap().to_string(), text);
        }
        assert_eq!("128X64".parse::<WorkingSize>(), Ok(exact));
        for bad in ["", "big", "0x64", "64x", "64x4097", "x", "-8x8"] {
            let err = bad.parse::<WorkingSize>().unwrap_err();
            assert!(err.contains("`working_size`"), "{bad}: {err}");
        }
    }

    #[test]
    fn aspect_canvases_hold_the_image() {
        assert_eq!(canvas_for_aspect((1000, 1000), (16, 9)), (1778, 1000));
        assert_eq!(canvas_for_aspect((1600, 900), (1, 1)), (1600, 1600));
        assert_eq!(canvas_for_aspect((1600, 900), (16, 9)), (1600, 900));
        assert_eq!(canvas_for_aspect((7, 3), (1, 2)), (7, 14));
        assert_eq!(parse_aspect("16:9"), Ok((16, 9)));
        assert!(parse_aspect("16x9").is_err());
        assert!(parse_aspect("0:9").is_err());
    }
}
