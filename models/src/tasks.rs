//! The editing tasks on real photos: from an input of any size (and its
//! mask) to the small image the model edits, and back.
//!
//! [`EditPlan::new`] builds the canvas (the input, extended when
//! outpainting), the final mask (grown or shrunk, plus the outpaint area and
//! its overlap into the original), the feathered paste weights, and the crop
//! around the mask resized to the model's working size. [`EditPlan::finish`]
//! takes the model's output back: colour matching (optional), resizing to the
//! crop, and pasting, so every pixel outside the feathered mask is the input's.

use image::imageops::{self, FilterType};
use image::{GrayImage, Luma, Rgb, RgbImage};

use byteedit_edit::geometry::MAX_WORKING_SIDE;
use byteedit_edit::{EditParams, Rect, Sides, WorkingSize, defaults};

use crate::error::{ModelError, Result};
use crate::masks::{self, is_masked};

/// Which part of the canvas the model sees.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Region {
    /// The mask's bounding box plus padding ("only masked"): large photos
    /// are not squashed, and small masks get the model's full resolution.
    #[default]
    Masked,
    /// The whole canvas (diffusers' default behaviour).
    Full,
}

/// How a task turns its inputs into an edit.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskOptions {
    /// Outpainting: how far to extend each side.
    pub extension: Sides,
    /// Outpainting: how far the mask reaches into the original from each
    /// extended side, so the seam is repainted and blended.
    pub overlap: u32,
    /// Grow (> 0) or shrink (< 0) the caller's mask, in pixels.
    pub mask_grow: i32,
    /// Width of the blend band, in pixels: paste weights fall from 1 on the
    /// mask to exactly 0 within `2 * mask_feather` pixels outside it.
    pub mask_feather: u32,
    /// Context kept around the mask when cropping, in pixels.
    pub crop_padding: u32,
    pub region: Region,
    /// Match the generated region's colour statistics to its surroundings.
    pub color_match: bool,
    /// Paste the edit into the input (`false`: the model's whole output, as
    /// diffusers returns it).
    pub paste_back: bool,
    /// Resize a mask of another size to the image instead of refusing it.
    pub resize_mask: bool,
    /// The size the crop is edited at.
    pub working_size: WorkingSize,
}

impl Default for TaskOptions {
    fn default() -> Self {
        Self {
            extension: Sides::default(),
            overlap: defaults::OVERLAP,
            mask_grow: 0,
            mask_feather: defaults::MASK_FEATHER,
            crop_padding: defaults::CROP_PADDING,
            region: Region::Masked,
            color_match: false,
            paste_back: true,
            resize_mask: false,
            working_size: WorkingSize::Native,
        }
    }
}

impl TaskOptions {
    /// The options of a validated request (the crop around the mask,
    /// pasted back: what the service runs; the CLI may widen the region).
    pub fn for_params(p: &EditParams) -> Self {
        Self {
            extension: p.sides(),
            overlap: p.overlap,
            mask_grow: p.mask_grow,
            mask_feather: p.mask_feather,
            crop_padding: p.crop_padding,
            region: Region::Masked,
            color_match: p.color_match,
            paste_back: true,
            resize_mask: p.mask_resize,
            working_size: p.working_size,
        }
    }
}

/// What a model works at: crops are resized to about `native`² pixels by
/// default, with sides that are multiples of `multiple` (the VAE factor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NativeSize {
    pub native: u32,
    pub multiple: u32,
}

impl NativeSize {
    /// The size a `width`x`height` crop is edited at under `choice`, or why
    /// it cannot be (a size the VAE cannot take, or one too large).
    pub fn working_size(
        &self,
        choice: WorkingSize,
        (width, height): (u32, u32),
    ) -> Result<(u32, u32)> {
        let m = self.multiple.max(1);
        let (ww, wh) = choice.for_crop((width, height), self.native, m);
        if !ww.is_multiple_of(m) || !wh.is_multiple_of(m) {
            let (sw, sh) = WorkingSize::suggest((ww, wh), m);
            return Err(ModelError::InvalidInput(format!(
                "working size {ww}x{wh} does not fit the model: both sides must be multiples of {m}; use e.g. {sw}x{sh}"
            )));
        }
        if choice != WorkingSize::Native && ww.max(wh) > MAX_WORKING_SIDE {
            return Err(ModelError::InvalidInput(format!(
                "the crop is {width}x{height}; working size `{choice}` would edit it at {ww}x{wh}, \
                 but at most {MAX_WORKING_SIDE} pixels a side are allowed: use `native` or a smaller WxH"
            )));
        }
        Ok((ww, wh))
    }
}

