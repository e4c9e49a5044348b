//! Prometheus metrics, one registry per app (so tests do not share counts).

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::state::AppState;

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub jobs_submitted: IntCounterVec,
    pub jobs_finished: IntCounterVec,
    pub job_duration: HistogramVec,
    pub job_queue_time: HistogramVec,
    pub worker_step_time: HistogramVec,
    pub queue_depth: IntGaugeVec,
    pub workers: IntGaugeVec,
}

fn seconds_buckets() -> Vec<f64> {
    vec![
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        120.0, 300.0, 600.0, 1800.0,
    ]
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        fn register<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
            // Names are fixed and distinct, so registering cannot fail.
            let _ = r.register(Box::new(c.clone()));
            c
        }
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(name, help).buckets(seconds_buckets()),
                    labels,
                )
                .expect("valid metric"),
            )
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            register(
                &registry,
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        Self {
            requests: counter(
                "byteedit_http_requests_total",
                "HTTP requests by method, route and status",
                &["method", "route", "status"],
            ),
            request_duration: histogram(
                "byteedit_http_request_duration_seconds",
                "HTTP request handling time",
                &["method", "route"],
            ),
            jobs_submitted: counter(
                "byteedit_jobs_submitted_total",
                "Jobs accepted, by model and task",
                &["model", "task"],
            ),
            jobs_finished: counter(
                "byteedit_jobs_finished_total",
                "Jobs ended, by model, task and final status",
                &["model", "task", "status"],
            ),
            job_duration: histogram(
                "byteedit_job_duration_seconds",
                "Submission to result of succeeded jobs, by model and task",
                &["model", "task"],
            ),
            job_queue_time: histogram(
                "byteedit_job_queue_seconds",
                "Time succeeded jobs waited in the queue",
                &["model"],
            ),
            worker_step_time: histogram(
                "byteedit_worker_step_seconds",
                "Mean denoising step time of each succeeded job",
                &["model"],
            ),
            queue_depth: gauge(
                "byteedit_queue_depth",
                "Jobs queued or running, by model and status",
                &["model", "status"],
            ),
            workers: gauge(
                "byteedit_workers",
                "Live workers serving each model",
                &["model"],
            ),
            registry,
        }
    }

    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Writing to a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8_lossy(&buffer).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts and times every request by its route template (not its raw path,
/// which would make a label per job id).
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let m = &state.metrics;
    m.request_duration
        .with_label_values(&[&method, &route])
        .observe(started.elapsed().as_secs_f64());
    m.requests
        .with_label_values(&[&method, &route, response.status().as_str()])
        .inc();
    response
}
