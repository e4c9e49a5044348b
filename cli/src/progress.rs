//! The progress bar of the training commands (`train-reward`, `finetune`).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar that stays hidden until the run knows its steps: loading and
/// checking the inputs print their own lines first.
pub fn training_bar() -> ProgressBar {
    ProgressBar::hidden()
}

/// Shows `bar` on stderr for steps `first_step..=total_steps` (a resumed run
/// starts where it stopped).
pub fn show_steps(bar: &ProgressBar, first_step: u64, total_steps: u64) {
    bar.set_draw_target(ProgressDrawTarget::stderr());
    bar.set_length(total_steps);
    bar.set_position(first_step.saturating_sub(1));
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40} {pos}/{len} steps {elapsed_precise} (eta {eta}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
}
