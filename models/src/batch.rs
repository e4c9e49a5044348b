//! Several edits in one batch: the jobs a worker has queued for one model,
//! each with its own prompt, image, mask, seed and guidance, denoised by
//! the same UNet calls. What they must share is their [`BatchKey`]: one
//! latent size and one timestep schedule.
//!
//! Each item's outputs equal its edit run alone (up to float rounding in
//! the batched matrix products): the noise comes from its own seeds, its
//! prompt and masked image are encoded once for its outputs, and guidance
//! is applied row by row.

use std::ops::ControlFlow;
use std::time::Instant;

use burn::prelude::*;
use burn::tensor::TensorData;

use crate::error::{ModelError, Result};
use crate::pipeline::{
    EditOutputs, EditRequest, InpaintModel, StepProgress, Timings, check_guidance, gaussian_noise,
    into_f32,
};
use crate::schedulers::{Scheduler, SchedulerKind, TimestepSpacing};

/// One edit of a batch: its request and how many outputs it wants (seeds
/// `request.seed`, `request.seed + 1`, ...).
#[derive(Debug, Clone, Copy)]
pub struct BatchItem<'a> {
    pub request: &'a EditRequest,
    pub count: usize,
}

/// What edits must have in common to share UNet calls: the latent size and
/// the timestep schedule, and whether the unconditional half runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchKey {
    pub width: u32,
    pub height: u32,
    pub steps: usize,
    pub scheduler: SchedulerKind,
    pub timestep_spacing: Option<TimestepSpacing>,
    pub guided: bool,
}

impl EditRequest {
    pub fn batch_key(&self) -> BatchKey {
        let (width, height) = self.image.dimensions();
        BatchKey {
            width,
            height,
            steps: self.steps,
            scheduler: self.scheduler,
            timestep_spacing: self.timestep_spacing,
            guided: self.guidance_scale > 1.0,
        }
    }
}

