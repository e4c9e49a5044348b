//! Every solver × timestep spacing × prediction type (and three beta
//! schedules) against diffusers (tests/fixtures/schedulers/, made by
//! make_scheduler_reference.py): timesteps, sigmas, initial sigma, and a whole
//! run with a fixed stand-in model.

mod common;

use burn::prelude::*;
use byteedit_models::schedulers::{Scheduler, SchedulerConfig, SchedulerKind, TimestepSpacing};
use common::{B, Expected, fixture};
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

        common::check_scheduler_run(name, &expected, name, sample0.clone(), &mut scheduler);
    }
}
