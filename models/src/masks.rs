//! Mask operations for editing real photos: grow/shrink, feather, bounding
//! box, and pasting an edit back so that pixels outside the feathered mask
//! stay exactly the input's.

use byteedit_edit::Rect;
pub use byteedit_edit::pixels::is_masked;
use image::{GrayImage, RgbImage};

/// Grows (`px > 0`) or shrinks (`px < 0`) the binarised mask by `|px|` pixels
/// (a square neighbourhood, so the result follows the mask's shape).
pub fn grow(mask: &GrayImage, px: i32) -> GrayImage {
    let mut binary = mask.clone();
    for p in binary.pixels_mut() {
        p.0[0] = if is_masked(p.0[0]) { 255 } else { 0 };
    }
    match px {
        0 => binary,
        p if p > 0 => dilate(&binary, p as u32),
        p => invert(&dilate(&invert(&binary), p.unsigned_abs())),
    }
}

fn invert(mask: &GrayImage) -> GrayImage {
    let mut out = mask.clone();
    for p in out.pixels_mut() {
        p.0[0] = 255 - p.0[0];
    }
    out
}

/// Square dilation of a 0/255 mask: a running count of masked pixels in a
/// sliding window along rows, then columns, so the cost does not depend on `r`.
fn dilate(mask: &GrayImage, r: u32) -> GrayImage {
    let (w, h) = (mask.width() as usize, mask.height() as usize);
    let r = r as usize;
    // One pass: out[i] is set when any of src[i-r ..= i+r] (along a line) is.
    let pass = |src: &[u8], len: usize, lines: usize, at: &dyn Fn(usize, usize) -> usize| {
        let mut out = vec![0u8; src.len()];
        for line in 0..lines {
            let mut count = 0usize;
            for i in 0..r.min(len) {
                count += (src[at(line, i)] == 255) as usize;
            }
            for i in 0..len {
                if i + r < len {
                    count += (src[at(line, i + r)] == 255) as usize;
                }
                if i > r {
                    count -= (src[at(line, i - r - 1)] == 255) as usize;
                }
                out[at(line, i)] = if count > 0 { 255 } else { 0 };
            }
        }
        out
    };
    let rows = pass(mask.as_raw(), w, h, &|y, x| y * w + x);
    let both = pass(&rows, h, w, &|x, y| y * w + x);
    GrayImage::from_raw(w as u32, h as u32, both).unwrap_or_else(|| mask.clone())
}

/// Blend weights in [0, 1], row-major: 1 on the mask, falling to exactly 0
/// within `2 * px` pixels outside it (the mask grown by `px`, box-blurred
/// with radius `px`). `px = 0` is the hard mask.
pub fn feather(mask: &GrayImage, px: u32) -> Vec<f32> {
    let grown = grow(mask, px as i32);
    let (w, h) = (grown.width() as usize, grown.height() as usize);
    let r = px as usize;
    // Summed-area table of masked pixels: exact integer sums, so a window
    // without any masked pixel gives exactly 0.
    let mut table = vec![0u32; (w + 1) * (h + 1)];
    for y in 0..h {
        for x in 0..w {
            let v = (grown.get_pixel(x as u32, y as u32).0[0] == 255) as u32;
            table[(y + 1) * (w + 1) + x + 1] =
                v + table[y * (w + 1) + x + 1] + table[(y + 1) * (w + 1) + x]
                    - table[y * (w + 1) + x];
        }
    }
    let mut alpha = Vec::with_capacity(w * h);
    for y in 0..h {
        for x in 0..w {
            let (x0, x1) = (x.saturating_sub(r), (x + r + 1).min(w));
            let (y0, y1) = (y.saturating_sub(r), (y + r + 1).min(h));
            let sum = table[y1 * (w + 1) + x1] + table[y0 * (w + 1) + x0]
                - table[y0 * (w + 1) + x1]
                - table[y1 * (w + 1) + x0];
            let count = ((x1 - x0) * (y1 - y0)) as u32;
            alpha.push(if sum == count {
                1.0
            } else {
                sum as f32 / count as f32
            });
        }
    }
    alpha
}

/// The masked pixels' bounding box grown by `padding` on every side and
/// clamped to the image; `None` for an empty mask.
pub fn crop_around(mask: &GrayImage, padding: u32) -> Option<Rect> {
    let (w, h) = mask.dimensions();
    let mut bounds: Option<(u32, u32, u32, u32)> = None;
    for (x, y, p) in mask.enumerate_pixels() {
        if is_masked(p.0[0]) {
            let b = bounds.get_or_insert((x, y, x, y));
            *b = (b.0.min(x), b.1.min(y), b.2.max(x), b.3.max(y));
        }
    }
    let (x0, y0, x1, y1) = bounds?;
    let (x0, y0) = (x0.saturating_sub(padding), y0.saturating_sub(padding));
    let (x1, y1) = ((x1 + padding).min(w - 1), (y1 + padding).min(h - 1));
    Some(Rect {
        x: x0,
        y: y0,
        width: x1 - x0 + 1,
        height: y1 - y0 + 1,
    })
}

