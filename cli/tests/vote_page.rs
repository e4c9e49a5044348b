//! The volunteers' page (`/vote`) in real headless Chromium, driven through
//! chromedriver (W3C WebDriver over HTTP), voting against the running API:
//! a keyboard vote, a click vote, the end of the queue, and the layout on a
//! phone-sized screen. Needs Debian's `chromium` and `chromium-driver`
//! (`.ci/run` installs them when missing).

mod support;

use support::Service;
use support::browser::Browser;

/// Both images of the shown pair have loaded.
const PAIR_LOADED: &str = "!document.getElementById('pair').hidden \
    && document.getElementById('left-img').complete && document.getElementById('left-img').naturalWidth > 0 \
    && document.getElementById('right-img').complete && document.getElementById('right-img').naturalWidth > 0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volunteers_vote_in_chromium_with_keys_and_clicks() {
    let mut service = Service::start(0).await;
    service.add_worker_for(&["tiny", "tiny-v2"]).await;
    let first = service.comparison_run("tiny-v2", "tiny", "erase").await;
    let second = service.comparison_run("tiny-v2", "tiny", "inpaint").await;
    let token = service.volunteer("browser", false).await;

    // A phone-sized window.
    let browser = Browser::start(390, 844).await;
    browser
        .goto(&service.url(&format!("/vote?token={token}")))
        .await;
    browser.wait(PAIR_LOADED).await;
    // The token left the address bar and stays in the browser.
    let url = browser.eval("return location.href;").await;
    assert!(!url.as_str().unwrap().contains("token"), "{url}");
    // On a phone the two results stack, and the three buttons fit the screen.
    let layout = browser
        .eval(
            "const l = document.getElementById('left-img').getBoundingClientRect();
             const r = document.getElementById('right-img').getBoundingClientRect();
             const b = document.getElementById('btn-right').getBoundingClientRect();
             return {stacked: r.top >= l.bottom, buttonInside: b.right <= window.innerWidth, width: window.innerWidth};",
        )
        .await;
    assert_eq!(layout["stacked"], true, "{layout}");
    assert_eq!(layout["buttonInside"], true, "{layout}");
    // What a volunteer sees (docs/images/vote-page.png is one of these).
    browser.save_screenshot("vote-page.png").await;
    let shown_first = browser
        .eval("return document.getElementById('left-img').src;")
        .await;

    // Key 1: the left image is better.
    browser.press("1").await;
    browser
        .wait(&format!(
            "document.getElementById('left-img').src !== {shown_first} && ({PAIR_LOADED})"
        ))
        .await;
    // A click on "Same" for the second pair, then the queue is empty.
    browser.click("#btn-same").await;
    browser
        .wait("!document.getElementById('done').hidden")
        .await;

    let votes: Vec<(String, Option<bool>, bool)> = sqlx::query_as(
        "SELECT verdict, candidate_left, presentation_id IS NOT NULL FROM votes \
         WHERE aspect = 'overall' ORDER BY created_at",
    )
    .fetch_all(&service.backends.db)
    .await
    .unwrap();
    assert_eq!(votes.len(), 2, "{votes:?}");
    // Left was chosen: good when the candidate was on the left, bad otherwise.
    let (verdict, left, via_presentation) = &votes[0];
    assert!(*via_presentation);
    assert_eq!(
        verdict,
        if *left == Some(true) { "good" } else { "bad" },
        "{votes:?}"
    );
    assert_eq!(votes[1].0, "same");
    let voted: Vec<(uuid::Uuid,)> = sqlx::query_as("SELECT comparison_id FROM votes")
        .fetch_all(&service.backends.db)
        .await
        .unwrap();
    for pair in [&first, &second] {
        let id = pair["id"].as_str().unwrap();
        assert!(
            voted.iter().any(|(v,)| v.to_string() == id),
            "{id} not voted"
        );
    }
    drop(browser);
    service.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_token_asks_for_a_valid_one() {
    let service = Service::start(0).await;
    let browser = Browser::start(1200, 900).await;
    browser.goto(&service.url("/vote?token=vol_wrong")).await;
    browser
        .wait("!document.getElementById('token-form').hidden")
        .await;
    browser
        .wait("document.getElementById('message').textContent.includes('not known')")
        .await;
    drop(browser);
    service.finish().await;
}