/// Everything one edit needs, computed once per job (shared by its outputs).
#[derive(Debug, Clone)]
pub struct EditPlan {
    /// The input, extended (edge-aware fill) when outpainting. Outputs have its size.
    pub canvas: RgbImage,
    /// The final binary mask on the canvas.
    pub mask: GrayImage,
    /// Paste weights over the canvas, row-major: 1 on the mask, 0 beyond the feather band.
    pub alpha: Vec<f32>,
    /// The part of the canvas the model edits.
    pub crop: Rect,
    /// What the model edits: the crop resized to the working size.
    pub image: RgbImage,
    /// The mask for [`Self::image`].
    pub model_mask: GrayImage,
    /// Where the input sits on the canvas.
    pub offset: (u32, u32),
    color_match: bool,
    paste_back: bool,
}

impl EditPlan {
    /// Plans an edit of `image`. `mask` (white = edit) may be absent only
    /// when outpainting.
    pub fn new(
        image: &RgbImage,
        mask: Option<&GrayImage>,
        options: &TaskOptions,
        size: NativeSize,
    ) -> Result<Self> {
        let (w, h) = image.dimensions();
        if w == 0 || h == 0 {
            return Err(ModelError::InvalidInput(
                "the image is empty (0 pixels)".into(),
            ));
        }
        let mask = match mask {
            Some(m) if m.dimensions() == (w, h) => Some(masks::grow(m, options.mask_grow)),
            Some(m) if options.resize_mask => Some(masks::grow(
                &imageops::resize(m, w, h, FilterType::Triangle),
                options.mask_grow,
            )),
            Some(m) => {
                return Err(ModelError::InvalidInput(format!(
                    "mask is {}x{} but the image is {w}x{h}; send a mask of the same size, or ask for it to be resized",
                    m.width(),
                    m.height()
                )));
            }
            None if options.extension.is_empty() => {
                return Err(ModelError::InvalidInput(
                    "a mask is required unless the image is extended (outpainting)".into(),
                ));
            }
            None => None,
        };
        let ext = options.extension;
        let (canvas, mask) = outpaint_canvas(image, mask.as_ref(), ext, options.overlap);
        if !mask.pixels().any(|p| is_masked(p.0[0])) {
            let why = if options.mask_grow < 0 {
                format!(
                    "the mask is empty after shrinking it by {} pixels; shrink it less",
                    -options.mask_grow
                )
            } else {
                "the mask is empty: no pixel is 50% white or more; paint the region to edit white"
                    .into()
            };
            return Err(ModelError::InvalidInput(why));
        }
        let feather = if options.paste_back {
            options.mask_feather
        } else {
            0
        };
        let alpha = masks::feather(&mask, feather);
        let (cw, ch) = canvas.dimensions();
        let crop = match options.region {
            Region::Full => Rect::full((cw, ch)),
            // Everything the paste touches, plus context.
            Region::Masked => masks::crop_around(
                &masks::grow(&mask, 2 * feather as i32),
                options.crop_padding,
            )
            .unwrap_or(Rect::full((cw, ch))),
        };
        let (ww, wh) = size.working_size(options.working_size, (crop.width, crop.height))?;
        let crop_image =
            imageops::crop_imm(&canvas, crop.x, crop.y, crop.width, crop.height).to_image();
        let crop_mask =
            imageops::crop_imm(&mask, crop.x, crop.y, crop.width, crop.height).to_image();
        let (image, model_mask) = if (ww, wh) == (crop.width, crop.height) {
            (crop_image, crop_mask)
        } else {
            // Any coverage counts, so a thin stroke survives downscaling.
            let mut model_mask = imageops::resize(&crop_mask, ww, wh, FilterType::Triangle);
            for p in model_mask.pixels_mut() {
                p.0[0] = if p.0[0] > 0 { 255 } else { 0 };
            }
            (resize_rgb(&crop_image, ww, wh), model_mask)
        };
        Ok(Self {
            canvas,
            mask,
            alpha,
            crop,
            image,
            model_mask,
            offset: (ext.left, ext.top),
            color_match: options.color_match,
            paste_back: options.paste_back,
        })
    }

