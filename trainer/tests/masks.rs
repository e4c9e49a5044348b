//! The training masks' properties, over random sizes, ranges and seeds:
//! every mask is binary and the image's size; irregular, square and
//! outward masks cover a share inside their configured range; outward
//! masks reach the border; global masks cover everything; a dilated
//! instance mask or a box around it covers the instance.
//!
//! proptest keeps failures it finds under `proptest-regressions/`, which
//! are committed and replayed first.

use byteedit_trainer::finetune::masks::{
    Coverage, MaskConfig, Strategy as Kind, coverage, touches_border,
};
use image::GrayImage;
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

fn only(strategy: Kind, range: Coverage) -> MaskConfig {
    let mut c = MaskConfig {
        global: 0.0,
        irregular: 0.0,
        square: 0.0,
        outward: 0.0,
        irregular_coverage: range,
        square_coverage: range,
        outward_coverage: range,
        ..MaskConfig::default()
    };
    match strategy {
        Kind::Global => c.global = 1.0,
        Kind::Irregular => c.irregular = 1.0,
        Kind::Square => c.square = 1.0,
        Kind::Outward => c.outward = 1.0,
    }
    c
}

fn binary(mask: &GrayImage) -> bool {
    mask.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255)
}

fn range() -> impl proptest::strategy::Strategy<Value = Coverage> {
    (0.02f64..0.9, 0.05f64..0.6)
        .prop_map(|(min, span)| Coverage::new(min, (min + span).min(0.98)))
        .prop_filter("a range at least 0.05 wide", |c| c.max - c.min >= 0.05)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn masks_stay_inside_their_coverage_range(
        w in 32u32..96, h in 32u32..96, seed in any::<u64>(), range in range(),
        which in prop_oneof![Just(Kind::Irregular), Just(Kind::Square), Just(Kind::Outward)],
    ) {
        let config = only(which, range);
        config.check().unwrap();
        let (strategy, mask) = config.draw(w, h, &mut StdRng::seed_from_u64(seed));
        prop_assert_eq!(strategy, which);
        prop_assert_eq!(mask.dimensions(), (w, h));
        prop_assert!(binary(&mask));
        let c = coverage(&mask);
        prop_assert!(range.contains(c), "{:?} covers {} outside [{}, {}]", which, c, range.min, range.max);
        if which == Kind::Outward {
            prop_assert!(touches_border(&mask), "an outward mask must reach the border");
        }
    }

    #[test]
    fn global_masks_cover_everything(w in 32u32..80, h in 32u32..80, seed in any::<u64>()) {
        let (_, mask) = only(Kind::Global, Coverage::new(0.1, 0.5)).draw(w, h, &mut StdRng::seed_from_u64(seed));
        prop_assert_eq!(coverage(&mask), 1.0);
    }

    #[test]
    fn masks_around_an_instance_cover_it(
        w in 32u32..80, h in 32u32..80, seed in any::<u64>(),
        x0 in 0u32..24, y0 in 0u32..24, bw in 1u32..8, bh in 1u32..8,
    ) {
        let instance = GrayImage::from_fn(w, h, |x, y| {
            image::Luma([if (x0..x0 + bw).contains(&x) && (y0..y0 + bh).contains(&y) { 255 } else { 0 }])
        });
        let config = MaskConfig::default();
        let mask = config.around_instance(&instance, &mut StdRng::seed_from_u64(seed));
        prop_assert_eq!(mask.dimensions(), (w, h));
        prop_assert!(binary(&mask));
        for (x, y, p) in instance.enumerate_pixels() {
            if p.0[0] == 255 {
                prop_assert_eq!(mask.get_pixel(x, y).0[0], 255, "instance pixel ({}, {}) not covered", x, y);
            }
        }
    }
}

#[test]
fn mask_settings_that_cannot_draw_are_refused() {
    let c = MaskConfig {
        square_coverage: Coverage::new(0.3, 0.31),
        ..MaskConfig::default()
    };
    assert!(
        c.check()
            .unwrap_err()
            .to_string()
            .contains("masks.square_coverage is [0.3, 0.31]")
    );
    let mut c = MaskConfig::default();
    (c.global, c.irregular, c.square, c.outward) = (0.0, 0.0, 0.0, 0.0);
    assert!(c.check().unwrap_err().to_string().contains("not all 0"));
}
