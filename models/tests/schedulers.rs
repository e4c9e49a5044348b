//! Every solver × timestep spacing × prediction type (and three beta
//! schedules) against diffusers (tests/fixtures/schedulers/, made by
//! make_scheduler_reference.py): timesteps, sigmas, initial sigma, and a whole
//! run with a fixed stand-in model.

mod common;

use burn::prelude::*;
use byteedit_models::schedulers::{Scheduler, SchedulerConfig, SchedulerKind, TimestepSpacing};
use common::{B, Expected, assert_close, assert_slices_close, fixture};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    name: String,
    scheduler: String,
    spacing: String,
    steps: usize,
    config: serde_json::Value,
}

#[derive(Deserialize)]
struct Cases {
    cases: Vec<Case>,
}

#[test]
fn every_solver_spacing_and_prediction_type_matches_diffusers() {
    let dir = fixture("schedulers");
    let cases: Cases =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let expected = Expected::tensors_only(&dir.join("expected.safetensors"));
    let sample0: Tensor<B, 4> = expected.tensor("sample0");
    assert!(cases.cases.len() >= 40, "all combinations are covered");
    for case in &cases.cases {
        let name = &case.name;
        let config: SchedulerConfig = serde_json::from_value(case.config.clone()).unwrap();
        let kind: SchedulerKind = case.scheduler.parse().unwrap();
        let spacing: TimestepSpacing = case.spacing.parse().unwrap();
        let mut scheduler = Scheduler::<B>::new(kind, &config, case.steps, Some(spacing)).unwrap();

        let timesteps = expected.numbers(&format!("{name}.timesteps"));
        assert_slices_close(
            &format!("{name}.timesteps"),
            scheduler.timesteps(),
            &timesteps,
            1e-3,
        );
        if expected.has(&format!("{name}.sigmas")) {
            let sigmas = expected.numbers(&format!("{name}.sigmas"));
            assert_slices_close(
                &format!("{name}.sigmas"),
                scheduler.sigmas().unwrap(),
                &sigmas,
                1e-4,
            );
        }
        let init = expected.numbers(&format!("{name}.init_noise_sigma"));
        assert_slices_close(
            &format!("{name}.init_noise_sigma"),
            &[scheduler.init_noise_sigma() as f32],
            &init,
            1e-4,
        );

        let mut x = sample0.clone().mul_scalar(scheduler.init_noise_sigma());
        for j in 0..scheduler.timesteps().len() {
            let eps = scheduler
                .scale_model_input(x.clone(), j)
                .mul_scalar(0.7)
                .add_scalar(0.1 * (j % 3) as f64);
            x = scheduler.step(eps, j, x);
        }
        assert_close(
            &format!("{name}.final"),
            x,
            expected.tensor(&format!("{name}.final")),
            1e-4,
        );
    }
}
