//! How a mask is read, in one place: the API checks uploads with these
//! rules, the engine plans and pastes with them, the CLI draws with them.

use image::DynamicImage;

/// A mask pixel counts as marked for editing at 50 % grey or more
/// (diffusers binarises at 0.5 of 255).
pub const MASK_THRESHOLD: u8 = 128;

/// True for a mask value that is edited.
pub fn is_masked(value: u8) -> bool {
    value >= MASK_THRESHOLD
}

/// True for an alpha value that marks its pixel for editing (when the
/// image's transparency is the mask): below 50 % opaque.
pub fn is_transparent(alpha: u8) -> bool {
    alpha < MASK_THRESHOLD
}

/// Grey level of an RGB pixel with PIL's `convert("L")` weights (ITU-R
/// 601-2, in 16-bit fixed point, rounded), so a coloured mask binarises
/// exactly as it would in diffusers.
pub fn luma([r, g, b]: [u8; 3]) -> u8 {
    ((r as u32 * 19595 + g as u32 * 38470 + b as u32 * 7471 + 0x8000) >> 16) as u8
}

/// True when some pixel is marked for editing: mask pixels at 50 % grey or
/// more after the grey conversion, or (`from_alpha`) alpha below 50 %. The
/// common 8-bit layouts are read in place: converting a 1-MP mask to RGB
/// first costs 50x its decoding.
pub fn any_marked(image: &DynamicImage, from_alpha: bool) -> bool {
    use DynamicImage as D;
    let grey = |p: [u8; 3]| is_masked(luma(p));
    match (image, from_alpha) {
        (D::ImageLumaA8(i), true) => i.pixels().any(|p| is_transparent(p.0[1])),
        (D::ImageRgba8(i), true) => i.pixels().any(|p| is_transparent(p.0[3])),
        (other, true) => other.to_rgba8().pixels().any(|p| is_transparent(p.0[3])),
        (D::ImageLuma8(i), false) => i.pixels().any(|p| is_masked(p.0[0])),
        (D::ImageLumaA8(i), false) => i.pixels().any(|p| is_masked(p.0[0])),
        (D::ImageRgb8(i), false) => i.pixels().any(|p| grey(p.0)),
        (D::ImageRgba8(i), false) => i.pixels().any(|p| grey([p.0[0], p.0[1], p.0[2]])),
        (other, false) => other.to_rgb8().pixels().any(|p| grey(p.0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luma_matches_pil_weights() {
        assert_eq!(luma([255, 0, 0]), 76);
        assert_eq!(luma([255, 255, 255]), 255);
        for v in 0..=255u8 {
            assert_eq!(luma([v, v, v]), v, "grey stays grey");
        }
    }

    #[test]
    fn the_threshold_is_half() {
        assert!(!is_masked(127) && is_masked(128));
        assert!(is_transparent(127) && !is_transparent(128));
    }

    #[test]
    fn marked_pixels_are_found_in_every_layout() {
        let grey = image::GrayImage::from_raw(2, 1, vec![0, 128]).unwrap();
        assert!(any_marked(&DynamicImage::ImageLuma8(grey.clone()), false));
        let rgb = DynamicImage::ImageLuma8(grey).to_rgb8();
        assert!(any_marked(&DynamicImage::ImageRgb8(rgb), false));
        let dark = image::GrayImage::from_raw(2, 1, vec![0, 127]).unwrap();
        assert!(!any_marked(&DynamicImage::ImageLuma8(dark), false));
        let opaque = image::RgbaImage::from_pixel(2, 2, image::Rgba([0, 0, 0, 255]));
        assert!(!any_marked(&DynamicImage::ImageRgba8(opaque.clone()), true));
        let mut hole = opaque;
        hole.put_pixel(1, 1, image::Rgba([0, 0, 0, 0]));
        assert!(any_marked(&DynamicImage::ImageRgba8(hole), true));
    }
}
