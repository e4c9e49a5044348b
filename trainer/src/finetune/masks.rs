//! Training masks, drawn by the paper's four strategies (section 4.1): the
//! whole image (global), brush strokes (irregular), a rectangle (square)
//! and a frame around a kept rectangle (outward, for outpainting); with an
//! instance mask, the instance randomly dilated or a random box around it
//! (inpainting-editing). White (255) = repaint.

use image::GrayImage;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// A fraction of the image's pixels, `[min, max]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Coverage {
    pub min: f64,
    pub max: f64,
}

impl Coverage {
    pub const fn new(min: f64, max: f64) -> Self {
        Self { min, max }
    }

    pub fn contains(&self, c: f64) -> bool {
        c >= self.min && c <= self.max
    }
}

/// How often each strategy is drawn (relative weights) and how much each covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaskConfig {
    pub global: f64,
    pub irregular: f64,
    pub square: f64,
    pub outward: f64,
    pub irregular_coverage: Coverage,
    pub square_coverage: Coverage,
    pub outward_coverage: Coverage,
    /// With an instance mask: the chance of the dilated instance (else a
    /// random box around it), and the largest dilation in pixels.
    pub instance_dilated: f64,
    pub instance_dilation: u32,
}

impl Default for MaskConfig {
    fn default() -> Self {
        Self {
            global: 0.1,
            irregular: 0.3,
            square: 0.3,
            outward: 0.3,
            irregular_coverage: Coverage::new(0.1, 0.5),
            square_coverage: Coverage::new(0.1, 0.5),
            outward_coverage: Coverage::new(0.2, 0.6),
            instance_dilated: 0.5,
            instance_dilation: 16,
        }
    }
}

/// The smallest width of a coverage range: room for one brush dab of
/// overshoot and for rounding a rectangle's sides (see [`MaskConfig::check`]).
const MIN_RANGE: f64 = 0.05;
/// Masks are drawn on images at least this large on each side.
pub const MIN_SIDE: u32 = 32;

/// Which strategy drew a mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Global,
    Irregular,
    Square,
    Outward,
}

impl MaskConfig {
    pub fn check(&self) -> Result<()> {
        let weights = [self.global, self.irregular, self.square, self.outward];
        if weights.iter().any(|w| !w.is_finite() || *w < 0.0) || weights.iter().sum::<f64>() <= 0.0
        {
            return Err(TrainError::Config(
                "masks: the strategy weights (global, irregular, square, outward) must be >= 0 and not all 0".into(),
            ));
        }
        for (name, c) in [
            ("irregular_coverage", self.irregular_coverage),
            ("square_coverage", self.square_coverage),
            ("outward_coverage", self.outward_coverage),
        ] {
            if !(c.min > 0.0 && c.max < 1.0 && c.max - c.min >= MIN_RANGE) {
                return Err(TrainError::Config(format!(
                    "masks.{name} is [{}, {}]: it must lie inside (0, 1) and span at least {MIN_RANGE}",
                    c.min, c.max
                )));
            }
        }
        if !(0.0..=1.0).contains(&self.instance_dilated) {
            return Err(TrainError::Config(format!(
                "masks.instance_dilated is {}: a probability in [0, 1]",
                self.instance_dilated
            )));
        }
        Ok(())
    }

    /// Picks a strategy by weight.
    pub fn pick(&self, rng: &mut impl Rng) -> Strategy {
        let weights = [self.global, self.irregular, self.square, self.outward];
        let total: f64 = weights.iter().sum();
        let mut u = rng.random::<f64>() * total;
        for (w, s) in weights.iter().zip([
            Strategy::Global,
            Strategy::Irregular,
            Strategy::Square,
            Strategy::Outward,
        ]) {
            if u < *w {
                return s;
            }
            u -= w;
        }
        Strategy::Outward
    }

    /// A random mask of `width`×`height` (each ≥ [`MIN_SIDE`]).
    pub fn draw(&self, width: u32, height: u32, rng: &mut impl Rng) -> (Strategy, GrayImage) {
        let strategy = self.pick(rng);
        let mask = match strategy {
            Strategy::Global => GrayImage::from_pixel(width, height, image::Luma([255])),
            Strategy::Irregular => irregular(width, height, self.irregular_coverage, rng),
            Strategy::Square => square(width, height, self.square_coverage, rng),
            Strategy::Outward => outward(width, height, self.outward_coverage, rng),
        };
        (strategy, mask)
    }