    /// The model's working size for this edit.
    pub fn working_size(&self) -> (u32, u32) {
        self.image.dimensions()
    }

    pub fn masked_pixels(&self) -> u64 {
        self.mask.pixels().filter(|p| is_masked(p.0[0])).count() as u64
    }

    /// The model's output (working size) back on the canvas.
    pub fn finish(&self, edited: &RgbImage) -> RgbImage {
        let matched;
        let edited = if self.color_match {
            matched = match_colors(edited, &self.image, &self.model_mask);
            &matched
        } else {
            edited
        };
        let crop = self.crop;
        let resized;
        let edited = if edited.dimensions() == (crop.width, crop.height) {
            edited
        } else {
            resized = resize_rgb(edited, crop.width, crop.height);
            &resized
        };
        if self.paste_back {
            masks::paste_back(&self.canvas, edited, crop, &self.alpha)
        } else {
            let mut out = self.canvas.clone();
            imageops::replace(&mut out, edited, crop.x as i64, crop.y as i64);
            out
        }
    }
}

/// High-quality resampling for photos (Lanczos, as PIL's default for downscaling).
fn resize_rgb(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    imageops::resize(image, width, height, FilterType::Lanczos3)
}

/// The outpainting canvas and its mask: the original in place, the new
/// border filled from the original's edges ([`fill_unknown`]), and a mask
/// that covers the new area plus `overlap` pixels of the original along each
/// extended side. `mask`, when given (same size as `image`), also marks
/// parts of the original to repaint. Without an extension this is the image
/// and the mask.
pub fn outpaint_canvas(
    image: &RgbImage,
    mask: Option<&GrayImage>,
    ext: Sides,
    overlap: u32,
) -> (RgbImage, GrayImage) {
    let (w, h) = image.dimensions();
    let (cw, ch) = (w + ext.left + ext.right, h + ext.top + ext.bottom);
    let inside =
        |x: u32, y: u32| x >= ext.left && x < ext.left + w && y >= ext.top && y < ext.top + h;
    // Distance into the original from an extended side (u32::MAX: none).
    let reach = |x: u32, y: u32| {
        let (ox, oy) = (x - ext.left, y - ext.top);
        let mut d = u32::MAX;
        if ext.left > 0 {
            d = d.min(ox);
        }
        if ext.right > 0 {
            d = d.min(w - 1 - ox);
        }
        if ext.top > 0 {
            d = d.min(oy);
        }
        if ext.bottom > 0 {
            d = d.min(h - 1 - oy);
        }
        d
    };
    let canvas_mask = GrayImage::from_fn(cw, ch, |x, y| {
        if !inside(x, y) || reach(x, y) < overlap {
            return Luma([255]);
        }
        match mask {
            Some(m) if is_masked(m.get_pixel(x - ext.left, y - ext.top).0[0]) => Luma([255]),
            _ => Luma([0]),
        }
    });
    if ext.is_empty() {
        return (image.clone(), canvas_mask);
    }
    let mut canvas = RgbImage::new(cw, ch);
    imageops::replace(&mut canvas, image, ext.left as i64, ext.top as i64);
    let known: Vec<bool> = (0..ch)
        .flat_map(|y| (0..cw).map(move |x| (x, y)))
        .map(|(x, y)| inside(x, y))
        .collect();
    fill_unknown(&mut canvas, &known);
    (canvas, canvas_mask)
}

