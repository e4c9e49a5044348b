//! From a stored job to the engine's request: decode the uploads and build
//! the canvas and mask the task needs.

use byteedit_jobs::{JobRecord, Task};
use byteedit_models::image_io::{decode_image, to_luma, to_rgb};
use byteedit_models::tasks::{Extension, outpaint_canvas};
use byteedit_models::{EditRequest, ModelError, SchedulerKind};
use image::GrayImage;

pub fn edit_request(
    job: &JobRecord,
    image: &[u8],
    mask: Option<&[u8]>,
) -> Result<EditRequest, ModelError> {
    let p = &job.params;
    let image = to_rgb(&decode_image(image, "image")?);
    let mask = mask
        .map(|m| decode_image(m, "mask").map(|m| to_luma(&m)))
        .transpose()?;
    if let Some(m) = &mask
        && m.dimensions() != image.dimensions()
    {
        return Err(ModelError::InvalidInput(format!(
            "mask is {}x{} but the image is {}x{}",
            m.width(),
            m.height(),
            image.width(),
            image.height()
        )));
    }
    let (image, mask) = match job.task {
        Task::Outpaint => {
            let ext = Extension {
                left: p.extend_left,
                right: p.extend_right,
                top: p.extend_top,
                bottom: p.extend_bottom,
            };
            outpaint_canvas(&image, mask.as_ref(), ext)
        }
        Task::Inpaint | Task::Erase => {
            let mask = mask
                .ok_or_else(|| ModelError::InvalidInput(format!("`{}` needs a mask", job.task)))?;
            (image, mask)
        }
    };
    check_canvas(job, &mask)?;
    Ok(EditRequest {
        image,
        mask,
        prompt: p.prompt.clone(),
        negative_prompt: p.negative_prompt.clone(),
        steps: p.steps as usize,
        guidance_scale: p.guidance_scale,
        scheduler: p
            .scheduler
            .parse::<SchedulerKind>()
            .map_err(ModelError::InvalidInput)?,
        timestep_spacing: None,
        seed: p.seed,
        latents: None,
    })
}

/// The API checked the size from the header; the decoded image must agree.
fn check_canvas(job: &JobRecord, mask: &GrayImage) -> Result<(), ModelError> {
    if mask.dimensions() != (job.width, job.height) {
        return Err(ModelError::InvalidInput(format!(
            "decoded canvas is {}x{}, but the job was accepted as {}x{}",
            mask.width(),
            mask.height(),
            job.width,
            job.height
        )));
    }
    Ok(())
}