    /// A mask for an image with an instance mask: the instance dilated by
    /// up to `instance_dilation` pixels, or a random box around it.
    pub fn around_instance(&self, instance: &GrayImage, rng: &mut impl Rng) -> GrayImage {
        if rng.random::<f64>() < self.instance_dilated {
            let r = rng.random_range(0..=self.instance_dilation);
            dilate(instance, r)
        } else {
            box_around(instance, rng)
        }
    }
}

/// The fraction of white pixels.
pub fn coverage(mask: &GrayImage) -> f64 {
    let white = mask.pixels().filter(|p| p.0[0] >= 128).count();
    white as f64 / (mask.width() as f64 * mask.height() as f64)
}

fn fill_rect(mask: &mut GrayImage, x0: u32, y0: u32, w: u32, h: u32) {
    for y in y0..(y0 + h).min(mask.height()) {
        for x in x0..(x0 + w).min(mask.width()) {
            mask.put_pixel(x, y, image::Luma([255]));
        }
    }
}

/// Brush strokes (random walks of round dabs) until the coverage reaches a
/// target inside the range; the brush is small enough that the last dab
/// cannot overshoot the range's top.
fn irregular(width: u32, height: u32, range: Coverage, rng: &mut impl Rng) -> GrayImage {
    let area = width as f64 * height as f64;
    // Aim in the lower half of the range: the upper half is headroom.
    let target = range.min + rng.random::<f64>() * (range.max - range.min) * 0.5;
    let headroom = (range.max - target) * area;
    // A discrete disc of radius r holds at most about πr² + 4r pixels: at
    // half the continuous bound the last dab stays within the headroom.
    let max_radius =
        ((headroom / std::f64::consts::TAU).sqrt() as u32).clamp(1, width.min(height) / 8 + 1);
    let mut mask = GrayImage::new(width, height);
    let mut white = 0usize;
    while (white as f64) < target * area {
        let radius = rng.random_range(1..=max_radius) as i64;
        let (mut x, mut y) = (
            rng.random_range(0..width) as f64,
            rng.random_range(0..height) as f64,
        );
        let mut angle: f64 = rng.random_range(0.0..std::f64::consts::TAU);
        for _ in 0..rng.random_range(4..24) {
            // One dab.
            let (cx, cy) = (x as i64, y as i64);
            for dy in -radius..=radius {
                for dx in -radius..=radius {
                    let (px, py) = (cx + dx, cy + dy);
                    if dx * dx + dy * dy <= radius * radius
                        && (0..width as i64).contains(&px)
                        && (0..height as i64).contains(&py)
                        && mask.get_pixel(px as u32, py as u32).0[0] == 0
                    {
                        mask.put_pixel(px as u32, py as u32, image::Luma([255]));
                        white += 1;
                    }
                }
            }
            if (white as f64) >= target * area {
                break;
            }
            angle += rng.random_range(-0.8..0.8);
            let step = radius as f64 * 1.5;
            x = (x + angle.cos() * step).clamp(0.0, width as f64 - 1.0);
            y = (y + angle.sin() * step).clamp(0.0, height as f64 - 1.0);
        }
    }
    mask
}

/// Side lengths `(w, h)` inside `(width, height)` whose area fraction is in
/// `range`, near a random target and aspect ratio; full-width rows when the
/// aspect cannot fit.
fn rect_sides(width: u32, height: u32, range: Coverage, rng: &mut impl Rng) -> (u32, u32) {
    let area = width as f64 * height as f64;
    let fits = |w: u32, h: u32| range.contains(w as f64 * h as f64 / area);
    for _ in 0..20 {
        let target = rng.random_range(range.min..=range.max);
        let aspect: f64 = rng.random_range(0.5..2.0);
        let w = ((target * area * aspect).sqrt().round() as u32).clamp(1, width);
        let h = ((target * area / w as f64).round() as u32).clamp(1, height);
        if fits(w, h) {
            return (w, h);
        }
    }
    // Full rows: coverage h / height, off the range's middle by at most
    // half a row, 1/64 at MIN_SIDE, inside a range at least MIN_RANGE wide.
    let mid = (range.min + range.max) / 2.0;
    let h = ((mid * height as f64).round() as u32).clamp(1, height);
    (width, h)
}

