//! Fine-tuning curves: `loss.png` (generator and discriminator losses) and
//! `rewards.png` (held-out rewards and unmasked L1 against the step).

use std::path::Path;

use plotters::style::{BLUE, GREEN, MAGENTA, RED};

use crate::finetune::train::{EvalLine, StepLine};
use crate::plot::chart;

pub fn curves(out: &Path, steps: &[StepLine], evals: &[EvalLine]) {
    let at = |f: &dyn Fn(&StepLine) -> Option<f64>| -> Vec<(f64, f64)> {
        steps
            .iter()
            .filter_map(|m| f(m).map(|v| (m.step as f64, v)))
            .collect()
    };
    let held = |f: &dyn Fn(&EvalLine) -> Option<f64>| -> Vec<(f64, f64)> {
        evals
            .iter()
            .filter_map(|m| f(m).map(|v| (m.step as f64, v)))
            .collect()
    };
    let plots = [
        (
            "loss.png",
            chart(
                &out.join("loss.png"),
                "fine-tuning losses",
                "loss",
                &[
                    ("generator L_G", at(&|m| Some(m.generator.loss)), BLUE),
                    ("discriminator L_D", at(&|m| m.discriminator_loss), RED),
                ],
            ),
        ),
        (
            "rewards.png",
            chart(
                &out.join("rewards.png"),
                "held-out edits",
                "mean reward / L1",
                &[
                    ("aesthetic", held(&|m| m.held_out_aesthetic), BLUE),
                    ("alignment", held(&|m| m.held_out_alignment), GREEN),
                    (
                        "unmasked L1",
                        held(&|m| Some(m.held_out_unmasked_l1)),
                        MAGENTA,
                    ),
                ],
            ),
        ),
    ];
    for (name, result) in plots {
        if let Err(e) = result {
            tracing::warn!(plot = name, error = %e, "could not draw the plot");
        }
    }
}
