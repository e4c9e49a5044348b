//! The editor page (`/`, `/edit`) in real headless Chromium against the
//! running API and a worker with the tiny model: sign in with a key, open a
//! photo through the file picker, paint a mask with real pointer events,
//! submit, follow the job to its result, move the before/after slider and
//! download the output (byte for byte the API's); outpaint by dragging an
//! edge, following the job again after its event stream drops; an oversized photo shows the API's own sentence next to the picker;
//! and a phone-sized window stacks the layout and paints with touch.

mod support;

use serde_json::Value;
use support::browser::Browser;
use support::{Service, tiny_model};

/// The fixture photo (64×64) as a file the browser can pick.
fn photo() -> String {
    // chromedriver takes canonical paths only.
    tiny_model()
        .join("expected_image.png")
        .canonicalize()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// Opens the page signed in with the service's client key, the photo loaded.
async fn open_editor(service: &Service, browser: &Browser) {
    browser.goto(&service.url("/edit")).await;
    browser
        .wait("!document.getElementById('key-form').hidden")
        .await;
    browser.type_into("#key-input", &service.client_key).await;
    browser.click("#key-form button[type=submit]").await;
    browser
        .wait("!document.getElementById('editor').hidden && document.getElementById('model').options.length > 0")
        .await;
    browser.type_into("#file", &photo()).await;
    browser
        .wait("!document.getElementById('frame').hidden && document.getElementById('view').width === 64")
        .await;
}

/// Painted pixels of the mask canvas.
async fn painted(browser: &Browser) -> u64 {
    browser
        .eval(
            "const m = document.getElementById('mask');
             const d = m.getContext('2d').getImageData(0, 0, m.width, m.height).data;
             let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] >= 128) n++;
             return n;",
        )
        .await
        .as_u64()
        .unwrap()
}