fn square(width: u32, height: u32, range: Coverage, rng: &mut impl Rng) -> GrayImage {
    let (w, h) = rect_sides(width, height, range, rng);
    let mut mask = GrayImage::new(width, height);
    let x0 = rng.random_range(0..=width - w);
    let y0 = rng.random_range(0..=height - h);
    fill_rect(&mut mask, x0, y0, w, h);
    mask
}

/// Everything but a kept rectangle that touches at most three sides, so
/// the masked frame always reaches the border (the outpainting case).
fn outward(width: u32, height: u32, range: Coverage, rng: &mut impl Rng) -> GrayImage {
    let keep_range = Coverage::new(1.0 - range.max, 1.0 - range.min);
    // The keep range tops out below 1, so the rectangle never fills the image.
    let (kw, kh) = rect_sides(width, height, keep_range, rng);
    let mut mask = GrayImage::from_pixel(width, height, image::Luma([255]));
    let x0 = rng.random_range(0..=width - kw);
    let y0 = rng.random_range(0..=height - kh);
    for y in y0..y0 + kh {
        for x in x0..x0 + kw {
            mask.put_pixel(x, y, image::Luma([0]));
        }
    }
    mask
}

/// The instance grown by `r` pixels (square structuring element).
pub fn dilate(instance: &GrayImage, r: u32) -> GrayImage {
    let (w, h) = instance.dimensions();
    let r = r as i64;
    // Separable max filter: rows, then columns.
    let mut rows = GrayImage::new(w, h);
    for y in 0..h {
        for x in 0..w as i64 {
            let hit = (x - r..=x + r)
                .filter(|&xx| (0..w as i64).contains(&xx))
                .any(|xx| instance.get_pixel(xx as u32, y).0[0] >= 128);
            if hit {
                rows.put_pixel(x as u32, y, image::Luma([255]));
            }
        }
    }
    let mut out = GrayImage::new(w, h);
    for x in 0..w {
        for y in 0..h as i64 {
            let hit = (y - r..=y + r)
                .filter(|&yy| (0..h as i64).contains(&yy))
                .any(|yy| rows.get_pixel(x, yy as u32).0[0] >= 128);
            if hit {
                out.put_pixel(x, y as u32, image::Luma([255]));
            }
        }
    }
    out
}

/// The instance's bounding box, each side pushed out by a random margin
/// (up to a quarter of the image side); an empty instance gives the whole image.
fn box_around(instance: &GrayImage, rng: &mut impl Rng) -> GrayImage {
    let (w, h) = instance.dimensions();
    let white: Vec<(u32, u32)> = instance
        .enumerate_pixels()
        .filter(|(_, _, p)| p.0[0] >= 128)
        .map(|(x, y, _)| (x, y))
        .collect();
    if white.is_empty() {
        return GrayImage::from_pixel(w, h, image::Luma([255]));
    }
    let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
    for (x, y) in white {
        (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
    }
    let mut margin = |side: u32| rng.random_range(0..=side / 4);
    let (mx0, my0, mx1, my1) = (margin(w), margin(h), margin(w), margin(h));
    let (x0, y0) = (x0.saturating_sub(mx0), y0.saturating_sub(my0));
    let (x1, y1) = ((x1 + mx1).min(w - 1), (y1 + my1).min(h - 1));
    let mut mask = GrayImage::new(w, h);
    fill_rect(&mut mask, x0, y0, x1 - x0 + 1, y1 - y0 + 1);
    mask
}

/// Whether any white pixel lies on the image's border.
pub fn touches_border(mask: &GrayImage) -> bool {
    let (w, h) = mask.dimensions();
    let white = |x: u32, y: u32| mask.get_pixel(x, y).0[0] >= 128;
    (0..w).any(|x| white(x, 0) || white(x, h - 1)) || (0..h).any(|y| white(0, y) || white(w - 1, y))
}
