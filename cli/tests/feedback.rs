//! Human feedback through the real API and Postgres: comparisons, votes
//! (replacement, no repeats, left/right order recorded), expert ratings,
//! GSB statistics against the formulas, and the training export.

mod support;

use byteedit_jobs::feedback::GsbStats;
use serde_json::{Value, json};
use support::{Service, authorized, error_code, fixture_bytes, fixture_form};

const CANDIDATE: &str = "tiny-v2";
const BASELINE: &str = "tiny";

async fn service() -> Service {
    let mut service = Service::start(0).await;
    service.add_worker_for(&[BASELINE, CANDIDATE]).await;
    service
}

fn id(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volunteers_vote_once_per_pair_and_revotes_replace() {
    let service = service().await;
    let pairs = [
        service.comparison_run(CANDIDATE, BASELINE, "erase").await,
        service.comparison_run(CANDIDATE, BASELINE, "erase").await,
    ];
    assert_eq!(pairs[0]["candidate_model"], CANDIDATE);
    let ann = service.volunteer("ann", false).await;
    let as_ann = authorized(&ann);

    // Each pair once, then nothing: no self-repeat.
    let mut seen = Vec::new();
    for round in 0..2 {
        let (status, next) = service.get_as("/v1/comparisons/next", &ann).await;
        assert_eq!(status, 200, "{next}");
        let comparison = id(&next, "comparison_id");
        assert!(!seen.contains(&comparison), "served {comparison} twice");
        seen.push(comparison.clone());
        assert_eq!(next["task"], "erase");
        for side in ["left", "right"] {
            let url = next[side]["url"].as_str().unwrap();
            // The volunteer sees the images of the pair it judges.
            let (status, kind, _) = service.download_as(&as_ann, url).await;
            assert_eq!((status, kind.as_str()), (200, "image/png"));
        }
        let (status, _, input) = service
            .download_as(&as_ann, next["input_url"].as_str().unwrap())
            .await;
        assert_eq!(status, 200);
        assert_eq!(input, fixture_bytes("expected_image.png"));
        let path = format!("/v1/comparisons/{comparison}/votes");
        let choice = if round == 0 { "left" } else { "same" };
        let (status, vote) = service
            .post_json(
                &path,
                Some(&ann),
                json!({"choice": choice, "presentation_id": next["presentation_id"]}),
            )
            .await;
        assert_eq!(status, 201, "{vote}");
        assert_eq!(vote["replaced"], false);
        // The choice was turned into a verdict for the candidate by the side it was on.
        let left_is_candidate = next["left"]["url"].as_str().unwrap().contains(&id(
            &pairs
                .iter()
                .find(|p| p["id"] == comparison.as_str())
                .unwrap()
                .clone(),
            "candidate_job",
        ));
        let expected = match (choice, left_is_candidate) {
            ("same", _) => "same",
            ("left", true) => "good",
            _ => "bad",
        };
        assert_eq!(vote["verdict"], expected, "{next}");
        // Voting again replaces it.
        let (status, again) = service
            .post_json(&path, Some(&ann), json!({"verdict": "bad"}))
            .await;
        assert_eq!(
            (status, again["replaced"].as_bool()),
            (200, Some(true)),
            "{again}"
        );
    }
    let (status, _) = service.get_as("/v1/comparisons/next", &ann).await;
    assert_eq!(status, 204);
    let (count, bad): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(*) FILTER (WHERE verdict = 'bad') FROM votes")
            .fetch_one(&service.backends.db)
            .await
            .unwrap();
    assert_eq!((count, bad), (2, 2), "one vote per pair, replaced");

    // Another aspect is another vote.
    let path = format!("/v1/comparisons/{}/votes", seen[0]);
    let (status, _) = service
        .post_json(
            &path,
            Some(&ann),
            json!({"verdict": "good", "aspect": "coherence"}),
        )
        .await;
    assert_eq!(status, 201);

    // Bad votes.
    let bob = service.volunteer("bob", false).await;
    let (_, bobs) = service.get_as("/v1/comparisons/next", &bob).await;
    for (token, body, status, code) in [
        // `None` sends the test's client key: clients do not vote.
        (None, json!({"verdict": "good"}), 403, "forbidden"),
        (
            Some("vol_nope"),
            json!({"verdict": "good"}),
            401,
            "unauthorized",
        ),
        (
            Some(ann.as_str()),
            json!({"verdict": "great"}),
            422,
            "invalid_field",
        ),
        (
            Some(ann.as_str()),
            json!({"verdict": "good", "choice": "left"}),
            422,
            "invalid_field",
        ),
        (
            Some(ann.as_str()),
            json!({"choice": "left"}),
            422,
            "missing_field",
        ),
        (
            Some(ann.as_str()),
            json!({"verdict": "good", "aspect": "speed"}),
            422,
            "invalid_field",
        ),
        // Bob's presentation is not Ann's.
        (
            Some(ann.as_str()),
            json!({"choice": "left", "presentation_id": bobs["presentation_id"]}),
            422,
            "invalid_field",
        ),
    ] {
        let (got, err) = service.post_json(&path, token, body.clone()).await;
        assert_eq!(
            (got, error_code(&err).as_str()),
            (status, code),
            "{body}: {err}"
        );
    }
    let (status, err) = service
        .post_json(
            "/v1/comparisons/0190b6a0-0000-7000-8000-000000000000/votes",
            Some(&ann),
            json!({"verdict": "good"}),
        )
        .await;
    assert_eq!((status, error_code(&err).as_str()), (404, "not_found"));

    // The order shown is random and recorded: 40 presentations show both sides.
    for _ in 0..40 {
        let (status, _) = service.get_as("/v1/comparisons/next", &bob).await;
        assert_eq!(status, 200);
    }
    let sides: Vec<(bool, i64)> = sqlx::query_as(
        "SELECT candidate_left, count(*) FROM presentations GROUP BY candidate_left ORDER BY 1",
    )
    .fetch_all(&service.backends.db)
    .await
    .unwrap();
    assert_eq!(sides.len(), 2, "both orders shown: {sides:?}");
    assert!(sides.iter().all(|(_, n)| *n >= 5), "{sides:?}");
    service.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comparisons_need_two_finished_jobs_of_the_same_input() {
    let service = service().await;
    let submit = |model: &'static str, prompt: &'static str| {
        let service = &service;
        async move {
            let (status, job) = service
                .submit(
                    &[
                        ("task", "inpaint"),
                        ("prompt", prompt),
                        ("model", model),
                        ("seed", "5"),
                        ("steps", "1"),
                    ],
                    true,
                )
                .await;
            assert_eq!(status, 202, "{job}");
            id(&job, "id")
        }
    };
    let a = submit(CANDIDATE, "a red apple").await;
    let b = submit(BASELINE, "a red apple").await;
    let other = submit(BASELINE, "a green pear").await;
    for job in [&a, &b, &other] {
        service.wait_for(job, |j| j["status"] == "succeeded").await;
    }
    let (status, c) = service
        .post_json(
            "/v1/comparisons",
            Some(&service.admin_key),
            json!({"candidate_job": a, "baseline_job": b, "votes_wanted": 5}),
        )
        .await;
    assert_eq!(status, 201, "{c}");
    assert_eq!(
        (c["candidate_model"].as_str(), c["baseline_model"].as_str()),
        (Some(CANDIDATE), Some(BASELINE))
    );
    assert_eq!(c["votes_wanted"], 5);

    // Canceled before it ran: never succeeded.
    let (_, queued) = service
        .submit(
            &[
                ("task", "inpaint"),
                ("prompt", "x"),
                ("model", "nobody-serves-this"),
            ],
            true,
        )
        .await;
    assert_eq!(error_code(&queued), "unknown_model");
    let slow = submit(BASELINE, "a red apple").await;
    service.delete(&format!("/v1/jobs/{slow}")).await;
    let done = service
        .wait_for(&slow, |j| {
            j["status"] == "canceled" || j["status"] == "succeeded"
        })
        .await;
    let cases = [
        (
            json!({"candidate_job": a, "baseline_job": other}),
            422,
            "not_same_input",
        ),
        (
            json!({"candidate_job": a, "baseline_job": a}),
            422,
            "invalid_field",
        ),
        (
            json!({"candidate_job": a, "baseline_job": b, "candidate_output": 3}),
            422,
            "invalid_field",
        ),
        (
            json!({"candidate_job": a, "baseline_job": b, "votes_wanted": 0}),
            422,
            "invalid_field",
        ),
        (
            json!({"candidate_job": a, "baseline_job": "0190b6a0-0000-7000-8000-000000000000"}),
            404,
            "not_found",
        ),
        (json!({"candidate_job": a}), 422, "invalid_field"),
    ];
    for (body, status, code) in cases {
        let (got, err) = service
            .post_json("/v1/comparisons", Some(&service.admin_key), body.clone())
            .await;
        assert_eq!(
            (got, error_code(&err).as_str()),
            (status, code),
            "{body}: {err}"
        );
    }
    if done["status"] == "canceled" {
        let (got, err) = service
            .post_json(
                "/v1/comparisons",
                Some(&service.admin_key),
                json!({"candidate_job": a, "baseline_job": slow}),
            )
            .await;
        assert_eq!(
            (got, error_code(&err).as_str()),
            (409, "job_not_succeeded"),
            "{err}"
        );
    }
    // One input on two models: the same model twice is refused.
    let form = fixture_form(
        &[
            ("task", "erase"),
            ("candidate_model", BASELINE),
            ("baseline_model", BASELINE),
        ],
        true,
    );
    let (status, err) = service
        .post_form_as(&service.admin, "/v1/comparisons", form)
        .await;
    assert_eq!(
        (status, error_code(&err).as_str()),
        (422, "invalid_field"),
        "{err}"
    );
    service.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_match_the_formulas_and_the_export_round_trips() {
    let service = service().await;
    let mut pairs = Vec::new();
    for _ in 0..3 {
        pairs.push(service.comparison_run(CANDIDATE, BASELINE, "erase").await);
    }
    let inpaint = service.comparison_run(CANDIDATE, BASELINE, "inpaint").await;
    // 4 volunteers x 3 erase pairs with a fixed pattern: G=5, S=4, B=3.
    let pattern = [
        ["good", "good", "same"],
        ["bad", "good", "same"],
        ["good", "bad", "same"],
        ["good", "same", "bad"],
    ];
    for (n, verdicts) in pattern.iter().enumerate() {
        let token = service.volunteer(&format!("v{n}"), false).await;
        for (pair, verdict) in pairs.iter().zip(verdicts) {
            let path = format!("/v1/comparisons/{}/votes", id(pair, "id"));
            let (status, v) = service
                .post_json(&path, Some(&token), json!({"verdict": verdict}))
                .await;
            assert_eq!(status, 201, "{v}");
        }
        let path = format!("/v1/comparisons/{}/votes", id(&inpaint, "id"));
        service
            .post_json(&path, Some(&token), json!({"verdict": "good"}))
            .await;
    }
    let (status, report) = service
        .get_as(
            &format!("/v1/stats/gsb?candidate={CANDIDATE}&baseline={BASELINE}&task=erase"),
            &service.admin_key,
        )
        .await;
    assert_eq!(status, 200, "{report}");
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{report}");
    let row = &rows[0];
    assert_eq!(
        (
            row["good"].as_u64(),
            row["same"].as_u64(),
            row["bad"].as_u64()
        ),
        (Some(5), Some(4), Some(3))
    );
    let (g, s, b) = (5.0, 4.0, 3.0);
    let superiority = row["superiority"]["value"].as_f64().unwrap();
    assert!((superiority - (g + s) / (s + b)).abs() < 1e-12, "{row}");
    let win = row["win_rate"]["value"].as_f64().unwrap();
    assert!((win - (g + s) / ((g + s) + (s + b))).abs() < 1e-12, "{row}");
    let expected = serde_json::to_value(GsbStats::new(5, 4, 3)).unwrap();
    assert_eq!(row["superiority"], expected["superiority"]);
    assert_eq!(row["win_rate"], expected["win_rate"]);
    // Without a task filter: one row per task.
    let (_, all) = service.get_as("/v1/stats/gsb", &service.admin_key).await;
    assert_eq!(all["rows"].as_array().unwrap().len(), 2, "{all}");
    let (status, err) = service
        .get_as("/v1/stats/gsb?aspect=speed", &service.admin_key)
        .await;
    assert_eq!((status, error_code(&err).as_str()), (422, "invalid_field"));

    // Only admins register volunteers (experts or not); statistics are theirs too.
    let mallory = json!({"name": "mallory", "role": "volunteer", "expert": true});
    let (status, err) = service.post_json("/v1/keys", None, mallory.clone()).await;
    assert_eq!((status, error_code(&err).as_str()), (403, "forbidden"));
    let (status, _) = service.get("/v1/stats/gsb").await;
    assert_eq!(status, 403);
    // Expert ratings: experts only, aesthetics optional for erase only, re-rating replaces.
    let expert = service.volunteer("eve", true).await;
    let amateur = service.volunteer("al", false).await;
    let erase_job = id(&pairs[0], "candidate_job");
    let inpaint_job = id(&inpaint, "candidate_job");
    let rate = |job: &str| format!("/v1/jobs/{job}/ratings");
    let (status, err) = service
        .post_json(
            &rate(&erase_job),
            Some(&amateur),
            json!({"coherence": 4, "structure": 4}),
        )
        .await;
    assert_eq!((status, error_code(&err).as_str()), (403, "forbidden"));
    let (status, r) = service
        .post_json(
            &rate(&erase_job),
            Some(&expert),
            json!({"coherence": 2, "structure": 3}),
        )
        .await;
    assert_eq!(status, 201, "{r}");
    let (status, r) = service
        .post_json(
            &rate(&erase_job),
            Some(&expert),
            json!({"coherence": 4, "structure": 5}),
        )
        .await;
    assert_eq!((status, r["replaced"].as_bool()), (200, Some(true)), "{r}");
    for (body, code) in [
        (json!({"coherence": 4, "structure": 4}), "missing_field"),
        (
            json!({"coherence": 6, "structure": 4, "aesthetics": 3}),
            "invalid_field",
        ),
        (
            json!({"coherence": 4, "structure": 4, "aesthetics": 3, "output": 2}),
            "invalid_field",
        ),
    ] {
        let (status, err) = service
            .post_json(&rate(&inpaint_job), Some(&expert), body.clone())
            .await;
        assert_eq!(
            (status, error_code(&err).as_str()),
            (422, code),
            "{body}: {err}"
        );
    }
    let (status, _) = service
        .post_json(
            &rate(&inpaint_job),
            Some(&expert),
            json!({"coherence": 3, "structure": 2, "aesthetics": 5}),
        )
        .await;
    assert_eq!(status, 201);
    let (_, means) = service
        .get_as("/v1/stats/ratings", &service.admin_key)
        .await;
    let find = |task: &str| {
        means["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["model"] == CANDIDATE)
            .map(|r| r["tasks"][task].clone())
            .unwrap()
    };
    let erase = find("erase");
    assert_eq!(
        (erase["coherence"].as_f64(), erase["structure"].as_f64()),
        (Some(4.0), Some(5.0))
    );
    assert_eq!(erase["aesthetics"], Value::Null);
    assert_eq!(find("inpaint")["aesthetics"].as_f64(), Some(5.0));

    // The export: one line per voted comparison, counts and majority preference.
    let response = service
        .admin
        .get(service.url("/v1/preferences/export"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let text = response.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{text}");
    for (line, verdicts) in lines
        .iter()
        .zip((0..3).map(|i| pattern.iter().map(|p| p[i]).collect::<Vec<_>>()))
    {
        let count = |v: &str| verdicts.iter().filter(|x| **x == v).count() as u64;
        assert_eq!(
            (
                line["good"].as_u64(),
                line["same"].as_u64(),
                line["bad"].as_u64()
            ),
            (Some(count("good")), Some(count("same")), Some(count("bad"))),
            "{line}"
        );
        let tie = count("good") == count("bad");
        assert_eq!(line["tie"], tie, "{line}");
        if !tie {
            let winner = if count("good") > count("bad") {
                "candidate"
            } else {
                "baseline"
            };
            assert_eq!(line["preferred"], line[winner], "{line}");
        }
        // The keys resolve in storage: training reads images without the API.
        for key in [
            &line["candidate"]["key"],
            &line["baseline"]["key"],
            &line["input_key"],
        ] {
            let bytes = service
                .backends
                .storage
                .get(key.as_str().unwrap())
                .await
                .unwrap();
            image::load_from_memory(&bytes).unwrap();
        }
    }
    assert_eq!(
        lines[3]["preferred"]["model"], CANDIDATE,
        "inpaint: 4 good votes"
    );
    service.finish().await;
}