impl<B: Backend> InpaintModel<B> {
    /// Runs the items as one batch. An item that is invalid on its own, or
    /// whose [`BatchKey`] differs from the first valid item's, gets its error
    /// and the others run. `progress(i, p)` is called for item `i` after
    /// every step; returning `ControlFlow::Break` drops the item (its result
    /// is [`ModelError::Cancelled`], and it gets no further calls; its rows
    /// are still computed, since the solver's history holds them too). When
    /// every item is dropped the run stops.
    ///
    /// The outer error is the device failing, which no item caused.
    pub fn edit_batch(
        &self,
        items: &[BatchItem<'_>],
        progress: &mut dyn FnMut(usize, StepProgress) -> ControlFlow<()>,
    ) -> Result<Vec<Result<EditOutputs>>> {
        let started = Instant::now();
        let mut results: Vec<Option<Result<EditOutputs>>> = items
            .iter()
            .map(|item| self.check_item(item).err().map(Err))
            .collect();
        let Some(first) = results.iter().position(Option::is_none) else {
            return Ok(results.into_iter().flatten().collect());
        };
        let key = items[first].request.batch_key();
        for (item, result) in items.iter().zip(&mut results) {
            if result.is_none() && item.request.batch_key() != key {
                *result = Some(Err(ModelError::InvalidInput(format!(
                    "this edit ({:?}) cannot share a batch with {key:?}",
                    item.request.batch_key()
                ))));
            }
        }
        // The items that run, and the row of each output: item `live[r]`
        // owns the rows listed for it, in order.
        let live: Vec<usize> = (0..items.len()).filter(|&i| results[i].is_none()).collect();
        let owner: Vec<usize> = live
            .iter()
            .enumerate()
            .flat_map(|(slot, &i)| std::iter::repeat_n(slot, items[i].count))
            .collect();
        let rows = owner.len();
        let first = items[first].request;
        let sf = self.vae_scale_factor();
        let (lw, lh) = (key.width as usize / sf, key.height as usize / sf);
        let channels = self.vae.latent_channels();
        // Checked with the item: this cannot fail.
        let mut scheduler = Scheduler::<B>::new(
            first.scheduler,
            &self.scheduler_config,
            first.steps,
            first.timestep_spacing,
        )?;
        let noise: Vec<f32> = live
            .iter()
            .flat_map(|&i| {
                let BatchItem { request, count } = items[i];
                match &request.latents {
                    Some(l) => l.values.clone(),
                    None => (0..count as u64)
                        .flat_map(|s| {
                            gaussian_noise(request.seed.wrapping_add(s), channels * lh * lw)
                        })
                        .collect(),
                }
            })
            .collect();
        let device = self.device();
        let batch = if key.guided { 2 * rows } else { rows };
        // The UNet batch's rows taken from per-item rows: the unconditional
        // half from row `o` of item slot `o`, the conditional half from row
        // `offset + o` (both halves only when guided).
        let owner_index = |offset: usize| {
            let index: Vec<i64> = (0..2)
                .flat_map(|half| owner.iter().map(move |&o| (half * offset + o) as i64))
                .take(batch)
                .collect();
            Tensor::<B, 1, Int>::from_data(TensorData::new(index, [batch]), device)
        };

        // 1. prompt embeddings, one per item (and one negative per item when
        // guided): the unconditional rows first, then the prompts', each
        // repeated for the item's outputs
        let t0 = Instant::now();
        let mut prompts: Vec<&str> = Vec::with_capacity(2 * live.len());
        if key.guided {
            prompts.extend(
                live.iter()
                    .map(|&i| items[i].request.negative_prompt.as_deref().unwrap_or("")),
            );
        }
        prompts.extend(live.iter().map(|&i| items[i].request.prompt.as_str()));
        let context = self
            .encode_prompts(&prompts)
            .select(0, owner_index(live.len()));
        self.sync()?;
        let text_encode = t0.elapsed();

        // 2. mask and masked-image latents, once per item
        let t0 = Instant::now();
        let conditions: Vec<Tensor<B, 4>> = live
            .iter()
            .map(|&i| {
                let (mask, masked) =
                    self.mask_condition(&items[i].request.image, &items[i].request.mask);
                Tensor::cat(vec![mask, masked], 1)
            })
            .collect();
        let condition = Tensor::cat(conditions, 0).select(0, owner_index(0));
        self.sync()?;
        let vae_encode = t0.elapsed();

        // 3. initial latents, and each row's guidance scale
        let mut latents =
            Tensor::<B, 4>::from_data(TensorData::new(noise, [rows, channels, lh, lw]), device)
                .mul_scalar(scheduler.init_noise_sigma());
        let guidance: Vec<f32> = owner
            .iter()
            .map(|&slot| items[live[slot]].request.guidance_scale as f32)
            .collect();
        let guidance =
            Tensor::<B, 4>::from_data(TensorData::new(guidance, [rows, 1, 1, 1]), device);

        // 4. denoising loop
        let t0 = Instant::now();
        let mut running = vec![true; live.len()];
        let timesteps = scheduler.timesteps().to_vec();
        for (step, &t) in timesteps.iter().enumerate() {
            let doubled = if key.guided {
                Tensor::cat(vec![latents.clone(), latents.clone()], 0)
            } else {
                latents.clone()
            };
            let input = scheduler.scale_model_input(doubled, step);
            let prediction = self.predict(input, &condition, &context, &vec![t; batch]);
            let prediction = if key.guided {
                let uncond = prediction.clone().narrow(0, 0, rows);
                let text = prediction.narrow(0, rows, rows);
                uncond.clone().add(text.sub(uncond).mul(guidance.clone()))
            } else {
                prediction
            };
            latents = scheduler.step(prediction, step, latents);
            // A GPU backend queues work and returns at once: wait for the
            // step, so progress, cancel and timings follow the device.
            self.sync()?;
            let report = StepProgress {
                step: step + 1,
                total: timesteps.len(),
                timestep: t,
                elapsed: t0.elapsed(),
            };
            for (slot, &i) in live.iter().enumerate() {
                if running[slot] && progress(i, report).is_break() {
                    running[slot] = false;
                    results[i] = Some(Err(ModelError::Cancelled));
                }
            }
            if !running.contains(&true) {
                return Ok(results.into_iter().flatten().collect());
            }
        }
        let denoise = t0.elapsed();

        // 5. decode, one output at a time: one image's VAE activations in
        // memory, not the batch's
        let t0 = Instant::now();
        let mut images: Vec<Vec<Vec<f32>>> = vec![Vec::new(); live.len()];
        for (row, &slot) in owner.iter().enumerate() {
            if running[slot] {
                let image = self.decode_latents(latents.clone().narrow(0, row, 1));
                images[slot].push(into_f32(image.permute([0, 2, 3, 1]), "decoded image")?);
            }
        }
        let timings = Timings {
            text_encode,
            vae_encode,
            denoise,
            vae_decode: t0.elapsed(),
            steps: timesteps.len(),
            total: started.elapsed(),
        };
        for ((slot, &i), images) in live.iter().enumerate().zip(images) {
            if running[slot] {
                results[i] = Some(Ok(EditOutputs {
                    width: key.width,
                    height: key.height,
                    images,
                    timings,
                }));
            }
        }
        Ok(results.into_iter().flatten().collect())
    }

    /// What makes an item unable to run at all, whatever it is batched with.
    fn check_item(&self, item: &BatchItem<'_>) -> Result<()> {
        let request = item.request;
        let (width, height) = request.image.dimensions();
        if request.mask.dimensions() != (width, height) {
            let (mw, mh) = request.mask.dimensions();
            return Err(ModelError::InvalidInput(format!(
                "mask is {mw}x{mh} but the image is {width}x{height}; they must be the same size"
            )));
        }
        if item.count == 0 {
            return Err(ModelError::InvalidInput(
                "the number of outputs must be at least 1".into(),
            ));
        }
        self.check_size(width, height)?;
        check_guidance(request.guidance_scale)?;
        // The schedule (steps within the model's range) is the same for the
        // whole batch, but whether it is valid is each request's own matter.
        Scheduler::<B>::new(
            request.scheduler,
            &self.scheduler_config,
            request.steps,
            request.timestep_spacing,
        )?;
        if let Some(l) = &request.latents {
            let sf = self.vae_scale_factor();
            let shape = [
                item.count,
                self.vae.latent_channels(),
                height as usize / sf,
                width as usize / sf,
            ];
            l.check_shape(shape, sf)?;
        }
        Ok(())
    }
}