/// A stroke across the middle of the mask canvas with `pointer`.
async fn paint_across(browser: &Browser, pointer: &str) {
    let (x, y, w, h) = browser.rect("#mask").await;
    let mid = y + h / 2.0;
    browser
        .gesture(
            pointer,
            &[
                (x + w * 0.25, mid),
                (x + w * 0.5, mid + 2.0),
                (x + w * 0.75, mid),
            ],
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paint_submit_follow_compare_and_download_in_chromium() {
    let service = Service::start(1).await;
    let browser = Browser::start(1280, 900).await;
    open_editor(&service, &browser).await;
    // The key stays in the browser, never in the address.
    let url = browser.eval("return location.href;").await;
    assert!(!url.as_str().unwrap().contains("bek_"), "{url}");
    // The limits come from the API.
    let limits = browser
        .eval("return document.getElementById('limits').textContent;")
        .await;
    assert!(limits.as_str().unwrap().contains("4096 px"), "{limits}");

    // Submitting with nothing painted says what to do, next to the brush.
    browser.click("#submit").await;
    browser
        .wait("document.querySelector('.error[data-for=mask]').textContent.includes('Paint over')")
        .await;

    paint_across(&browser, "mouse").await;
    let stroke = painted(&browser).await;
    assert!(stroke > 50, "the stroke painted {stroke} pixels");
    browser.click("#undo").await;
    assert_eq!(painted(&browser).await, 0, "undo takes the stroke back");
    browser.click("#redo").await;
    assert_eq!(painted(&browser).await, stroke, "redo puts it back");

    browser.type_into("#prompt", "a red apple").await;
    browser.type_into("#steps", "12").await;
    browser.type_into("#seed", "7").await;
    browser.click("#submit").await;
    browser
        .wait("document.getElementById('progress').value > 0")
        .await;
    browser
        .wait("document.querySelectorAll('#results img').length === 1 && !document.getElementById('after').hidden")
        .await;
    let bar = browser
        .eval("const p = document.getElementById('progress'); return [p.value, p.max];")
        .await;
    assert_eq!(bar, serde_json::json!([12, 12]), "every step was followed");

    // The before/after slider: a click at its left end shows all of the result.
    let (x, y, w, h) = browser.rect("#compare").await;
    browser
        .gesture("mouse", &[(x + w * 0.1, y + h / 2.0)])
        .await;
    let clip = browser
        .eval("return [document.getElementById('compare').value, document.getElementById('after').style.clipPath];")
        .await;
    let value: u32 = clip[0].as_str().unwrap().parse().unwrap();
    assert!(value < 25, "{clip}");
    assert_eq!(clip[1], format!("inset(0px 0px 0px {value}%)"), "{clip}");
    browser.save_screenshot("editor-desktop.png").await;

    // The download is the API's output, byte for byte.
    let (_, jobs) = service.get("/v1/jobs").await;
    let job = &jobs["jobs"][0];
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["parameters"]["steps"], 12);
    assert_eq!(job["parameters"]["seed"], 7);
    let (_, _, api_png) = service
        .download(job["outputs"][0]["url"].as_str().unwrap())
        .await;
    let downloaded = browser
        .eval(
            "const a = document.getElementById('download');
             return fetch(a.href).then(r => r.arrayBuffer()).then(b => {
               let s = ''; for (const x of new Uint8Array(b)) s += String.fromCharCode(x); return [a.download, btoa(s)];
             });",
        )
        .await;
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(downloaded[1].as_str().unwrap())
        .unwrap();
    assert_eq!(bytes, api_png, "the download equals the job's output");
    assert!(
        downloaded[0].as_str().unwrap().ends_with(".png"),
        "{downloaded}"
    );
    // The painted stroke went up as the job's mask.
    let (_, _, mask_png) = service
        .download(&format!("/v1/jobs/{}/mask", job["id"].as_str().unwrap()))
        .await;
    let mask = image::load_from_memory(&mask_png).unwrap().to_luma8();
    let white = mask.pixels().filter(|p| p.0[0] > 127).count() as u64;
    assert_eq!(white, stroke, "the uploaded mask is the painted one");

    // History lists the job; reopening it restores its parameters.
    browser
        .wait("document.querySelectorAll('#history button').length === 1")
        .await;
    browser.type_into("#prompt", " changed").await;
    browser.click("#history button").await;
    browser
        .wait("document.getElementById('prompt').value === 'a red apple' && document.querySelectorAll('#results img').length === 1")
        .await;
    drop(browser);
    service.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dragging_an_edge_outpaints_to_the_canvas_shown() {
    let service = Service::start(1).await;
    let browser = Browser::start(1280, 900).await;
    open_editor(&service, &browser).await;
    browser.click("#task option[value=outpaint]").await;
    browser
        .wait("!document.querySelector('.handle[data-edge=right]').hidden")
        .await;
    let (x, y, w, h) = browser.rect(".handle[data-edge=right]").await;
    let (cx, cy) = (x + w / 2.0, y + h / 2.0);
    browser
        .gesture("mouse", &[(cx, cy), (cx + 60.0, cy), (cx + 120.0, cy)])
        .await;
    let extended = browser
        .eval("return [Number(document.getElementById('extend_right').value), document.getElementById('view').width];")
        .await;
    let right = extended[0].as_u64().unwrap();
    assert!(right >= 8 && right % 8 == 0, "{extended}");
    assert_eq!(
        extended[1].as_u64().unwrap(),
        64 + right,
        "the canvas shows the new size"
    );
    browser.type_into("#steps", "2").await;
    // The first event stream drops before it says anything, as a lost
    // connection would: the page follows the job again and gets its result.
    browser
        .eval(
            "window.cut = 0;
             const real = window.fetch;
             window.fetch = async (url, options) => {
               const response = await real(url, options);
               if (String(url).endsWith('/events') && window.cut === 0) {
                 window.cut = 1;
                 response.body.cancel();
                 const dropped = new ReadableStream({ start(c) { c.error(new TypeError('network error')); } });
                 return new Response(dropped, { status: 200, headers: response.headers });
               }
               return response;
             };
             return true;",
        )
        .await;
    browser.click("#submit").await;
    browser
        .wait("document.querySelectorAll('#results img').length === 1")
        .await;
    assert_eq!(
        browser.eval("return window.cut;").await,
        1,
        "a stream was cut"
    );
    let (_, jobs) = service.get("/v1/jobs").await;
    let job = &jobs["jobs"][0];
    assert_eq!(job["task"], "outpaint", "{job}");
    assert_eq!(job["parameters"]["extend_right"], right);
    assert_eq!(
        job["outputs"][0]["width"].as_u64().unwrap(),
        64 + right,
        "{job}"
    );
    assert_eq!(job["outputs"][0]["height"], 64, "{job}");
    drop(browser);
    service.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_photo_shows_the_apis_sentence_next_to_the_picker() {
    let service = Service::start_with(1, |api| api.max_image_side = 32).await;
    let browser = Browser::start(1280, 900).await;
    open_editor(&service, &browser).await;
    paint_across(&browser, "mouse").await;
    browser.type_into("#prompt", "x").await;
    browser.click("#submit").await;
    browser
        .wait("document.querySelector('.error[data-for=image]').textContent.length > 0")
        .await;
    let shown = browser
        .eval("return document.querySelector('.error[data-for=image]').textContent;")
        .await;
    // The same upload straight to the API: the page shows its sentence.
    let (status, body) = service
        .submit(&[("task", "inpaint"), ("prompt", "x")], true)
        .await;
    assert_eq!(status, 422, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert_eq!(shown.as_str().unwrap(), message);
    let (_, jobs) = service.get("/v1/jobs").await;
    assert_eq!(
        jobs["jobs"].as_array().map(Vec::len),
        Some(0),
        "no job made"
    );
    drop(browser);
    service.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_phone_the_layout_stacks_and_touch_paints() {
    let mut service = Service::start(0).await;
    service.register_model_only().await;
    let browser = Browser::start(390, 844).await;
    open_editor(&service, &browser).await;
    let layout: Value = browser
        .eval(
            "const s = document.getElementById('view').getBoundingClientRect();
             const a = document.querySelector('aside').getBoundingClientRect();
             return {stacked: a.top >= s.bottom, fits: s.right <= window.innerWidth + 1 && a.right <= window.innerWidth + 1};",
        )
        .await;
    assert_eq!(layout["stacked"], true, "{layout}");
    assert_eq!(layout["fits"], true, "{layout}");
    paint_across(&browser, "touch").await;
    assert!(painted(&browser).await > 50, "a finger paints the mask");
    browser.save_screenshot("editor-phone.png").await;
    drop(browser);
    service.finish().await;
}