/// Fills the pixels where `known` is false by push-pull interpolation: the
/// known pixels are averaged down an image pyramid and the coarse averages
/// pulled back up, so the fill continues the nearby colours smoothly (no
/// black, no streaks of repeated edge pixels). Known pixels are unchanged.
pub fn fill_unknown(image: &mut RgbImage, known: &[bool]) {
    let (w, h) = (image.width() as usize, image.height() as usize);
    // Level 0: premultiplied colour and weight.
    let mut levels: Vec<(usize, usize, Vec<[f32; 4]>)> = Vec::new();
    let base: Vec<[f32; 4]> = image
        .pixels()
        .zip(known)
        .map(|(p, &k)| {
            let wgt = k as u8 as f32;
            [
                p.0[0] as f32 * wgt,
                p.0[1] as f32 * wgt,
                p.0[2] as f32 * wgt,
                wgt,
            ]
        })
        .collect();
    levels.push((w, h, base));
    // Push: halve until one pixel.
    while {
        let (lw, lh, _) = levels[levels.len() - 1];
        lw > 1 || lh > 1
    } {
        let (lw, lh, fine) = &levels[levels.len() - 1];
        let (nw, nh) = (lw.div_ceil(2), lh.div_ceil(2));
        let mut coarse = vec![[0f32; 4]; nw * nh];
        for y in 0..*lh {
            for x in 0..*lw {
                let c = &mut coarse[(y / 2) * nw + x / 2];
                for (a, b) in c.iter_mut().zip(fine[y * lw + x]) {
                    *a += b;
                }
            }
        }
        // Normalise so a weight never exceeds 1 (one fully known pixel).
        for c in &mut coarse {
            if c[3] > 1.0 {
                let s = 1.0 / c[3];
                *c = [c[0] * s, c[1] * s, c[2] * s, 1.0];
            }
        }
        levels.push((nw, nh, coarse));
    }
    // Pull: from the coarsest level down, fill what a level lacks from the
    // level above (bilinear), weighted by how much is missing.
    for i in (0..levels.len() - 1).rev() {
        let (cw, chh, coarse) = {
            let (a, b, c) = &levels[i + 1];
            (*a, *b, c.clone())
        };
        let (lw, lh, fine) = &mut levels[i];
        let sample = |fx: f32, fy: f32| -> [f32; 4] {
            let fx = fx.clamp(0.0, (cw - 1) as f32);
            let fy = fy.clamp(0.0, (chh - 1) as f32);
            let (x0, y0) = (fx.floor() as usize, fy.floor() as usize);
            let (x1, y1) = ((x0 + 1).min(cw - 1), (y0 + 1).min(chh - 1));
            let (tx, ty) = (fx - x0 as f32, fy - y0 as f32);
            let mut out = [0f32; 4];
            for (k, o) in out.iter_mut().enumerate() {
                let norm = |p: [f32; 4]| if p[3] > 0.0 { p[k] / p[3] } else { 0.0 };
                let v = |p: [f32; 4]| if k == 3 { p[3].min(1.0) } else { norm(p) };
                let top = v(coarse[y0 * cw + x0]) * (1.0 - tx) + v(coarse[y0 * cw + x1]) * tx;
                let bottom = v(coarse[y1 * cw + x0]) * (1.0 - tx) + v(coarse[y1 * cw + x1]) * tx;
                *o = top * (1.0 - ty) + bottom * ty;
            }
            out
        };
        for y in 0..*lh {
            for x in 0..*lw {
                let p = &mut fine[y * *lw + x];
                if p[3] >= 1.0 {
                    continue;
                }
                let up = sample((x as f32 + 0.5) / 2.0 - 0.5, (y as f32 + 0.5) / 2.0 - 0.5);
                let missing = 1.0 - p[3];
                for c in 0..3 {
                    p[c] += missing * up[c];
                }
                p[3] = 1.0;
            }
        }
    }
    let filled = &levels[0].2;
    for ((p, &k), f) in image.pixels_mut().zip(known).zip(filled) {
        if !k {
            *p = Rgb([0, 1, 2].map(|c| f[c].round().clamp(0.0, 255.0) as u8));
        }
    }
}

