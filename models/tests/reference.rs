//! The engine against what diffusers/transformers computed with the same
//! weights (see tests/fixtures/README.md), on two differently configured models.
//! Tolerances: ids exact; components ≤ 1e-4; pipeline ≤ 2e-3 and ≤ 1 PNG level.

mod common;

use std::ops::ControlFlow;

use burn::prelude::*;
use byteedit_models::InpaintModel;
use byteedit_models::image_io::{max_level_diff, read_image, to_rgb};
use byteedit_models::schedulers::{Scheduler, SchedulerKind};
use common::{B, Expected, FIXTURES, assert_close, assert_slices_close, fixture};

const COMPONENT_TOL: f32 = 1e-4;
const PIPELINE_TOL: f32 = 2e-3;

fn load(name: &str) -> InpaintModel<B> {
    InpaintModel::load(&fixture(name), &Default::default())
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

#[test]
fn tokenizer_ids_are_exact() {
    for name in FIXTURES {
        let model = load(name);
        let expected = Expected::load(name);
        for (i, prompt) in expected.index.prompts.iter().enumerate() {
            let ids = model.tokenizer.encode(prompt);
            assert_eq!(
                ids,
                expected.ids(&format!("tokenizer.{i}.input_ids")),
                "{name}: prompt {prompt:?}"
            );
        }
    }
}

#[test]
fn text_encoder_matches_reference() {
    for name in FIXTURES {
        let model = load(name);
        let expected = Expected::load(name);
        for i in 0..expected.index.prompts.len() {
            let ids = expected.ids(&format!("tokenizer.{i}.input_ids"));
            let out = model.text_encoder.forward(&[ids], &Default::default());
            assert_close(
                &format!("{name} text_encoder.{i}.last_hidden_state"),
                out.last_hidden_state,
                expected.tensor(&format!("text_encoder.{i}.last_hidden_state")),
                COMPONENT_TOL,
            );
            assert_close(
                &format!("{name} text_encoder.{i}.pooler_output"),
                out.pooler_output,
                expected.tensor(&format!("text_encoder.{i}.pooler_output")),
                COMPONENT_TOL,
            );
        }
    }
}

#[test]
fn vae_matches_reference() {
    for name in FIXTURES {
        let model = load(name);
        let expected = Expected::load(name);
        let dist = model.vae.encode(expected.tensor("vae.encoder.input"));
        assert_close(
            &format!("{name} vae.encoder.mean"),
            dist.mean,
            expected.tensor("vae.encoder.mean"),
            COMPONENT_TOL,
        );
        assert_close(
            &format!("{name} vae.encoder.std"),
            dist.std,
            expected.tensor("vae.encoder.std"),
            COMPONENT_TOL,
        );
        let decoded = model.vae.decode(expected.tensor("vae.decoder.input"));
        assert_close(
            &format!("{name} vae.decoder.output"),
            decoded,
            expected.tensor("vae.decoder.output"),
            COMPONENT_TOL,
        );
    }
}

#[test]
fn unet_matches_reference_at_three_timesteps() {
    for name in FIXTURES {
        let model = load(name);
        let expected = Expected::load(name);
        let sample: Tensor<B, 4> = expected.tensor("unet.sample");
        let context: Tensor<B, 3> = expected.tensor("unet.encoder_hidden_states");
        for t in [999, 500, 1] {
            let out = model.unet.forward(sample.clone(), t as f32, &context);
            assert_close(
                &format!("{name} unet.t{t}"),
                out,
                expected.tensor(&format!("unet.t{t}.output")),
                COMPONENT_TOL,
            );
        }
    }
}

#[test]
fn schedulers_match_reference_runs() {
    for name in FIXTURES {
        let model = load(name);
        let expected = Expected::load(name);
        for (key, kind) in [
            ("ddim", SchedulerKind::Ddim),
            ("euler", SchedulerKind::Euler),
            ("dpmpp_2m", SchedulerKind::DpmSolverPlusPlus2M),
        ] {
            for steps in [8, 20] {
                let prefix = format!("scheduler.{key}.{steps}");
                let what = format!("{name} {prefix}");
                let mut scheduler =
                    Scheduler::<B>::new(kind, &model.scheduler_config, steps, None).unwrap();
                let sample0 = expected.tensor(&format!("{prefix}.sample0"));
                common::check_scheduler_run(&what, &expected, &prefix, sample0, &mut scheduler);
            }
        }
    }
}

#[test]
fn masked_image_latents_match_reference() {
    for name in FIXTURES {
        let model = load(name);
        let expected = Expected::load(name);
        let (image, mask) = common::inputs(&fixture(name));
        let (_, masked) = model.mask_condition(&image, &mask);
        assert_close(
            &format!("{name} pipeline.masked_image_latents"),
            masked,
            expected.tensor("pipeline.masked_image_latents"),
            COMPONENT_TOL,
        );
    }
}

#[test]
fn whole_pipeline_matches_reference() {
    for name in FIXTURES {
        let model = load(name);
        let expected = Expected::load(name);
        let dir = fixture(name);
        let (image, mask) = common::inputs(&dir);
        for case in &expected.index.cases {
            let latents = expected.f32s(&format!("pipeline.{}.latents", case.name));
            let request = case.request(image.clone(), mask.clone(), latents);
            let mut reported = Vec::new();
            let output = model
                .edit(&request, &mut |p| {
                    reported.push(p.step);
                    ControlFlow::Continue(())
                })
                .unwrap();
            assert_eq!(
                reported,
                (1..=case.steps).collect::<Vec<_>>(),
                "progress after every step"
            );
            let what = format!("{name} pipeline.{}", case.name);
            let (_, reference) = expected.f32s(&format!("pipeline.{}.output", case.name));
            assert_slices_close(&what, &output.pixels, &reference, PIPELINE_TOL);

            let png =
                to_rgb(&read_image(&dir.join(format!("expected_{}.png", case.name))).unwrap());
            let ours = output.to_rgb8().unwrap();
            let worst = max_level_diff(&ours, &png);
            assert!(worst <= 1, "{what}: PNG differs by {worst} levels");
        }
    }
}

/// Latents that do not halve evenly (5x9 through three downsamplings, 9x5
/// through two): the up path must resize to the skips' sizes as diffusers does.
#[test]
fn odd_latent_sizes_match_reference() {
    for name in FIXTURES {
        let model = load(name);
        let dir = fixture("odd-sizes").join(name);
        let case: common::Case =
            serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
        let expected = Expected::tensors_only(&dir.join("expected.safetensors"));
        let out = model.unet.forward(
            expected.tensor("unet.sample"),
            500.0,
            &expected.tensor("unet.encoder_hidden_states"),
        );
        assert_close(
            &format!("{name} odd unet"),
            out,
            expected.tensor("unet.t500.output"),
            COMPONENT_TOL,
        );

        let image = to_rgb(&read_image(&dir.join("image.png")).unwrap());
        let mask = byteedit_models::image_io::to_luma(&read_image(&dir.join("mask.png")).unwrap());
        let request = case.request(image, mask, expected.f32s("pipeline.latents"));
        let output = model
            .edit(&request, &mut |_| ControlFlow::Continue(()))
            .unwrap();
        let (_, reference) = expected.f32s("pipeline.output");
        assert_slices_close(
            &format!("{name} odd pipeline"),
            &output.pixels,
            &reference,
            PIPELINE_TOL,
        );
    }
}
