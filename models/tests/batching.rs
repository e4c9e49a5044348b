//! A job's outputs run as one batch: each equals the single edit with its
//! seed, on both fixtures, with and without guidance, and given latents
//! must hold one row per output.

mod common;

use std::ops::ControlFlow;

use byteedit_models::{EditRequest, InitialLatents, InpaintModel, ModelError};
use common::{B, FIXTURES, fixture, inputs};

fn apple_request(dir: &std::path::Path, guidance: f64) -> EditRequest {
    let (image, mask) = inputs(dir);
    EditRequest {
        image,
        mask,
        prompt: "a red apple".into(),
        negative_prompt: Some("blurry".into()),
        steps: 3,
        guidance_scale: guidance,
        scheduler: "dpmpp-2m".parse().unwrap(),
        timestep_spacing: None,
        seed: 41,
        latents: None,
    }
}

#[test]
fn batched_outputs_equal_single_edits_with_their_seeds() {
    for name in FIXTURES {
        let dir = fixture(name);
        let model = InpaintModel::<B>::load(&dir, &Default::default()).unwrap();
        for guidance in [7.5, 1.0] {
            let request = apple_request(&dir, guidance);
            let mut reported = Vec::new();
            let batch = model
                .edit_outputs(&request, 3, &mut |p| {
                    reported.push((p.step, p.total));
                    ControlFlow::Continue(())
                })
                .unwrap();
            assert_eq!(
                reported,
                vec![(1, 3), (2, 3), (3, 3)],
                "one report per batched step"
            );
            assert_eq!(batch.images.len(), 3);
            for (i, pixels) in batch.images.iter().enumerate() {
                let single = EditRequest {
                    seed: 41 + i as u64,
                    ..request.clone()
                };
                let alone = model
                    .edit(&single, &mut |_| ControlFlow::Continue(()))
                    .unwrap();
                let diff = pixels
                    .iter()
                    .zip(&alone.pixels)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert_eq!(pixels.len(), alone.pixels.len());
                assert!(
                    diff < 1e-4,
                    "{name} guidance {guidance} output {i}: max diff {diff}"
                );
            }
            // Different seeds, different pictures.
            assert_ne!(
                batch.images[0], batch.images[1],
                "{name}: outputs must differ"
            );
        }
    }
}

#[test]
fn given_latents_need_a_row_per_output_and_cancel_stops_the_batch() {
    let dir = fixture(FIXTURES[0]);
    let model = InpaintModel::<B>::load(&dir, &Default::default()).unwrap();
    let (w, h) = inputs(&dir).0.dimensions();
    let one_row = InitialLatents {
        shape: vec![1, 4, h as usize / 8, w as usize / 8],
        values: vec![0.0; 4 * (h * w / 64) as usize],
    };
    let request = EditRequest {
        latents: Some(one_row),
        ..apple_request(&dir, 7.5)
    };
    let err = model
        .edit_outputs(&request, 2, &mut |_| ControlFlow::Continue(()))
        .unwrap_err();
    assert!(
        matches!(&err, ModelError::InvalidInput(m) if m.contains("[2, 4,")),
        "{err}"
    );

    let mut steps = 0;
    let err = model
        .edit_outputs(&apple_request(&dir, 7.5), 2, &mut |_| {
            steps += 1;
            ControlFlow::Break(())
        })
        .unwrap_err();
    assert!(matches!(err, ModelError::Cancelled));
    assert_eq!(steps, 1);
    let err = model
        .edit_outputs(&apple_request(&dir, 7.5), 0, &mut |_| {
            ControlFlow::Continue(())
        })
        .unwrap_err();
    assert!(err.to_string().contains("at least 1"), "{err}");
}

/// Jobs with their own prompts, images, seeds and guidance share one batch;
/// each result equals its job run alone. An item that cannot run (wrong
/// schedule for the batch, a bad mask) gets its own error and the others
/// run; cancelling one item leaves the others going.
#[test]
fn different_jobs_share_a_batch_and_keep_their_own_results() {
    use byteedit_models::BatchItem;
    for name in FIXTURES {
        let dir = fixture(name);
        let model = InpaintModel::<B>::load(&dir, &Default::default()).unwrap();
        let apple = apple_request(&dir, 7.5);
        let (image, mask) = inputs(&dir);
        let flipped = EditRequest {
            image: image::imageops::flip_horizontal(&image),
            mask: image::imageops::flip_horizontal(&mask),
            prompt: "a wooden boat on a lake".into(),
            negative_prompt: None,
            guidance_scale: 4.0,
            seed: 7,
            ..apple.clone()
        };
        let other_schedule = EditRequest {
            steps: 2,
            ..apple.clone()
        };
        let bad_mask = EditRequest {
            mask: image::GrayImage::new(8, 8),
            ..apple.clone()
        };
        let items = [
            BatchItem {
                request: &apple,
                count: 2,
            },
            BatchItem {
                request: &other_schedule,
                count: 1,
            },
            BatchItem {
                request: &flipped,
                count: 1,
            },
            BatchItem {
                request: &bad_mask,
                count: 1,
            },
        ];
        let mut reports = vec![0; items.len()];
        let results = model
            .edit_batch(&items, &mut |i, _| {
                reports[i] += 1;
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(reports, [3, 0, 3, 0], "{name}: steps reported per item");
        let err = results[1].as_ref().unwrap_err();
        assert!(err.to_string().contains("cannot share a batch"), "{err}");
        let err = results[3].as_ref().unwrap_err();
        assert!(err.to_string().contains("mask is 8x8"), "{err}");
        for (i, count) in [(0, 2), (2, 1)] {
            let batched = results[i].as_ref().unwrap();
            let alone = model
                .edit_outputs(items[i].request, count, &mut |_| ControlFlow::Continue(()))
                .unwrap();
            assert_eq!(batched.images.len(), count);
            for (a, b) in batched.images.iter().zip(&alone.images) {
                let diff = a
                    .iter()
                    .zip(b)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(diff < 1e-4, "{name} item {i}: max diff {diff}");
            }
        }
        assert_ne!(
            results[0].as_ref().unwrap().images[0],
            results[2].as_ref().unwrap().images[0]
        );

        // Item 0 leaves after its first step; item 2 runs to the end.
        let mut reports = vec![0; 2];
        let results = model
            .edit_batch(&[items[0], items[2]], &mut |i, _| {
                reports[i] += 1;
                if i == 0 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .unwrap();
        assert_eq!(reports, [1, 3]);
        assert!(matches!(results[0], Err(ModelError::Cancelled)));
        assert_eq!(results[1].as_ref().unwrap().images.len(), 1);
    }
}