/// Shifts each channel of `edited` so that, where the model was asked to
/// keep the image (`mask` black), its mean and spread match `reference`'s;
/// that removes the colour cast some models put on the whole output. The
/// correction is measured on the unmasked context and applied everywhere.
pub fn match_colors(edited: &RgbImage, reference: &RgbImage, mask: &GrayImage) -> RgbImage {
    let context: Vec<(&Rgb<u8>, &Rgb<u8>)> = edited
        .pixels()
        .zip(reference.pixels())
        .zip(mask.pixels())
        .filter(|(_, m)| !is_masked(m.0[0]))
        .map(|(pair, _)| pair)
        .collect();
    // Too little context to measure a cast reliably.
    if context.len() < 64 {
        return edited.clone();
    }
    let n = context.len() as f64;
    let mut gain = [1f64; 3];
    let mut offset = [0f64; 3];
    for c in 0..3 {
        // Mean and deviation of channel `c` of the edited (0) or reference (1) pixels.
        let stats = |side: usize| {
            let pick = |p: &(&Rgb<u8>, &Rgb<u8>)| [p.0, p.1][side].0[c] as f64;
            let mean = context.iter().map(pick).sum::<f64>() / n;
            let var = context
                .iter()
                .map(|p| (pick(p) - mean).powi(2))
                .sum::<f64>()
                / n;
            (mean, var.sqrt())
        };
        let (me, se) = stats(0);
        let (mr, sr) = stats(1);
        // Flat context says nothing about contrast: shift only.
        gain[c] = if se > 1.0 && sr > 1.0 {
            (sr / se).clamp(0.5, 2.0)
        } else {
            1.0
        };
        offset[c] = mr - gain[c] * me;
    }
    let mut out = edited.clone();
    for p in out.pixels_mut() {
        for c in 0..3 {
            p.0[c] = (p.0[c] as f64 * gain[c] + offset[c])
                .round()
                .clamp(0.0, 255.0) as u8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TINY: NativeSize = NativeSize {
        native: 64,
        multiple: 8,
    };

    fn native(width: u32, height: u32) -> (u32, u32) {
        TINY.working_size(WorkingSize::Native, (width, height))
            .unwrap()
    }

    #[test]
    fn canvas_keeps_the_original_and_masks_the_new_area_and_overlap() {
        let image = RgbImage::from_fn(6, 4, |x, y| Rgb([x as u8 * 10, y as u8 * 10, 7]));
        let ext = Sides {
            left: 2,
            right: 1,
            top: 1,
            bottom: 0,
        };
        let (canvas, mask) = outpaint_canvas(&image, None, ext, 1);
        assert_eq!(canvas.dimensions(), (9, 5));
        for y in 0..4 {
            for x in 0..6 {
                assert_eq!(canvas.get_pixel(x + 2, y + 1), image.get_pixel(x, y));
            }
        }
        // Overlap: one pixel into the original along the left, right and top sides.
        assert_eq!(mask.get_pixel(2, 3).0[0], 255);
        assert_eq!(mask.get_pixel(7, 3).0[0], 255);
        assert_eq!(mask.get_pixel(4, 1).0[0], 255);
        assert_eq!(mask.get_pixel(4, 2).0[0], 0);
        // The bottom was not extended: no overlap there.
        assert_eq!(mask.get_pixel(4, 4).0[0], 0);
        assert_eq!(mask.get_pixel(0, 0).0[0], 255);
    }

    #[test]
    fn the_fill_continues_the_edge_colours_without_black() {
        // Left half red, right half blue: extending upwards keeps each colour
        // above its half near the edge, blending further out.
        let image = RgbImage::from_fn(16, 8, |x, _| {
            if x < 8 {
                Rgb([200, 0, 0])
            } else {
                Rgb([0, 0, 200])
            }
        });
        let ext = Sides {
            top: 16,
            ..Default::default()
        };
        let (canvas, _) = outpaint_canvas(&image, None, ext, 0);
        let top_left = canvas.get_pixel(1, 13).0;
        let top_right = canvas.get_pixel(14, 13).0;
        assert!(top_left[0] > 120 && top_left[2] < 80, "{top_left:?}");
        assert!(top_right[2] > 120 && top_right[0] < 80, "{top_right:?}");
        assert!(
            canvas
                .pixels()
                .all(|p| p.0.iter().map(|&v| v as u32).sum::<u32>() > 60)
        );
    }

    #[test]
    fn working_size_keeps_the_aspect_at_the_native_area() {
        assert_eq!(native(64, 64), (64, 64));
        assert_eq!(native(4000, 3000), (72, 56));
        assert_eq!(native(13, 9), (80, 56));
        let (w, h) = native(4000, 100);
        assert!(w % 8 == 0 && h == 8 && w > 300, "{w}x{h}");
    }

    #[test]
    fn color_match_removes_a_uniform_cast() {
        let reference = RgbImage::from_fn(32, 32, |x, y| Rgb([(x * 7) as u8, (y * 5) as u8, 90]));
        let cast = RgbImage::from_fn(32, 32, |x, y| {
            let p = reference.get_pixel(x, y).0;
            Rgb([p[0] + 20, p[1], p[2] - 30])
        });
        let mask = GrayImage::from_fn(32, 32, |x, _| Luma([if x < 8 { 255 } else { 0 }]));
        let fixed = match_colors(&cast, &reference, &mask);
        for (a, b) in fixed.pixels().zip(reference.pixels()) {
            for c in 0..3 {
                assert!(a.0[c].abs_diff(b.0[c]) <= 1, "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn empty_and_mismatched_masks_are_refused_and_resized_when_asked() {
        let image = RgbImage::new(20, 10);
        let empty = GrayImage::new(20, 10);
        let err = EditPlan::new(&image, Some(&empty), &TaskOptions::default(), TINY).unwrap_err();
        assert!(err.to_string().contains("mask is empty"), "{err}");
        let mut dot = GrayImage::new(20, 10);
        dot.put_pixel(5, 5, Luma([255]));
        let opts = TaskOptions {
            mask_grow: -1,
            ..Default::default()
        };
        let err = EditPlan::new(&image, Some(&dot), &opts, TINY).unwrap_err();
        assert!(err.to_string().contains("shrinking it by 1"), "{err}");
        let small = GrayImage::from_pixel(10, 5, Luma([255]));
        let err = EditPlan::new(&image, Some(&small), &TaskOptions::default(), TINY).unwrap_err();
        assert!(
            err.to_string().contains("10x5 but the image is 20x10"),
            "{err}"
        );
        let opts = TaskOptions {
            resize_mask: true,
            ..Default::default()
        };
        let plan = EditPlan::new(&image, Some(&small), &opts, TINY).unwrap();
        assert_eq!(plan.masked_pixels(), 200);
    }

    #[test]
    fn full_region_without_paste_back_is_the_plain_pipeline() {
        let image = RgbImage::from_fn(64, 64, |x, y| Rgb([x as u8, y as u8, 3]));
        let mut mask = GrayImage::new(64, 64);
        mask.put_pixel(10, 10, Luma([255]));
        let opts = TaskOptions {
            region: Region::Full,
            paste_back: false,
            ..Default::default()
        };
        let plan = EditPlan::new(&image, Some(&mask), &opts, TINY).unwrap();
        assert_eq!(plan.image, image);
        assert_eq!(plan.model_mask, mask);
        let edited = RgbImage::from_pixel(64, 64, Rgb([9, 9, 9]));
        assert_eq!(plan.finish(&edited), edited);
    }

    #[test]
    fn the_caller_chooses_the_working_size() {
        // A 96x64 image on a 64-px-native model, edited whole.
        let image = RgbImage::from_fn(96, 64, |x, y| Rgb([x as u8, y as u8, 3]));
        let mut mask = GrayImage::new(96, 64);
        mask.put_pixel(10, 10, Luma([255]));
        let plan_at = |working_size| {
            let opts = TaskOptions {
                region: Region::Full,
                paste_back: false,
                working_size,
                ..Default::default()
            };
            EditPlan::new(&image, Some(&mask), &opts, TINY).map(|p| p.working_size())
        };
        assert_eq!(plan_at(WorkingSize::Native).unwrap(), (80, 56));
        assert_eq!(plan_at(WorkingSize::Original).unwrap(), (96, 64));
        let exact = WorkingSize::Exact {
            width: 128,
            height: 64,
        };
        assert_eq!(plan_at(exact).unwrap(), (128, 64));
        // Not a multiple of the VAE factor: refused with a size that fits.
        let odd = WorkingSize::Exact {
            width: 100,
            height: 70,
        };
        let err = plan_at(odd).unwrap_err().to_string();
        assert!(
            err.contains("multiples of 8") && err.contains("104x72"),
            "{err}"
        );
        // The original size of a photo is refused past the working-size bound.
        let big = RgbImage::new(3000, 40);
        let mut big_mask = GrayImage::new(3000, 40);
        big_mask.put_pixel(0, 0, Luma([255]));
        big_mask.put_pixel(2999, 0, Luma([255]));
        let opts = TaskOptions {
            working_size: WorkingSize::Original,
            ..Default::default()
        };
        let err = EditPlan::new(&big, Some(&big_mask), &opts, TINY)
            .unwrap_err()
            .to_string();
        assert!(err.contains("at most 2048"), "{err}");
    }

    fn scene(w: u32, h: u32, seed: u8) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            Rgb([(x * 3) as u8 ^ seed, (y * 5) as u8, seed])
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Random sizes, masks and extensions: the output has the canvas's
        /// size and equals the input wherever the paste weight is 0; the crop
        /// stays inside the canvas and covers the mask.
        #[test]
        fn outside_the_feathered_mask_the_output_is_the_input(
            w in 1u32..90, h in 1u32..90,
            rect in (0f64..1.0, 0f64..1.0, 0f64..0.7, 0f64..0.7),
            ext in (0u32..40, 0u32..40, 0u32..40, 0u32..40),
            outpaint in any::<bool>(),
            grow in -3i32..4, feather in 0u32..6, padding in 0u32..40,
            seed in any::<u8>(),
        ) {
            let image = scene(w, h, seed);
            let mut mask = GrayImage::new(w, h);
            let (x0, y0) = ((rect.0 * w as f64) as u32, (rect.1 * h as f64) as u32);
            for y in y0..(y0 + (rect.3 * h as f64) as u32 + 1).min(h) {
                for x in x0..(x0 + (rect.2 * w as f64) as u32 + 1).min(w) {
                    mask.put_pixel(x, y, Luma([255]));
                }
            }
            let extension = if outpaint {
                Sides { left: ext.0, right: ext.1, top: ext.2, bottom: ext.3 }
            } else {
                Sides::default()
            };
            let opts = TaskOptions {
                extension, mask_grow: grow, mask_feather: feather, crop_padding: padding,
                ..Default::default()
            };
            let plan = match EditPlan::new(&image, Some(&mask), &opts, TINY) {
                Ok(plan) => plan,
                Err(e) => {
                    // Only a mask shrunk to nothing (and nothing to outpaint) is refused.
                    prop_assert!(grow < 0 && extension.is_empty(), "{}", e);
                    return Ok(());
                }
            };
            let (cw, ch) = (w + extension.left + extension.right, h + extension.top + extension.bottom);
            prop_assert_eq!(plan.canvas.dimensions(), (cw, ch));
            let c = plan.crop;
            prop_assert!(c.x + c.width <= cw && c.y + c.height <= ch);
            let (ww, wh) = plan.working_size();
            prop_assert!(ww % 8 == 0 && wh % 8 == 0 && ww > 0 && wh > 0);
            let edited = RgbImage::from_fn(ww, wh, |x, y| Rgb([x as u8, 255 - y as u8, seed ^ 0x55]));
            let out = plan.finish(&edited);
            prop_assert_eq!(out.dimensions(), (cw, ch));
            for (x, y, p) in out.enumerate_pixels() {
                let a = plan.alpha[(y * cw + x) as usize];
                if is_masked(plan.mask.get_pixel(x, y).0[0]) {
                    prop_assert!(x >= c.x && x < c.x + c.width && y >= c.y && y < c.y + c.height);
                    prop_assert_eq!(a, 1.0);
                }
                let (ix, iy) = (x.wrapping_sub(extension.left), y.wrapping_sub(extension.top));
                if a == 0.0 && ix < w && iy < h {
                    prop_assert_eq!(p, image.get_pixel(ix, iy));
                }
            }
        }
    }
}
