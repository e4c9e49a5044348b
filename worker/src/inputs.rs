//! From a stored job to the engine's input: decode the uploads, take the
//! mask from the file or the image's alpha, and plan the task's edit.

use byteedit_jobs::geometry::{Geometry, Rect};
use byteedit_jobs::{JobRecord, ModelInfo, Task};
use byteedit_models::image_io::{Bounds, alpha_mask, decode_image_within, to_luma, to_rgb};
use byteedit_models::tasks::{EditPlan, NativeSize, TaskOptions};
use byteedit_models::{EditRequest, ModelError};

/// A job ready for the engine.
pub struct PreparedEdit {
    pub plan: EditPlan,
    pub request: EditRequest,
    pub geometry: Geometry,
}

pub fn prepare(
    job: &JobRecord,
    model: &ModelInfo,
    image: &[u8],
    mask: Option<&[u8]>,
) -> Result<PreparedEdit, ModelError> {
    let p = &job.params;
    // The API accepted the job at this canvas size: the stored image can be
    // no larger, so a file that grew in storage (or a header the API read
    // differently) cannot make the worker allocate more than the job needs.
    let bounds = Bounds {
        max_side: job.width.max(job.height),
        max_pixels: job.width as u64 * job.height as u64,
    };
    let decoded = decode_image_within(image, "image", bounds)?;
    // A mask is the image's size, unless it is resized to it.
    let mask_bounds = if p.mask_resize {
        Bounds::default()
    } else {
        bounds
    };
    let mask = match mask {
        Some(m) => Some(to_luma(&decode_image_within(m, "mask", mask_bounds)?)),
        None => alpha_mask(&decoded),
    };
    if mask.is_none() && job.task != Task::Outpaint {
        return Err(ModelError::InvalidInput(format!(
            "`{}` needs a mask: a mask file, or transparent pixels in the image",
            job.task
        )));
    }
    let image = to_rgb(&decoded);
    let size = NativeSize {
        native: model.native_size,
        multiple: model.vae_scale_factor,
    };
    let plan = EditPlan::new(&image, mask.as_ref(), &TaskOptions::for_params(p), size)?;
    let (cw, ch) = plan.canvas.dimensions();
    // The API sized the job from the header; the decoded image must agree.
    if (cw, ch) != (job.width, job.height) {
        return Err(ModelError::InvalidInput(format!(
            "decoded canvas is {cw}x{ch}, but the job was accepted as {}x{}",
            job.width, job.height
        )));
    }
    let geometry = geometry(&plan, image.dimensions());
    let request = EditRequest::for_params(&plan, p)?;
    Ok(PreparedEdit {
        plan,
        request,
        geometry,
    })
}

fn geometry(plan: &EditPlan, (iw, ih): (u32, u32)) -> Geometry {
    let (cw, ch) = plan.canvas.dimensions();
    let (ww, wh) = plan.working_size();
    let c = plan.crop;
    Geometry {
        canvas_width: cw,
        canvas_height: ch,
        image: Rect {
            x: plan.offset.0,
            y: plan.offset.1,
            width: iw,
            height: ih,
        },
        crop: c,
        working_width: ww,
        working_height: wh,
        masked_pixels: plan.masked_pixels(),
    }
}
