//! `fieldsync serve` as a process on 127.0.0.1 between two SQLite member tables: its schedule
//! runs the link, its API answers by role, a link whose side goes away is probed until it comes
//! back, a missed schedule runs once after downtime, and SIGTERM in mid-run exits 0 with
//! nothing lost.
#![cfg(unix)]

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use serde_json::{Value, json};

use crate::support::{add_new_members, count_once_created, exec, fieldsync, outbox_entries, query, setup};

/// The tokens of the tests' API: one that may act, one that may only read.
pub(crate) const OPERATE_TOKEN: &str = "ops-9f2c1e7a5b3d4c60";
pub(crate) const READ_TOKEN: &str = "viewer-4b8d2a6e1f3c5a79";

/// How long a test waits for the service to do what it must before failing.
pub(crate) const PATIENCE: Duration = Duration::from_secs(90);

/// The `[server]` table of the tests: a port the system chooses, both tokens.
const SERVER: &str = r#"
[server]
listen = "127.0.0.1:0"
max_concurrent_runs = 2

[[server.tokens]]
name = "ops"
token = "${FIELDSYNC_OPS_TOKEN}"
role = "operate"

[[server.tokens]]
name = "viewer"
token = "${FIELDSYNC_VIEW_TOKEN}"
role = "read"
"#;

/// A `fieldsync serve` process in `dir`, killed when dropped if it is still running.
pub(crate) struct Service {
    child: Child,
    pub(crate) base: String,
    http: reqwest::Client,
    stderr: std::sync::Mutex<std::sync::mpsc::Receiver<String>>,
    log: std::sync::Mutex<String>,
    /// The secrets it was given, none of which may reach its log.
    secrets: Vec<String>,
}

