//! `GET /metrics` in the Prometheus text format, through the `metrics` facade and its
//! Prometheus exporter: what the workers count as runs end and webhooks come, and gauges of
//! each link's outbox and reviews read from the state store at each scrape.

use std::sync::OnceLock;

use fieldsync_app::workspace::{LinkStatus, RunReport, RunStatus};
use jiff::Timestamp;
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// The buckets of the run duration histogram, in seconds: from a quick incremental run to a
/// full run of a million members.
const DURATION_BUCKETS: [f64; 12] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0];

/// The process's recorder, installed by the first service of the process.
static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The recorder's handle, installing it the first time; `None` when another recorder was
/// installed first (then `/metrics` says so).
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full("fieldsync_run_duration_seconds".into()),
                    &DURATION_BUCKETS,
                )
                .ok()?;
            builder.install_recorder().ok()
        })
        .as_ref()
}

/// A run of `link` ended with `report`.
pub fn run_ended(link: &str, report: &RunReport) {
    let link = link.to_string();
    counter!("fieldsync_runs_total", "link" => link.clone(), "status" => report.status.as_str()).increment(1);
    histogram!("fieldsync_run_duration_seconds", "link" => link.clone())
        .record(report.elapsed_ms as f64 / 1000.0);
    for (side, stats) in [("left", &report.stats.left), ("right", &report.stats.right)] {
        counter!("fieldsync_records_read_total", "link" => link.clone(), "side" => side)
            .increment(stats.read);
    }
    let stats = &report.stats;
    for (outcome, count) in [
        ("done", stats.writes_done),
        ("retrying", stats.writes_retrying),
        ("dead", stats.writes_dead),
        ("moved", stats.writes_moved),
    ] {
        counter!("fieldsync_writes_total", "link" => link.clone(), "outcome" => outcome).increment(count);
    }
    gauge!("fieldsync_link_reachable", "link" => link.clone()).set(1.0);
    if matches!(report.status, RunStatus::Done | RunStatus::Partial) {
        gauge!("fieldsync_last_success_timestamp_seconds", "link" => link)
            .set(Timestamp::now().as_second() as f64);
    }
}

/// A run of `link` could not run (a side unreachable, its lease held).
pub fn run_failed(link: &str) {
    counter!("fieldsync_runs_total", "link" => link.to_string(), "status" => "failed").increment(1);
    gauge!("fieldsync_link_reachable", "link" => link.to_string()).set(0.0);
}

/// A webhook for `side` of `link` was answered with `code`.
pub fn webhook(link: &str, side: &str, code: u16) {
    counter!("fieldsync_webhooks_total", "link" => link.to_string(), "side" => side.to_string(), "code" => code.to_string())
        .increment(1);
}

/// The gauges read from the state store: each link's outbox and reviews.
pub fn link_gauges(statuses: &[LinkStatus]) {
    for status in statuses {
        let link = status.link.clone();
        gauge!("fieldsync_outbox_pending", "link" => link.clone()).set(status.outbox.pending as f64);
        gauge!("fieldsync_outbox_dead", "link" => link.clone()).set(status.outbox.dead as f64);
        gauge!("fieldsync_reviews_open", "link" => link).set(status.reviews.open as f64);
    }
}
