//! Canvas geometry that the API needs before a job is queued (to size and
//! check an outpainting canvas) and that a finished job reports.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

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
                format!("`anchor` must be one of {}; got `{s}`", names.join(", "))
            })
    }
}

impl fmt::Display for Anchor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Pixels added on each side of an image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sides {
    pub left: u32,
    pub right: u32,
    pub top: u32,
    pub bottom: u32,
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
    /// The sides to add to a `width`x`height` image (all 0 when nothing was asked).
    pub fn resolve(&self, (width, height): (u32, u32)) -> Result<Sides, String> {
        let sized = self.target_width.is_some()
            || self.target_height.is_some()
            || self.aspect_ratio.is_some();
        if !sized {
            if self.anchor.is_some() {
                return Err(
                    "`anchor` places the image on a `target_width`/`target_height` or `aspect_ratio` canvas; give one of those"
                        .into(),
                );
            }
            return Ok(self.sides);
        }
        if self.sides != Sides::default() {
            return Err(
                "give either `extend_*` or `target_width`/`target_height`/`aspect_ratio`, not both"
                    .into(),
            );
        }
        let target = match self.aspect_ratio {
            Some(_) if self.target_width.is_some() || self.target_height.is_some() => {
                return Err(
                    "give either `aspect_ratio` or `target_width`/`target_height`, not both".into(),
                );
            }
            Some(ratio) => canvas_for_aspect((width, height), ratio),
            None => (
                self.target_width.unwrap_or(width),
                self.target_height.unwrap_or(height),
            ),
        };
        extension_to((width, height), target, self.anchor.unwrap_or_default())
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
            "`aspect_ratio` must be two whole numbers from 1 to 100 written W:H, e.g. 16:9; got `{text}`"
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
        assert!(both.resolve(image).unwrap_err().contains("not both"));
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
        assert!(lone_anchor.resolve(image).unwrap_err().contains("`anchor`"));
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
