//! Cross-job batching in the worker (`--max-batch`): queued jobs of one
//! model and one shape share the engine's UNet calls, each keeps its own
//! result, a job of another shape waits for a batch of its own, and a job
//! cancelled mid-batch ends at once while the others run on.

mod support;

use byteedit_jobs::EditParams;
use byteedit_models::InpaintModel;
use byteedit_models::image_io::{decode_image, to_rgb};
use serde_json::Value;
use support::{MODEL, Service, fixture_plan, tiny_model};

fn id(job: &Value) -> String {
    job["id"].as_str().unwrap().to_owned()
}

/// The job's outputs as the engine makes them alone, from its reported
/// parameters.
fn direct_outputs(model: &InpaintModel<byteedit_models::CpuBackend>, done: &Value) -> Vec<Vec<u8>> {
    let params: EditParams = serde_json::from_value(done["parameters"].clone()).unwrap();
    let (plan, request) = fixture_plan(model, &params);
    model
        .edit_outputs(&request, params.num_outputs as usize, &mut |_| {
            std::ops::ControlFlow::Continue(())
        })
        .unwrap()
        .to_rgb8()
        .unwrap()
        .iter()
        .map(|image| plan.finish(image).into_raw())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_jobs_of_one_shape_share_a_batch_and_keep_their_own_results() {
    let mut service = Service::start(0).await;
    service.register_model_only().await;
    let jobs: [&[(&str, &str)]; 4] = [
        &[("prompt", "a red apple"), ("seed", "1"), ("steps", "3")],
        &[
            ("prompt", "a wooden boat"),
            ("negative_prompt", "blurry"),
            ("seed", "2"),
            ("steps", "3"),
            ("guidance_scale", "4"),
        ],
        // Another schedule: cannot share the first batch.
        &[("prompt", "a red apple"), ("seed", "1"), ("steps", "2")],
        &[
            ("prompt", "a cat"),
            ("seed", "3"),
            ("steps", "3"),
            ("num_outputs", "2"),
        ],
    ];
    let mut ids = Vec::new();
    for fields in jobs {
        let mut fields = fields.to_vec();
        fields.push(("task", "inpaint"));
        let (status, job) = service.submit(&fields, true).await;
        assert_eq!(status, 202, "{job}");
        ids.push(id(&job));
    }
    // Every job waits in the queue; then one worker batching up to 4 outputs.
    service
        .add_worker_with(&[MODEL], |args| args.max_batch = Some(4))
        .await;
    let mut done = Vec::new();
    for id in &ids {
        done.push(service.wait_for(id, |j| j["status"] == "succeeded").await);
    }
    let batch: Vec<u64> = done
        .iter()
        .map(|j| j["timings"]["batch_outputs"].as_u64().unwrap())
        .collect();
    // Jobs 1, 2 and 4 (four outputs) ran together; job 3 alone.
    assert_eq!(batch, [4, 4, 1, 4], "{done:?}");

    let model =
        InpaintModel::<byteedit_models::CpuBackend>::load(&tiny_model(), &Default::default())
            .unwrap();
    for (i, job) in done.iter().enumerate() {
        let direct = direct_outputs(&model, job);
        let outputs = job["outputs"].as_array().unwrap();
        assert_eq!(outputs.len(), direct.len(), "job {i}");
        for (output, alone) in outputs.iter().zip(&direct) {
            let (_, _, png) = service.download(output["url"].as_str().unwrap()).await;
            let served = to_rgb(&decode_image(&png, "served").unwrap()).into_raw();
            // Batched matrix products may round differently: one level at most.
            let worst = served
                .iter()
                .zip(alone)
                .map(|(a, b)| a.abs_diff(*b))
                .max()
                .unwrap();
            assert!(worst <= 1, "job {i}: batched output differs by {worst}");
        }
    }
    service.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cancelled_mid_batch_ends_at_once_and_the_others_finish() {
    let mut service = Service::start(0).await;
    service.register_model_only().await;
    let long = [
        ("task", "inpaint"),
        ("prompt", "slow"),
        ("steps", "100"),
        ("num_outputs", "4"),
    ];
    let (_, kept) = service.submit(&long, true).await;
    let (_, dropped) = service.submit(&long, true).await;
    service
        .add_worker_with(&[MODEL], |args| args.max_batch = Some(8))
        .await;
    // Both run, in one batch.
    service
        .wait_for(&id(&dropped), |j| {
            j["status"] == "running" && j["progress"]["step"].as_u64() > Some(0)
        })
        .await;
    let (status, body) = service.delete(&format!("/v1/jobs/{}", id(&dropped))).await;
    assert_eq!(status, 202, "{body}");
    let dropped = service
        .wait_for(&id(&dropped), |j| j["status"] == "canceled")
        .await;
    let (_, still) = service.get(&format!("/v1/jobs/{}", id(&kept))).await;
    assert_eq!(
        still["status"], "running",
        "the rest of the batch goes on: {still}"
    );
    let kept = service
        .wait_for(&id(&kept), |j| j["status"] == "succeeded")
        .await;
    assert_eq!(kept["timings"]["batch_outputs"], 8, "{kept}");
    assert_eq!(kept["outputs"].as_array().unwrap().len(), 4);
    assert!(
        dropped["outputs"].as_array().unwrap().is_empty(),
        "{dropped}"
    );
    service.finish().await;
}