/// The input with `edited` (the size of `crop`) blended in at `crop` by
/// `alpha` (row-major over the whole input). Where `alpha` is 0 the input
/// pixel is copied untouched, so nothing outside the feathered mask changes.
pub fn paste_back(input: &RgbImage, edited: &RgbImage, crop: Rect, alpha: &[f32]) -> RgbImage {
    let width = input.width();
    let mut out = input.clone();
    for (cx, cy, e) in edited.enumerate_pixels() {
        let (x, y) = (crop.x + cx, crop.y + cy);
        let a = alpha[(y * width + x) as usize];
        if a <= 0.0 {
            continue;
        }
        let o = out.get_pixel_mut(x, y);
        for c in 0..3 {
            let blended = o.0[c] as f32 * (1.0 - a) + e.0[c] as f32 * a;
            o.0[c] = blended.round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Luma, Rgb};
    use proptest::prelude::*;

    /// A random image size and a mask of a few random rectangles.
    fn mask_strategy() -> impl Strategy<Value = GrayImage> {
        (
            1u32..48,
            1u32..48,
            prop::collection::vec((0f64..1.0, 0f64..1.0, 0f64..0.6, 0f64..0.6), 0..4),
        )
            .prop_map(|(w, h, rects)| {
                let mut mask = GrayImage::new(w, h);
                for (fx, fy, fw, fh) in rects {
                    let (x0, y0) = ((fx * w as f64) as u32, (fy * h as f64) as u32);
                    let (x1, y1) = (
                        (x0 + (fw * w as f64) as u32 + 1).min(w),
                        (y0 + (fh * h as f64) as u32 + 1).min(h),
                    );
                    for y in y0..y1 {
                        for x in x0..x1 {
                            mask.put_pixel(x, y, Luma([255]));
                        }
                    }
                }
                mask
            })
    }

    proptest! {
        #[test]
        fn outside_the_feathered_mask_the_input_is_untouched(mask in mask_strategy(), px in 0u32..6, seed in 0u8..255) {
            let (w, h) = mask.dimensions();
            let input = RgbImage::from_fn(w, h, |x, y| Rgb([x as u8, y as u8, seed]));
            let edited_full = RgbImage::from_fn(w, h, |x, y| Rgb([255 - x as u8, seed, y as u8]));
            let alpha = feather(&mask, px);
            let crop = crop_around(&grow(&mask, 2 * px as i32), 0)
                .unwrap_or(Rect::full((w, h)));
            let edited = image::imageops::crop_imm(&edited_full, crop.x, crop.y, crop.width, crop.height).to_image();
            let out = paste_back(&input, &edited, crop, &alpha);
            let band = grow(&mask, 2 * px as i32);
            for (x, y, p) in out.enumerate_pixels() {
                let a = alpha[(y * w + x) as usize];
                if !is_masked(band.get_pixel(x, y).0[0]) {
                    prop_assert_eq!(a, 0.0);
                }
                if a == 0.0 {
                    prop_assert_eq!(p, input.get_pixel(x, y));
                }
                if is_masked(mask.get_pixel(x, y).0[0]) {
                    prop_assert_eq!(a, 1.0);
                    prop_assert_eq!(p, edited_full.get_pixel(x, y));
                }
            }
        }

        #[test]
        fn crop_boxes_stay_inside_and_cover_the_mask(mask in mask_strategy(), padding in 0u32..20) {
            let (w, h) = mask.dimensions();
            match crop_around(&mask, padding) {
                None => prop_assert!(mask.pixels().all(|p| !is_masked(p.0[0]))),
                Some(b) => {
                    prop_assert!(b.x + b.width <= w && b.y + b.height <= h);
                    for (x, y, p) in mask.enumerate_pixels() {
                        if is_masked(p.0[0]) {
                            prop_assert!(x >= b.x && x < b.x + b.width && y >= b.y && y < b.y + b.height);
                        }
                    }
                }
            }
        }

        #[test]
        fn growing_contains_and_shrinking_is_contained(mask in mask_strategy(), px in 1i32..5) {
            let grown = grow(&mask, px);
            let shrunk = grow(&mask, -px);
            for (x, y, p) in mask.enumerate_pixels() {
                let m = is_masked(p.0[0]);
                prop_assert!(!m || is_masked(grown.get_pixel(x, y).0[0]));
                prop_assert!(m || !is_masked(shrunk.get_pixel(x, y).0[0]));
            }
        }
    }

    #[test]
    fn a_single_pixel_grows_into_a_square_and_feathers_to_zero() {
        let mut mask = GrayImage::new(9, 9);
        mask.put_pixel(4, 4, Luma([255]));
        let grown = grow(&mask, 2);
        assert_eq!(grown.pixels().filter(|p| p.0[0] == 255).count(), 25);
        let alpha = feather(&mask, 1);
        assert_eq!(alpha[4 * 9 + 4], 1.0);
        assert!(alpha[4 * 9 + 6] > 0.0 && alpha[4 * 9 + 6] < 1.0);
        assert_eq!(alpha[4 * 9 + 7], 0.0);
    }
}
