//! Turning a task's inputs into the image and mask the pipeline edits.
//!
//! Outpainting here builds the extended canvas: the original in place, the
//! new border filled by repeating the nearest edge pixel (so the VAE sees
//! plausible colours, not black), and a mask that is white over the new area.

use image::{GrayImage, Luma, RgbImage};

/// Pixels to add on each side of the image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extension {
    pub left: u32,
    pub right: u32,
    pub top: u32,
    pub bottom: u32,
}

impl Extension {
    pub fn is_empty(&self) -> bool {
        self.left + self.right + self.top + self.bottom == 0
    }
}

/// The outpainting canvas and its mask. `mask`, when given (same size as
/// `image`), also marks parts of the original to repaint.
pub fn outpaint_canvas(
    image: &RgbImage,
    mask: Option<&GrayImage>,
    ext: Extension,
) -> (RgbImage, GrayImage) {
    let (w, h) = image.dimensions();
    let (cw, ch) = (w + ext.left + ext.right, h + ext.top + ext.bottom);
    // Source coordinate of each canvas coordinate: clamped into the original.
    let src = |c: u32, offset: u32, size: u32| c.saturating_sub(offset).min(size - 1);
    let canvas = RgbImage::from_fn(cw, ch, |x, y| {
        *image.get_pixel(src(x, ext.left, w), src(y, ext.top, h))
    });
    let canvas_mask = GrayImage::from_fn(cw, ch, |x, y| {
        let inside = x >= ext.left && x < ext.left + w && y >= ext.top && y < ext.top + h;
        match (inside, mask) {
            (false, _) => Luma([255]),
            (true, Some(m)) => *m.get_pixel(x - ext.left, y - ext.top),
            (true, None) => Luma([0]),
        }
    });
    (canvas, canvas_mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    #[test]
    fn canvas_keeps_the_original_and_masks_only_the_new_area() {
        let image = RgbImage::from_fn(3, 2, |x, y| Rgb([x as u8 * 10, y as u8 * 10, 7]));
        let ext = Extension {
            left: 2,
            right: 1,
            top: 1,
            bottom: 0,
        };
        let (canvas, mask) = outpaint_canvas(&image, None, ext);
        assert_eq!(canvas.dimensions(), (6, 3));
        for y in 0..2 {
            for x in 0..3 {
                assert_eq!(canvas.get_pixel(x + 2, y + 1), image.get_pixel(x, y));
                assert_eq!(mask.get_pixel(x + 2, y + 1).0[0], 0);
            }
        }
        // Corners repeat the nearest original pixel; the border is masked.
        assert_eq!(canvas.get_pixel(0, 0), image.get_pixel(0, 0));
        assert_eq!(canvas.get_pixel(5, 2), image.get_pixel(2, 1));
        assert_eq!(mask.get_pixel(0, 0).0[0], 255);
        assert_eq!(mask.get_pixel(5, 1).0[0], 255);
        let masked = mask.pixels().filter(|p| p.0[0] == 255).count();
        assert_eq!(masked, 6 * 3 - 3 * 2);
    }

    #[test]
    fn a_given_mask_is_placed_on_the_canvas() {
        let image = RgbImage::new(2, 2);
        let mask = GrayImage::from_fn(2, 2, |x, _| Luma([if x == 1 { 255 } else { 0 }]));
        let (_, canvas_mask) = outpaint_canvas(
            &image,
            Some(&mask),
            Extension {
                left: 1,
                ..Default::default()
            },
        );
        assert_eq!(canvas_mask.get_pixel(1, 0).0[0], 0);
        assert_eq!(canvas_mask.get_pixel(2, 0).0[0], 255);
    }
}