impl Service {
    /// Starts the service on the configuration in `dir` (with `SERVER` appended once) and
    /// waits for it to say where it listens.
    pub(crate) fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[])
    }

    /// `start`, with the further secrets `secrets` in the environment.
    pub(crate) fn start_with(dir: &Path, secrets: &[(&str, &str)]) -> Self {
        let config = dir.join("fieldsync.toml");
        let text = std::fs::read_to_string(&config).unwrap();
        if !text.contains("[server]") {
            std::fs::write(&config, text + SERVER).unwrap();
        }
        let binary = secrets.iter().fold(fieldsync(dir), |binary, (name, value)| binary.secret(name, value));
        let mut child = binary
            .secret("FIELDSYNC_OPS_TOKEN", OPERATE_TOKEN)
            .secret("FIELDSYNC_VIEW_TOKEN", READ_TOKEN)
            .command(&["serve"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the fieldsync binary runs");
        let (lines, stderr) = std::sync::mpsc::channel();
        let err = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in err.lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let (said, listening) = std::sync::mpsc::channel();
        let out = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                let _ = said.send(line);
            }
        });
        let line = listening.recv_timeout(PATIENCE).expect("the service says where it listens");
        let base = line.strip_prefix("fieldsync serve: listening on ").expect(&line).to_string();
        // reqwest is built without a TLS provider of its own; the service speaks plain HTTP.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut secrets: Vec<String> = secrets.iter().map(|(_, value)| value.to_string()).collect();
        secrets.extend([OPERATE_TOKEN.to_string(), READ_TOKEN.to_string()]);
        Service {
            child,
            base,
            http: reqwest::Client::new(),
            stderr: stderr.into(),
            log: String::new().into(),
            secrets,
        }
    }

    /// What the service logged so far.
    pub(crate) fn log(&self) -> String {
        let mut log = self.log.lock().unwrap();
        while let Ok(line) = self.stderr.lock().unwrap().try_recv() {
            log.push_str(&line);
            log.push('\n');
        }
        log.clone()
    }

    /// A request to `path` with `token` (none when empty): its status and JSON body (`null`
    /// when it has none).
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if !token.is_empty() {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.timeout(PATIENCE).send().await.expect("the service answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// `GET /metrics` (no token), parsed as the Prometheus text format.
    async fn metrics(&self) -> prometheus_parse::Scrape {
        let (status, text) = self.get("/metrics", "").await;
        assert_eq!(status, 200, "{text}");
        let text = text.as_str().expect("text").to_string();
        prometheus_parse::Scrape::parse(text.lines().map(|line| Ok(line.to_string())))
            .expect("the text format")
    }

    pub(crate) async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, token, None).await
    }

    pub(crate) async fn post(&self, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, token, body).await
    }

    /// Sends SIGTERM and waits for the exit (failing past `PATIENCE`); checks that no token
    /// reached the log.
    pub(crate) fn stop(mut self) -> ExitStatus {
        let sent = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(sent.success());
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(started.elapsed() < PATIENCE, "the service did not stop after SIGTERM:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        };
        std::thread::sleep(Duration::from_millis(100));
        let log = self.log();
        for secret in &self.secrets {
            assert!(!log.contains(secret.as_str()), "a secret reached the log:\n{log}");
        }
        status
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `done` holds, failing with `what` and the service's log past `PATIENCE`.
pub(crate) async fn wait_for(service: &Service, what: &str, mut done: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !done().await {
        assert!(started.elapsed() < PATIENCE, "{what} did not happen; the log:\n{}", service.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of the sample `metric` with `labels` in `scrape` (0 when there is none); a
/// histogram's count of observations.
fn sample(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|sample| sample.metric == metric)
        .find(|sample| labels.iter().all(|(name, value)| sample.labels.get(name) == Some(*value)))
        .map_or(0.0, |sample| match &sample.value {
            prometheus_parse::Value::Counter(value)
            | prometheus_parse::Value::Gauge(value)
            | prometheus_parse::Value::Untyped(value) => *value,
            prometheus_parse::Value::Histogram(buckets) => buckets.last().map_or(0.0, |bucket| bucket.count),
            prometheus_parse::Value::Summary(_) => 0.0,
        })
}

fn count(path: &Path, sql: &str) -> i64 {
    Connection::open(path).unwrap().query_row(sql, [], |row| row.get(0)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_runs_the_link_and_the_api_answers_by_role() {
    let (dir, left, right) = setup(
        "conflicts = { strategy = \"last_write_wins\", grace = \"5s\", tie = \"register\" }\nevery = \"1s\"",
        12,
    );
    // The first sync (every member the same on both sides) comes before the edits.
    assert_eq!(fieldsync(dir.path()).run("first sync", &["run", "--json"]).code(), Some(0));
    exec(
        &left,
        "UPDATE members SET email = 'anna.de.vries@club.nl', updated_at = datetime('now') WHERE id = 'M003'",
    );
    exec(&left, "UPDATE members SET email = 'no-at-sign', updated_at = datetime('now') WHERE id = 'M004'");
    let service = Service::start(dir.path());

    // The schedule runs the link without anyone asking.
    wait_for(&service, "the scheduled run", async || {
        Connection::open(&right)
            .unwrap()
            .query_row("SELECT mail FROM people WHERE number = 'M003'", [], |row| row.get::<_, String>(0))
            .unwrap()
            == "anna.de.vries@club.nl"
    })
    .await;

    assert_eq!(service.get("/healthz", "").await, (200, json!("ok\n")));
    assert_eq!(service.get("/readyz", "").await, (200, json!({ "ready": true })));

    // No token, a wrong one: 401, and nothing of what the API holds.
    let (status, body) = service.get("/api/links", "").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body, json!({ "error": "a bearer token is needed" }));
    assert_eq!(service.get("/api/links", "ops-9f2c1e7a5b3d4c6X").await.0, 401);

    let (status, links) = service.get("/api/links", READ_TOKEN).await;
    assert_eq!(status, 200, "{links}");
    assert_eq!(links[0]["link"], "members");
    assert_eq!(links[0]["schedule"], "every 1s");
    assert!(links[0]["service"]["next_run"].is_string(), "{links:#}");

    // A token that may only read may not act.
    let (status, body) = service.post("/api/links/members/runs", READ_TOKEN, None).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = service.post("/api/links/members/runs?full=true", OPERATE_TOKEN, None).await;
    assert_eq!((status, body), (202, json!({ "queued": "members", "full": true })));
    assert_eq!(service.post("/api/links/nothing/runs", OPERATE_TOKEN, None).await.0, 404);

    // A plan writes nothing and records no run, and is an action all the same.
    assert_eq!(service.post("/api/links/members/plan", READ_TOKEN, None).await.0, 403);
    let (status, plan) = service.post("/api/links/members/plan", OPERATE_TOKEN, None).await;
    assert_eq!(status, 200, "{plan}");
    let report = &plan["reports"][0];
    assert_eq!(
        (&report["link"], &report["dry_run"], &report["run_id"]),
        (&json!("members"), &json!(true), &Value::Null)
    );
    assert_eq!(service.post("/api/links/nothing/plan", OPERATE_TOKEN, None).await.0, 404);

    let (status, runs) = service.get("/api/runs?limit=2", READ_TOKEN).await;
    assert_eq!(status, 200, "{runs}");
    assert_eq!(runs["items"].as_array().unwrap().len(), 2, "{runs:#}");
    let run_id = runs["items"][0]["id"].as_i64().unwrap();
    let (status, run) = service.get(&format!("/api/runs/{run_id}"), READ_TOKEN).await;
    assert_eq!((status, run["run"]["id"].as_i64()), (200, Some(run_id)), "{run:#}");
    assert_eq!(service.get("/api/runs/999999", READ_TOKEN).await.0, 404);

    // The address the right side refused is a dead entry; an operator drops it.
    let dead_entry = async || service.get("/api/outbox?status=dead", READ_TOKEN).await.1;
    let mut dead = dead_entry().await;
    let started = Instant::now();
    while dead["items"].as_array().is_none_or(Vec::is_empty) {
        assert!(started.elapsed() < PATIENCE, "no dead entry: {dead:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        dead = dead_entry().await;
    }
    assert!(dead["items"][0]["last_error"].as_str().unwrap().contains("CHECK constraint failed"), "{dead:#}");
    let id = dead["items"][0]["id"].as_i64().unwrap();
    let before = service.metrics().await;
    let members = [("link", "members")];
    assert_eq!(sample(&before, "fieldsync_outbox_dead", &members), 1.0);
    assert!(sample(&before, "fieldsync_runs_total", &[("link", "members"), ("status", "partial")]) >= 1.0);
    assert!(sample(&before, "fieldsync_writes_total", &[("link", "members"), ("outcome", "dead")]) >= 1.0);
    assert!(
        sample(&before, "fieldsync_records_read_total", &[("link", "members"), ("side", "left")]) >= 12.0
    );
    assert_eq!(sample(&before, "fieldsync_link_reachable", &members), 1.0);
    assert!(sample(&before, "fieldsync_last_success_timestamp_seconds", &members) > 1.7e9);
    let runs_before = sample(&before, "fieldsync_run_duration_seconds", &members);
    assert!(runs_before >= 1.0, "the durations are observed");
    assert_eq!(service.post(&format!("/api/outbox/{id}/drop"), READ_TOKEN, None).await.0, 403);
    let (status, body) = service.post(&format!("/api/outbox/{id}/drop"), OPERATE_TOKEN, None).await;
    assert_eq!((status, body), (200, json!({ "id": id, "now": "dropped" })));
    assert_eq!(service.post(&format!("/api/outbox/{id}/drop"), OPERATE_TOKEN, None).await.0, 404);
    assert_eq!(service.get("/api/outbox?status=deadish", READ_TOKEN).await.0, 400);

    // The counters move: the runs of every second go on.
    wait_for(&service, "more runs counted", async || {
        sample(&service.metrics().await, "fieldsync_run_duration_seconds", &members) > runs_before
    })
    .await;

    let (status, history) = service.get("/api/history?limit=1", READ_TOKEN).await;
    assert_eq!((status, history.as_array().map(Vec::len)), (200, Some(1)), "{history:#}");
    let csv = service
        .http
        .get(format!("{}/api/history?format=csv&limit=3", service.base))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = csv.text().await.unwrap();
    let mut rows = csv.lines();
    assert!(rows.next().unwrap().starts_with("run,link,mode,status,started_at"), "{csv}");
    assert_eq!(rows.count(), 3, "{csv}");
    assert_eq!(service.get("/api/history?format=xml", READ_TOKEN).await.0, 400);

    assert!(
        service.log().contains("token=ops method=POST path=/api/outbox/"),
        "acts are logged by token name"
    );
    let status = service.stop();
    assert_eq!(status.code(), Some(0), "SIGTERM ends the service with 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_side_that_goes_away_is_probed_and_synced_when_it_comes_back() {
    let (dir, left, right) = setup("conflicts = { strategy = \"review\" }\nevery = \"1h\"", 6);
    // The first run starts at once: this link never ran.
    let service = Service::start(dir.path());
    wait_for(&service, "the first run", async || {
        count_once_created(&dir.path().join("state.db"), "SELECT count(*) FROM runs WHERE status = 'done'")
            >= 1
    })
    .await;

    // The club's file goes (a disk unmounted); the next run cannot read it.
    let away = dir.path().join("right.db.away");
    std::fs::rename(&right, &away).unwrap();
    std::fs::write(&right, b"").unwrap();
    exec(&left, "UPDATE members SET mobile = '+31612345678', updated_at = datetime('now') WHERE id = 'M002'");
    assert_eq!(service.post("/api/links/members/runs", OPERATE_TOKEN, None).await.0, 202);
    let mut waiting = Value::Null;
    wait_for(&service, "the link waiting for its side", async || {
        waiting = service.get("/api/links", READ_TOKEN).await.1;
        waiting[0]["service"]["waiting_since"].is_string()
    })
    .await;
    assert!(waiting[0]["service"]["last_error"].as_str().unwrap().contains("website"), "{waiting:#}");
    assert_eq!(waiting[0]["service"]["waiting_for"], "website", "{waiting:#}");

    // Back: the probes find it, well before the hourly schedule.
    std::fs::rename(&away, &right).unwrap();
    wait_for(&service, "the sync after the side came back", async || {
        query(&right, "SELECT phone FROM people WHERE number = 'M002'") == "+31612345678"
    })
    .await;
    // The run that synced it ends a moment after its writes land: then the link waits no more.
    let links = no_longer_waiting(&service).await;
    assert!(links[0]["service"]["waiting_since"].is_null(), "{links:#}");
    assert_eq!(service.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_missed_during_downtime_runs_once_at_start() {
    let (dir, left, right) = setup("conflicts = { strategy = \"review\" }\nschedule = \"0 3 * * *\"", 6);
    let first = fieldsync(dir.path()).run("run", &["run", "--json"]);
    assert_eq!(first.code(), Some(0));
    // The last run was two days ago: two nightly slots passed while nothing served.
    let state = dir.path().join("state.db");
    exec(
        &state,
        "UPDATE runs SET started_ms = started_ms - 2 * 86400000, finished_ms = finished_ms - 2 * 86400000",
    );
    exec(
        &left,
        "UPDATE members SET email = 'sem.bakker@club.nl', updated_at = datetime('now') WHERE id = 'M001'",
    );

    let service = Service::start(dir.path());
    wait_for(&service, "the missed run", async || count(&state, "SELECT count(*) FROM runs") >= 2).await;
    wait_for(&service, "the missed run's end", async || {
        count(&state, "SELECT count(*) FROM runs WHERE status = 'running'") == 0
    })
    .await;
    assert_eq!(query(&right, "SELECT mail FROM people WHERE number = 'M001'"), "sem.bakker@club.nl");
    let (_, links) = service.get("/api/links", READ_TOKEN).await;
    let next: jiff::Timestamp = links[0]["service"]["next_run"].as_str().unwrap().parse().unwrap();
    assert!(next > jiff::Timestamp::now(), "the next run is at the next slot: {links:#}");
    assert_eq!(service.stop().code(), Some(0));
    assert_eq!(
        count(&state, "SELECT count(*) FROM runs"),
        2,
        "one run for the slots missed, not one per slot"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_in_mid_run_exits_0_and_the_next_start_completes_the_sync() {
    const MEMBERS: usize = 20_000;
    let (dir, left, right) = setup("conflicts = { strategy = \"review\" }\nevery = \"1h\"", 0);
    add_new_members(&left, MEMBERS);
    let state = dir.path().join("state.db");
    let service = Service::start(dir.path());
    wait_for(&service, "a committed plan", async || outbox_entries(&state) > 0).await;
    assert_eq!(service.stop().code(), Some(0), "SIGTERM in mid-run exits 0");
    let unfinished = count(&state, "SELECT count(*) FROM runs WHERE status = 'cancelled'");
    let done = count(&state, "SELECT count(*) FROM runs WHERE status = 'done'");
    assert_eq!(unfinished + done, 1, "the run stopped cleanly, recorded as cancelled (or it had just ended)");

    let service = Service::start(dir.path());
    wait_for(&service, "the sync completed after the restart", async || {
        count(&right, "SELECT count(*) FROM people") == MEMBERS as i64
    })
    .await;
    assert_eq!(service.stop().code(), Some(0));
    assert_eq!(
        count(&right, "SELECT count(DISTINCT number) FROM people"),
        MEMBERS as i64,
        "nothing duplicated"
    );
}

/// The Standard Webhooks secret of the club website in the webhook tests.
const WEBSITE_SECRET: &str = "whsec_c2VjcmV0LW9mLXRoZS1jbHViLXdlYnNpdGUtMjAyNg==";
/// The HMAC secret of the federation register in the webhook tests.
const REGISTER_SECRET: &str = "register-hook-secret-7f3a9c";

/// A link whose two systems send webhooks: the website by Standard Webhooks (the records it
/// names at `/data/id`, bodies up to 2 KiB), the register by a GitHub-style header, at most 100 a
/// minute; an hourly schedule, so that only the webhooks make runs within a test.
fn webhook_setup() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let (dir, left, right) = setup("conflicts = { strategy = \"review\" }\nevery = \"1h\"", 8);
    assert_eq!(fieldsync(dir.path()).run("first sync", &["run", "--json"]).code(), Some(0));
    let config = dir.path().join("fieldsync.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text
        .replacen(
            "[connectors.register]\n",
            "[connectors.register]\nwebhook = { secret = \"${REGISTER_HOOK_SECRET}\", signature = { header = \
             \"X-Hub-Signature-256\", prefix = \"sha256=\", encoding = \"hex\" }, rate = \"100/1h\" }\n",
            1,
        )
        .replacen(
            "[connectors.website]\n",
            "[connectors.website]\nwebhook = { secret = \"${WEBSITE_HOOK_SECRET}\", signature = \"standard\", \
             tolerance = \"5m\", records = \"/data/id\", max_body = 2048 }\n",
            1,
        );
    std::fs::write(&config, text).unwrap();
    (dir, left, right)
}

/// A Standard Webhooks delivery of `body` with `id`, signed at `at` (Unix seconds) with `secret`.
fn standard_headers(secret: &str, id: &str, at: i64, body: &str) -> Vec<(&'static str, String)> {
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD.decode(secret.trim_start_matches("whsec_")).unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    let tag = ring::hmac::sign(&key, format!("{id}.{at}.{body}").as_bytes());
    let signature = format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(tag.as_ref()));
    vec![
        ("webhook-id", id.to_string()),
        ("webhook-timestamp", at.to_string()),
        ("webhook-signature", signature),
    ]
}

/// `X-Hub-Signature-256: sha256=<hex>` of `body` with `secret`.
pub(crate) fn hub_headers(secret: &str, body: &str) -> Vec<(&'static str, String)> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, body.as_bytes());
    let hex: String = tag.as_ref().iter().map(|byte| format!("{byte:02x}")).collect();
    vec![("x-hub-signature-256", format!("sha256={hex}"))]
}

impl Service {
    /// Posts a webhook with `headers` and `body` to `path`: its status and its `Retry-After`.
    pub(crate) async fn hook(
        &self,
        path: &str,
        headers: &[(&'static str, String)],
        body: &str,
    ) -> (u16, Option<String>) {
        let mut request = self.http.post(format!("{}{path}", self.base)).body(body.to_string());
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.timeout(PATIENCE).send().await.expect("the service answers");
        let retry_after =
            response.headers().get("retry-after").map(|value| value.to_str().unwrap().to_string());
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        if status == 401 {
            assert_eq!(text, r#"{"error":"unauthorised"}"#, "a refusal says nothing of why");
        }
        (status, retry_after)
    }
}

fn start_with_hooks(dir: &Path) -> Service {
    Service::start_with(
        dir,
        &[("WEBSITE_HOOK_SECRET", WEBSITE_SECRET), ("REGISTER_HOOK_SECRET", REGISTER_SECRET)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_webhook_syncs_its_member_and_forged_stale_replayed_or_large_ones_change_nothing() {
    let (dir, left, right) = webhook_setup();
    let state = dir.path().join("state.db");
    let service = start_with_hooks(dir.path());
    let now = jiff::Timestamp::now().as_second();

    // The club's website changes two members and tells of one.
    exec(
        &right,
        "UPDATE people SET mail = 'daan.visser@club.nl', modified = datetime('now') WHERE number = 'M005'",
    );
    exec(
        &right,
        "UPDATE people SET mail = 'told.later@club.nl', modified = datetime('now') WHERE number = 'M007'",
    );
    let body = r#"{"type": "member.updated", "data": {"id": "M005"}}"#;
    let signed = standard_headers(WEBSITE_SECRET, "msg_2Nq1", now, body);
    assert_eq!(service.hook("/hooks/members/website", &signed, body).await, (202, None));
    wait_for(&service, "the webhook's sync", async || {
        query(&left, "SELECT email FROM members WHERE id = 'M005'") == "daan.visser@club.nl"
    })
    .await;
    // A targeted run: it read the member named, on the website by id and in the register by
    // its key, and nothing else.
    wait_for(&service, "the targeted run's end", async || {
        count(&state, "SELECT count(*) FROM runs WHERE status = 'running'") == 0
    })
    .await;
    let (mode, read) = Connection::open(&state)
        .unwrap()
        .query_row(
            "SELECT mode, json_extract(stats, '$.right.read') FROM runs ORDER BY id DESC LIMIT 1",
            [],
            |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)),
        )
        .unwrap();
    assert_eq!((mode.as_str(), read), ("targeted", 1));
    assert_eq!(query(&left, "SELECT email FROM members WHERE id = 'M007'"), "member7@club.nl", "not named");
    let hooks = count(&state, "SELECT count(*) FROM webhooks");
    let runs = count(&state, "SELECT count(*) FROM runs");

    // Forged, stale, replayed, oversized: 401, 401, 401, 413, and nothing kept or run.
    exec(
        &right,
        "UPDATE people SET mail = 'forged@evil.example', modified = datetime('now') WHERE number = 'M006'",
    );
    let forged = r#"{"type": "member.updated", "data": {"id": "M006"}}"#;
    let mut wrong = standard_headers(WEBSITE_SECRET, "msg_2Nq2", now, body);
    assert_eq!(
        service.hook("/hooks/members/website", &wrong, forged).await.0,
        401,
        "signed for another body"
    );
    wrong = standard_headers("whsec_b3RoZXItc2VjcmV0LW9mLXNvbWVvbmUtZWxzZQ==", "msg_2Nq3", now, forged);
    assert_eq!(service.hook("/hooks/members/website", &wrong, forged).await.0, 401, "another secret");
    assert_eq!(service.hook("/hooks/members/website", &[], forged).await.0, 401, "unsigned");
    let stale = standard_headers(WEBSITE_SECRET, "msg_2Nq4", now - 301, forged);
    assert_eq!(
        service.hook("/hooks/members/website", &stale, forged).await.0,
        401,
        "older than the tolerance"
    );
    assert_eq!(service.hook("/hooks/members/website", &signed, body).await.0, 401, "a replay");
    let large = format!(r#"{{"data": {{"id": "M006"}}, "padding": "{}"}}"#, "x".repeat(4096));
    let signed_large = standard_headers(WEBSITE_SECRET, "msg_2Nq5", now, &large);
    assert_eq!(service.hook("/hooks/members/website", &signed_large, &large).await.0, 413);
    assert_eq!(service.hook("/hooks/members/nowhere", &signed, body).await.0, 404);
    assert_eq!(count(&state, "SELECT count(*) FROM webhooks"), hooks, "nothing kept");
    assert_eq!(count(&state, "SELECT count(*) FROM runs"), runs, "nothing run");
    assert_eq!(query(&left, "SELECT email FROM members WHERE id = 'M006'"), "member6@club.nl");

    // The register signs GitHub's way and may send 100 an hour (one more each 36 s, so that a
    // slow machine sends the burst before one is back): the 101st waits.
    for number in 0..100 {
        let body = format!(r#"{{"member": "M00{}", "seq": {number}}}"#, number % 8);
        let (status, _) =
            service.hook("/hooks/members/register", &hub_headers(REGISTER_SECRET, &body), &body).await;
        assert_eq!(status, 202, "webhook {number}");
    }
    let body = r#"{"member": "M001", "seq": 100}"#;
    let (status, retry_after) =
        service.hook("/hooks/members/register", &hub_headers(REGISTER_SECRET, body), body).await;
    assert_eq!(status, 429);
    assert!(retry_after.unwrap().parse::<u64>().unwrap() >= 1);
    // The register's webhooks name no member: an incremental run reads both sides, and with
    // them the change no webhook named (the targeted run left the cursors where they were).
    wait_for(&service, "the incremental run after the register's webhooks", async || {
        query(&left, "SELECT email FROM members WHERE id = 'M007'") == "told.later@club.nl"
    })
    .await;
    let scrape = service.metrics().await;
    let hooks = |side: &str, code: &str| {
        sample(&scrape, "fieldsync_webhooks_total", &[("link", "members"), ("side", side), ("code", code)])
    };
    assert_eq!((hooks("website", "202"), hooks("website", "401"), hooks("website", "413")), (1.0, 5.0, 1.0));
    assert_eq!((hooks("register", "202"), hooks("register", "429")), (100.0, 1.0));
    assert_eq!(service.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_accepted_just_before_a_kill_is_synced_by_the_next_start() {
    let (dir, left, right) = webhook_setup();
    let service = start_with_hooks(dir.path());
    exec(&right, "UPDATE people SET phone = '0612345678', modified = datetime('now') WHERE number = 'M002'");
    let body = r#"{"data": {"id": "M002"}}"#;
    let signed = standard_headers(WEBSITE_SECRET, "msg_kill", jiff::Timestamp::now().as_second(), body);
    assert_eq!(service.hook("/hooks/members/website", &signed, body).await, (202, None));
    drop(service); // SIGKILL at once.

    let service = start_with_hooks(dir.path());
    wait_for(&service, "the kept webhook's sync", async || {
        query(&left, "SELECT mobile FROM members WHERE id = 'M002'") == "+31612345678"
    })
    .await;
    assert_eq!(service.stop().code(), Some(0));
}

/// Debian's aiosmtpd on a free loopback port, keeping every message it receives in a maildir;
/// stopped when dropped.
struct MailServer {
    child: Child,
    port: u16,
    maildir: std::path::PathBuf,
}

impl MailServer {
    /// Starts it in `dir`, or says loudly why it cannot (and fails in CI).
    fn start(dir: &Path) -> Option<Self> {
        let python = Path::new("/usr/bin/python3");
        let present = python.exists()
            && Command::new(python)
                .args(["-c", "import aiosmtpd"])
                .status()
                .is_ok_and(|status| status.success());
        if !present {
            fieldsync_connector::testkit::skip(
                "an SMTP server",
                "Debian's aiosmtpd is not installed",
                "apt-get install python3-aiosmtpd",
            );
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let maildir = dir.join("maildir");
        let child = Command::new(python)
            .args([
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &format!("127.0.0.1:{port}"),
                "-c",
                "aiosmtpd.handlers.Mailbox",
            ])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("aiosmtpd starts");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < PATIENCE, "aiosmtpd does not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(MailServer { child, port, maildir })
    }

    /// The messages received so far, as their raw text.
    fn messages(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.maildir.join("new")) else { return Vec::new() };
        entries.map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap()).collect()
    }
}

impl Drop for MailServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_is_mailed_after_a_run_that_changed_something_and_a_mail_server_down_fails_no_run() {
    let (dir, left, right) = setup("conflicts = { strategy = \"review\" }\nevery = \"1h\"", 6);
    let Some(mail) = MailServer::start(dir.path()) else { return };
    assert_eq!(fieldsync(dir.path()).run("first sync", &["run", "--json"]).code(), Some(0));
    let config = dir.path().join("fieldsync.toml");
    let reports = format!(
        "\n[reports]\nsmtp = \"smtp://127.0.0.1:{}?tls=none\"\nfrom = \"fieldsync@club.example\"\n\
         to = [\"ledenadministratie@club.example\", \"secretaris@club.example\"]\nwhen = \"changes\"\n\
         history_url = \"https://sync.club.example\"\n",
        mail.port
    );
    std::fs::write(&config, std::fs::read_to_string(&config).unwrap() + &reports).unwrap();
    let service = Service::start(dir.path());

    // A change on each side, and one of them a conflict held for review.
    exec(
        &left,
        "UPDATE members SET email = 'fleur.smit@club.nl', updated_at = datetime('now') WHERE id = 'M001'",
    );
    exec(&left, "UPDATE members SET email = 'sem@club.nl', updated_at = datetime('now') WHERE id = 'M004'");
    exec(
        &right,
        "UPDATE people SET mail = 'sem.devries@club.nl', modified = datetime('now') WHERE number = 'M004'",
    );
    assert_eq!(service.post("/api/links/members/runs", OPERATE_TOKEN, None).await.0, 202);
    let mut received = Vec::new();
    wait_for(&service, "the report", async || {
        received = mail.messages();
        !received.is_empty()
    })
    .await;
    // Headers folded onto the next line unfolded; the parts' quoted-printable soft breaks and
    // `=3D` undone.
    let raw = received[0].replace("\r\n", "\n");
    let (head, body) = raw.split_once("\n\n").expect("headers and a body");
    let message = &format!("{}\n\n{}", head.replace("\n ", " "), body.replace("=\n", "").replace("=3D", "="));
    assert!(
        message
            .contains("Subject: fieldsync: members done - 1 written, 0 settled, 1 held for review, 0 dead"),
        "{message}"
    );
    assert!(message.contains("To: ledenadministratie@club.example, secretaris@club.example"), "{message}");
    assert!(message.contains("Content-Type: multipart/alternative"), "{message}");
    assert!(message.contains("M001 email: \"fleur.smit@club.nl\" written to website"), "{message}");
    assert!(message.contains("M004 email: left \"sem@club.nl\", right \"sem.devries@club.nl\""), "{message}");
    assert!(message.contains("https://sync.club.example/api/runs/"), "{message}");
    assert!(message.contains("<h3>Held for review (1)</h3>"), "{message}");

    // The mail server goes down: the next run is done all the same.
    drop(mail);
    exec(
        &left,
        "UPDATE members SET email = 'noor.bakker@club.nl', updated_at = datetime('now') WHERE id = 'M002'",
    );
    assert_eq!(service.post("/api/links/members/runs", OPERATE_TOKEN, None).await.0, 202);
    wait_for(&service, "the run without a mail server", async || {
        query(&right, "SELECT mail FROM people WHERE number = 'M002'") == "noor.bakker@club.nl"
    })
    .await;
    // The value is written before the run records its end.
    wait_for(&service, "the run recorded as done", async || {
        service.get("/api/links", READ_TOKEN).await.1[0]["last_run"]["status"] == "done"
    })
    .await;
    wait_for(&service, "the failed sending logged", async || service.log().contains("sending the report"))
        .await;
    assert_eq!(service.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reads_the_configuration_again_and_keeps_the_running_one_when_the_new_is_invalid() {
    const AUDITOR_TOKEN: &str = "auditor-5d1e8b3f9a7c2e64";
    let (dir, left, right) = setup("conflicts = { strategy = \"review\" }\nevery = \"1h\"", 6);
    // The first sync before the service, so that no first sync (which holds what differs for
    // review) runs while the test edits a member.
    assert_eq!(fieldsync(dir.path()).run("first sync", &["run", "--json"]).code(), Some(0));
    let config = dir.path().join("fieldsync.toml");
    let service = Service::start_with(dir.path(), &[("FIELDSYNC_AUDIT_TOKEN", AUDITOR_TOKEN)]);
    assert_eq!(service.get("/api/links", AUDITOR_TOKEN).await.0, 401, "not a token yet");
    let hangup = || {
        let sent = Command::new("kill").args(["-HUP", &service.child.id().to_string()]).status().unwrap();
        assert!(sent.success());
    };

    // A token and a shorter schedule added: taken on SIGHUP, on the same address.
    let running = std::fs::read_to_string(&config).unwrap();
    let added = running.replacen("every = \"1h\"", "every = \"1s\"", 1)
        + "\n[[server.tokens]]\nname = \"auditor\"\ntoken = \"${FIELDSYNC_AUDIT_TOKEN}\"\nrole = \"read\"\n";
    std::fs::write(&config, &added).unwrap();
    hangup();
    wait_for(&service, "the reload", async || service.get("/api/links", AUDITOR_TOKEN).await.0 == 200).await;
    let (_, links) = service.get("/api/links", AUDITOR_TOKEN).await;
    assert_eq!(links[0]["schedule"], "every 1s");
    exec(
        &left,
        "UPDATE members SET email = 'lotte.jansen@club.nl', updated_at = datetime('now') WHERE id = 'M003'",
    );
    wait_for(&service, "a run on the new schedule", async || {
        query(&right, "SELECT mail FROM people WHERE number = 'M003'") == "lotte.jansen@club.nl"
    })
    .await;

    // A mistake in the file: logged, and the running configuration kept.
    std::fs::write(&config, added.replacen("every = \"1s\"", "every = \"soon\"", 1)).unwrap();
    hangup();
    wait_for(&service, "the refused reload", async || service.log().contains("the running one is kept"))
        .await;
    assert!(service.log().contains("every: "), "the log says what is wrong:\n{}", service.log());
    assert_eq!(service.get("/api/links", AUDITOR_TOKEN).await.0, 200, "still the reloaded configuration");
    assert_eq!(service.stop().code(), Some(0));
}

/// `fieldsync serve` between a club's SQLite table and a real Django REST Framework site: its
/// first run brings the players to the club, and a signed webhook naming one player by the
/// site's id (as a signal handler in the site would send it) is a targeted run that looks the
/// player up over the API and leaves a change no webhook named to the next run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_from_a_real_django_site_syncs_the_player_it_names() {
    use fieldsync_connector::testkit::django::{DjangoOptions, DjangoServer};
    use fieldsync_test_support::members::{link_toml, member_fields_toml};

    const SITE_SECRET: &str = "whsec_ZGphbmdvLXNpdGUtaG9vay1zZWNyZXQtMjAyNg==";
    let Some(site) = DjangoServer::start(&DjangoOptions { players: 40, ..DjangoOptions::default() }) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let club = dir.path().join("club.db");
    exec(
        &club,
        "CREATE TABLE members (federation_id TEXT PRIMARY KEY, first_name TEXT, last_name TEXT, email TEXT, \
         mobile TEXT, updated_at TEXT NOT NULL)",
    );
    let names = ["first_name", "last_name", "email", "mobile"];
    let paths: Vec<String> = names.iter().map(|name| format!("/{name}")).collect();
    let fields: Vec<_> = names.iter().zip(&paths).map(|(name, path)| (*name, *name, path.as_str())).collect();
    let config = format!(
        r#"{start}{backend}webhook = {{ secret = "${{SITE_HOOK_SECRET}}", signature = "standard", records = "/player/id" }}

{link}every = "1h"
{fields}"#,
        start = crate::support::club_config_start("members", "federation_id"),
        backend = crate::support::django_backend_toml(&site),
        link = link_toml("players", "club", "backend", ("federation_id", "/federation_id"), "club"),
        fields = member_fields_toml("players", &fields),
    );
    std::fs::write(dir.path().join("fieldsync.toml"), config).unwrap();
    let service =
        Service::start_with(dir.path(), &[("DRF_TOKEN", site.token()), ("SITE_HOOK_SECRET", SITE_SECRET)]);
    // The link never ran: its first run starts at once, and brings every player to the club.
    wait_for(&service, "the first run", async || {
        count_once_created(&dir.path().join("state.db"), "SELECT count(*) FROM runs WHERE status = 'done'")
            >= 1
    })
    .await;
    assert_eq!(query(&club, "SELECT count(*) || '' FROM members"), "40");

    // Two players change in the site; it tells of one.
    site.python(
        "for number, email in ((7, 'mila.de.graaf@example.nl'), (8, 'told.later@example.nl')):\n    \
         player = Player.objects.get(federation_id=f'FED{number:05d}')\n    \
         player.email = email\n    player.save()",
    );
    let id = site.query("SELECT id FROM club_player WHERE federation_id = 'FED00007'")[0]["id"].clone();
    let body = json!({"event": "player.updated", "player": {"id": id}}).to_string();
    let signed = standard_headers(SITE_SECRET, "msg_dj7", jiff::Timestamp::now().as_second(), &body);
    assert_eq!(service.hook("/hooks/players/backend", &signed, &body).await, (202, None));
    wait_for(&service, "the player named synced to the club", async || {
        query(&club, "SELECT email FROM members WHERE federation_id = 'FED00007'")
            == "mila.de.graaf@example.nl"
    })
    .await;
    let state = dir.path().join("state.db");
    wait_for(&service, "the targeted run's end", async || {
        count(&state, "SELECT count(*) FROM runs WHERE status = 'running'") == 0
    })
    .await;
    assert_eq!(
        query(
            &state,
            "SELECT mode || ' ' || json_extract(stats, '$.right.read') FROM runs ORDER BY id DESC LIMIT 1"
        ),
        "targeted 1"
    );
    assert_ne!(
        query(&club, "SELECT email FROM members WHERE federation_id = 'FED00008'"),
        "told.later@example.nl"
    );

    // A run asked for reads the site's changes since the first run, the one no webhook named too.
    assert_eq!(service.post("/api/links/players/runs", OPERATE_TOKEN, None).await.0, 202);
    wait_for(&service, "the change no webhook named", async || {
        query(&club, "SELECT email FROM members WHERE federation_id = 'FED00008'") == "told.later@example.nl"
    })
    .await;
    assert_eq!(service.stop().code(), Some(0));
}

/// The way to a cloud that is down until `connect`: its port refuses connections, then
/// forwards each one to the cloud's.
struct Uplink {
    port: u16,
}

impl Uplink {
    fn down() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        Self { port }
    }

    /// The connection is back: connections to the uplink's port reach `cloud`'s.
    fn connect(&self, cloud: u16) {
        let listener =
            std::net::TcpListener::bind(("127.0.0.1", self.port)).expect("the uplink's port is free");
        std::thread::spawn(move || {
            for laptop in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", cloud)) else { continue };
                let pipe = |mut from: std::net::TcpStream, mut to: std::net::TcpStream| {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                };
                pipe(laptop.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, laptop);
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_offline_client_catches_up_with_its_cloud_when_the_connection_returns() {
    use fieldsync_connector::testkit::couchdb::CouchServer;
    const PASSWORD: &str = "clubhuis-Wifi-2026";
    let Some(cloud) = CouchServer::start() else { return };
    assert_eq!(cloud.request("PUT", "/_config/admins/clubhouse", Some(&json!(PASSWORD))).status, 200);
    let auth = Some(("clubhouse", PASSWORD));
    assert_eq!(cloud.request_as("PUT", "/clubhouse", None, auth).status, 201);
    // Contacts made on the club's other devices, already in the cloud.
    let made = json!({"docs": [
        {"contact_id": "5f0c7e2a-9b1d-4c3e-8a6f-2d4b1e9c7a30", "name": "Marloes Brouwer", "email": "marloes.brouwer@example.nl", "phone": "+31612345678"},
        {"contact_id": "a81e4f09-3c2b-4d6a-9e7f-1b0c5d8e2f44", "name": "Jeroen van Dijk", "email": "", "phone": "+31687654321"},
        {"contact_id": "c3d9b1e7-2a4f-4b8c-b6d0-7e1f3a5c9d12", "name": "Süleyman Özdemir", "email": "s.ozdemir@example.com", "phone": null},
    ]});
    assert_eq!(cloud.request_as("POST", "/clubhouse/_bulk_docs", Some(&made), auth).status, 201);

    // The laptop, offline, where two contacts were made at the clubhouse.
    let dir = tempfile::tempdir().unwrap();
    let laptop = dir.path().join("clubapp.db");
    exec(
        &laptop,
        "CREATE TABLE contacts (contact_id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT, phone TEXT, updated_at TEXT NOT NULL);
         INSERT INTO contacts VALUES
             ('0b6f2d48-7e3a-4c91-a5d2-9f8e1c4b6a07', 'Ingrid Hoekstra', 'ingrid@hoekstra.example', '0651234567', strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
             ('e47a1c95-6d2b-4f80-8c3e-5a9b7d1f0e26', 'Kees de Jong', NULL, '+31 6 23456789', strftime('%Y-%m-%dT%H:%M:%SZ', 'now'));",
    );
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = &readme[readme.find("**An offline client.**").expect("the README's offline client")..];
    let block = section.split("```toml\n").nth(1).expect("its configuration");
    let block = &block[..block.find("```").unwrap()];
    assert!(block.contains("https://cloud.clubapp.example/v1"), "the example's address changed");
    let uplink = Uplink::down();
    let config =
        block.replace("https://cloud.clubapp.example/v1", &format!("http://127.0.0.1:{}", uplink.port));
    std::fs::write(dir.path().join("fieldsync.toml"), format!("state = \"sqlite://state.db\"\n\n{config}"))
        .unwrap();

    let service = Service::start_with(dir.path(), &[("CLOUD_PASSWORD", PASSWORD)]);
    let mut links = Value::Null;
    wait_for(&service, "the link waiting for the cloud", async || {
        links = service.get("/api/links", READ_TOKEN).await.1;
        links[0]["service"]["waiting_for"] == "cloud"
    })
    .await;
    assert_eq!(
        count_once_created(&laptop, "SELECT count(*) FROM contacts"),
        2,
        "nothing changed while offline"
    );

    uplink.connect(cloud.port());
    let cloud_contacts = || {
        let answer = cloud.request_as("GET", "/clubhouse/_all_docs?include_docs=true", None, auth);
        let rows = answer.body["rows"].as_array().cloned().unwrap_or_default();
        rows.into_iter().map(|row| row["doc"].clone()).collect::<Vec<Value>>()
    };
    wait_for(&service, "both sides caught up", async || {
        count_once_created(&laptop, "SELECT count(*) FROM contacts") == 5 && cloud_contacts().len() == 5
    })
    .await;
    let contact = |id: &str| {
        cloud_contacts()
            .into_iter()
            .find(|doc| doc["contact_id"] == id)
            .unwrap_or_else(|| panic!("{id} in the cloud"))
    };
    let ingrid = contact("0b6f2d48-7e3a-4c91-a5d2-9f8e1c4b6a07");
    assert_eq!(
        (&ingrid["name"], &ingrid["email"]),
        (&json!("Ingrid Hoekstra"), &json!("ingrid@hoekstra.example"))
    );
    assert_eq!(ingrid["phone"], json!("+31651234567"), "{ingrid}");
    let kees = contact("e47a1c95-6d2b-4f80-8c3e-5a9b7d1f0e26");
    assert_eq!((&kees["name"], &kees["phone"]), (&json!("Kees de Jong"), &json!("+31623456789")), "{kees}");
    assert_eq!(
        query(
            &laptop,
            "SELECT name || '|' || coalesce(email, '') FROM contacts WHERE contact_id = 'c3d9b1e7-2a4f-4b8c-b6d0-7e1f3a5c9d12'"
        ),
        "Süleyman Özdemir|s.ozdemir@example.com"
    );
    assert_eq!(
        query(
            &laptop,
            "SELECT phone FROM contacts WHERE contact_id = '5f0c7e2a-9b1d-4c3e-8a6f-2d4b1e9c7a30'"
        ),
        "+31612345678"
    );
    no_longer_waiting(&service).await;
    assert_eq!(service.stop().code(), Some(0));

    // The cloud's feed lists fieldsync's own writes; the cursor moved past them, so the next run
    // reads none of them back.
    let next = fieldsync(dir.path())
        .secret("CLOUD_PASSWORD", PASSWORD)
        .secret("FIELDSYNC_OPS_TOKEN", OPERATE_TOKEN)
        .secret("FIELDSYNC_VIEW_TOKEN", READ_TOKEN)
        .run_ending("the next run", &[], 0);
    let stats = &next.json[0]["stats"];
    assert_eq!(stats["right"]["read"], json!(0), "the cloud's rows read back: {stats}");
    assert_eq!(stats["writes_done"], json!(0), "{stats}");
}

/// The links' state once the first link waits for no side, as the run that reached it sets it
/// when it ends.
async fn no_longer_waiting(service: &Service) -> Value {
    let mut links = Value::Null;
    wait_for(service, "the link waiting for no side", async || {
        links = service.get("/api/links", READ_TOKEN).await.1;
        links[0]["service"]["waiting_for"].is_null()
    })
    .await;
    links
}
