//! The rest connector against the fixture server: the conformance suite in each API style,
//! then paging, field paths, safe writes, auth, pacing and faults.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::time::Duration;

use crate::fixture::{self, FixtureServer, Style};
use fieldsync_connector::testkit::{self, Fixture, RejectedValue, TestPaths, TestRecord, read_all};
use fieldsync_connector::{Connector, ConnectorError, FieldWrite, Lookup, ReadRequest, Write};
use fieldsync_connector_rest::{
    Auth, FieldPath, KeyParam, Modified, Order, Paging, Preset, RestConfig, RestConnector, Secret, Since,
    TimeFormat,
};
use fieldsync_model::RecordId;
use serde_json::{Value, json};

/// How a style's records hold the three fields of a `TestRecord`, and how its connector is
/// configured.
#[derive(Clone, Copy)]
enum Api {
    WordPress,
    Drf,
    LinkHeader,
    Cursor,
    Offset,
}

impl Api {
    fn style(self) -> Style {
        match self {
            Api::WordPress => Style::WordPress,
            Api::Drf => Style::Drf,
            Api::LinkHeader => Style::LinkHeader,
            Api::Cursor => Style::Cursor,
            Api::Offset => Style::Offset,
        }
    }

    fn paths(self) -> TestPaths {
        match self {
            Api::WordPress => TestPaths {
                key: "/meta/knvb_id".into(),
                name: "/meta/first_name".into(),
                email: "/meta/contact_info[type=email]/value".into(),
            },
            Api::Cursor => {
                TestPaths { key: "/ext".into(), name: "/fields/name".into(), email: "/fields/email".into() }
            }
            Api::Drf | Api::LinkHeader | Api::Offset => TestPaths::default(),
        }
    }

    /// A record of the style holding `record`, for `FixtureServer::insert`.
    fn record(self, record: &TestRecord) -> Value {
        match self {
            Api::WordPress => json!({
                "title": record.name,
                "knvb_id": record.key,
                "first_name": record.name,
                "contact_info": [{"type": "phone", "value": "010-1234567"}, {"type": "email", "value": record.email}],
            }),
            Api::Cursor => json!({"ext": record.key, "fields": {"name": record.name, "email": record.email}}),
            Api::Drf | Api::LinkHeader | Api::Offset => {
                json!({"key": record.key, "name": record.name, "email": record.email})
            }
        }
    }

    /// The connector's configuration for a server of this style.
    fn config(self, server: &FixtureServer) -> RestConfig {
        let mut config = RestConfig::new(&server.list_url());
        let paths = self.paths();
        config.create =
            Some(fieldsync_connector_rest::Create { unique: Some(paths.key.clone()), ..Default::default() });
        match self {
            Api::WordPress => {
                config.preset = Some(Preset::Wordpress);
                let create = config.create.get_or_insert_with(Default::default);
                create.templates.insert("/title".into(), "{/meta/first_name}".into());
            }
            Api::Drf => {
                config.preset = Some(Preset::Drf);
                config.etag = Some(true);
                // The fixture answers no `OPTIONS`, which `empty = "schema"` reads.
                config.empty = Some(fieldsync_connector_rest::Empty::EmptyString);
                config.empty_paths.insert("/number".into(), fieldsync_connector_rest::Empty::Null);
                config.query.insert("ordering".into(), "updated_at".into());
            }
            Api::LinkHeader => {
                config.paging = Some(Paging::Link);
                config.page_size_param = Some("per_page".into());
                config.id = Some("/id".into());
                config.modified = Some(Modified {
                    path: "/modified".into(),
                    format: TimeFormat::Text,
                    zone: Some("Europe/Amsterdam".into()),
                });
                config.since = Some(Since { param: "since".into(), format: TimeFormat::Text, zone: None });
            }
            Api::Cursor => {
                config.paging =
                    Some(Paging::Cursor { pointer: "/meta/next_cursor".into(), param: "cursor".into() });
                limited_pages_of_updated_items(&mut config, "/data", "updated_since", TimeFormat::Unix);
                config.id = Some("/uuid".into());
            }
            Api::Offset => {
                config.paging = Some(Paging::Offset { param: "offset".into() });
                limited_pages_of_updated_items(&mut config, "/items", "changes_since", TimeFormat::Text);
                config.order = Some(Order::Modified);
            }
        }
        // Small pages, so that the suite's 250 records take several.
        config.page_size = Some(40);
        config
    }
}

/// Configures what the cursor and offset styles share: the page size in `limit`, the records
/// under `items`, each record's modification time at `/updated`, and the parameter `since` that
/// asks for the records changed since a time; both times in `format`.
fn limited_pages_of_updated_items(config: &mut RestConfig, items: &str, since: &str, format: TimeFormat) {
    config.page_size_param = Some("limit".into());
    config.items = Some(items.into());
    config.modified = Some(Modified { path: "/updated".into(), format, zone: None });
    config.since = Some(Since { param: since.into(), format, zone: None });
}

/// Fresh fixture servers for the conformance suite.
struct RestFixture {
    api: Api,
    server: Option<FixtureServer>,
    /// Fixture ids by link key.
    ids: HashMap<String, i64>,
}

impl RestFixture {
    fn new(api: Api) -> Self {
        Self { api, server: None, ids: HashMap::new() }
    }
}

impl Fixture for RestFixture {
    type Connector = RestConnector;

    async fn open(&mut self, records: &[TestRecord]) -> RestConnector {
        let server = FixtureServer::start(self.api.style()).await;
        self.ids.clear();
        for record in records {
            let id = server.insert(self.api.record(record));
            self.ids.insert(record.key.clone(), id);
        }
        server.advance_secs(1);
        server.reject_invalid_email(true);
        let connector = RestConnector::open(&self.api.config(&server)).expect("a valid configuration");
        self.server = Some(server);
        connector
    }

    async fn edit(&mut self, key: &str, path: &str, value: Value) {
        let server = self.server.as_ref().expect("an open fixture");
        let id = self.ids.get(key).copied().or_else(|| {
            let paths = FieldPath::parse(&self.api.paths().key).unwrap();
            server
                .records()
                .iter()
                .find(|record| paths.get(record) == json!(key))
                .and_then(|record| record["id"].as_i64())
        });
        let id = id.unwrap_or_else(|| panic!("no fixture record with key {key}"));
        server.advance_secs(1);
        let mut record = server.record(id).expect("the record");
        let path = FieldPath::parse(path).unwrap();
        path.set(&mut record, value).unwrap();
        // A person's edit of the unit the path is in: a `meta` key for WordPress, the
        // top-level member for the others.
        let unit = path.unit();
        let patch = match self.api {
            Api::WordPress => {
                let name = unit.as_str().trim_start_matches("/meta/").to_string();
                json!({ name: unit.get(&record) })
            }
            _ => {
                let top = unit.as_str().trim_start_matches('/').split('/').next().unwrap().to_string();
                json!({ top.clone(): record[top.as_str()].clone() })
            }
        };
        server.update(id, patch);
    }

    fn paths(&self) -> TestPaths {
        self.api.paths()
    }

    fn rejected_value(&self) -> Option<RejectedValue> {
        Some(RejectedValue { path: self.api.paths().email, value: json!("not-an-email") })
    }

    fn typed_paths(&self) -> Option<testkit::TypedPaths> {
        let at = |name: &str| match self.api {
            Api::WordPress => format!("/meta/{name}"),
            _ => format!("/{name}"),
        };
        Some(testkit::TypedPaths { number: at("number"), flag: at("flag"), list: at("list") })
    }
}

#[tokio::test]
async fn conforms_against_a_wordpress_api() {
    testkit::run_all(&mut RestFixture::new(Api::WordPress), &["sequence_read", "conditional_update"]).await;
}

#[tokio::test]
async fn conforms_against_a_django_rest_framework_api() {
    testkit::run_all(&mut RestFixture::new(Api::Drf), &["sequence_read"]).await;
}

#[tokio::test]
async fn conforms_against_an_api_paged_by_link_headers() {
    testkit::run_all(&mut RestFixture::new(Api::LinkHeader), &["sequence_read", "conditional_update"]).await;
}

#[tokio::test]
async fn conforms_against_an_api_paged_by_cursor() {
    testkit::run_all(&mut RestFixture::new(Api::Cursor), &["sequence_read", "conditional_update"]).await;
}

#[tokio::test]
async fn conforms_against_an_api_paged_by_offset_in_modification_order() {
    testkit::run_all(&mut RestFixture::new(Api::Offset), &["sequence_read", "conditional_update"]).await;
}

/// A WordPress fixture with `count` people, and a connector on it made from `config`.
async fn wordpress(count: usize, change: impl FnOnce(&mut RestConfig)) -> (FixtureServer, RestConnector) {
    let server = FixtureServer::start(Style::WordPress).await;
    for record in TestRecord::many(count) {
        server.insert(Api::WordPress.record(&record));
    }
    server.advance_secs(1);
    let mut config = Api::WordPress.config(&server);
    change(&mut config);
    let connector = RestConnector::open(&config).expect("a valid configuration");
    (server, connector)
}

/// A fixture server in `api`'s style holding one record, Ann (key `m1`): the server, her id
/// and the connector's configuration for the server.
async fn ann_on(api: Api) -> (FixtureServer, i64, RestConfig) {
    let server = FixtureServer::start(api.style()).await;
    let id = server.insert(json!({"key": "m1", "name": "Ann", "email": "ann@club.nl"}));
    let config = api.config(&server);
    (server, id, config)
}

/// Inserts the records numbered `numbers` (keys `m001`, `m002`, …, in the styles whose fields
/// are top-level; their name and e-mail do not matter), moving the server's clock
/// `secs_apart` seconds after each.
fn insert_members(server: &FixtureServer, numbers: RangeInclusive<usize>, secs_apart: i64) {
    for number in numbers {
        server.insert(json!({"key": format!("m{number:03}"), "name": "x", "email": "x@club.nl"}));
        server.advance_secs(secs_apart);
    }
}

/// An update of one field of record `id`, sent with the value it was read with (`expected`).
pub(crate) fn update_one(
    id: impl std::fmt::Display,
    path: &str,
    value: Value,
    expected: Option<Value>,
) -> Write {
    Write::Update {
        id: RecordId::new(id.to_string()),
        fields: vec![FieldWrite { path: path.into(), value, expected }],
    }
}

fn request(paths: &[&str]) -> ReadRequest {
    ReadRequest { paths: paths.iter().map(|path| (*path).to_string()).collect(), since: None }
}

#[tokio::test]
async fn an_array_element_is_written_by_sending_the_whole_array() {
    let (server, mut connector) = wordpress(3, |_| {}).await;
    let email = "/meta/contact_info[type=email]/value";
    let write = update_one("2", email, json!("new@club.nl"), Some(json!("member2@example.org")));
    server.clear_requests();
    let results = connector.apply(std::slice::from_ref(&write)).await.expect("sent");
    assert!(results[0].is_ok(), "{results:?}");
    let sent = server.requests().into_iter().find(|request| request.method == "POST").expect("an update");
    assert_eq!(
        sent.body,
        Some(json!({"meta": {"contact_info": [
            {"type": "phone", "value": "010-1234567"}, {"type": "email", "value": "new@club.nl"}
        ]}})),
        "the phone element is sent along, unchanged, and nothing else is"
    );
    assert_eq!(server.record(2).unwrap()["meta"]["contact_info"][0]["value"], json!("010-1234567"));
    assert_eq!(server.record(2).unwrap()["meta"]["contact_info"][1]["value"], json!("new@club.nl"));
}

#[tokio::test]
async fn a_write_that_changes_nothing_is_never_sent() {
    let (server, mut connector) = wordpress(3, |_| {}).await;
    let same = |path: &str, value: Value| FieldWrite {
        path: path.into(),
        value: value.clone(),
        expected: Some(value),
    };
    // The engine never plans these, but a connector that sent them would bump the record's
    // modified time, which comes back as a change.
    let unchanged =
        Write::Update { id: RecordId::new("1"), fields: vec![same("/meta/first_name", json!("Member 1"))] };
    // An array field holding the value already: found so on the record before writing.
    let held = update_one("2", "/meta/contact_info[type=email]/value", json!("member2@example.org"), None);
    let results = connector.apply(&[unchanged, held]).await.expect("applied");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(server.total_writes(), 0, "nothing was sent");
}

#[tokio::test]
async fn a_record_that_changed_after_it_was_read_is_not_overwritten() {
    // WordPress has no ETags: an update that has to read the record first (an array) finds
    // the change and refuses, instead of overwriting it.
    let (server, mut connector) = wordpress(2, |_| {}).await;
    server.update(1, json!({"contact_info": [{"type": "email", "value": "typed.by.hand@club.nl"}]}));
    let write = update_one(
        "1",
        "/meta/contact_info[type=email]/value",
        json!("from.the.engine@club.nl"),
        Some(json!("member1@example.org")),
    );
    let results = connector.apply(&[write]).await.expect("applied");
    assert!(matches!(results[0], Err(ConnectorError::TargetMoved { .. })), "{results:?}");
    assert_eq!(server.total_writes(), 0);

    // With ETags (Django REST Framework here), the API itself refuses a stale write.
    let (drf, id, config) = ann_on(Api::Drf).await;
    let mut connector = RestConnector::open(&config).unwrap();
    drf.change_after_read(id, json!({"name": "Annie"}));
    let write = update_one(id, "/name", json!("Anna"), Some(json!("Ann")));
    let results = connector.apply(&[write]).await.expect("applied");
    assert!(matches!(results[0], Err(ConnectorError::TargetMoved { .. })), "{results:?}");
    assert_eq!(drf.record(id).unwrap()["name"], json!("Annie"), "the person's edit stands");
    let refused = drf.requests().into_iter().find(|request| request.method == "PATCH").expect("a patch");
    assert!(refused.if_match.is_some() && refused.status == Some(412), "{refused:?}");
}

#[tokio::test]
async fn a_rejected_value_carries_the_apis_message_and_the_others_go_on() {
    let (server, mut connector) = wordpress(3, |_| {}).await;
    server.reject_invalid_email(true);
    let email =
        |id: &str, value: &str| update_one(id, "/meta/contact_info[type=email]/value", json!(value), None);
    let results = connector
        .apply(&[email("1", "fine@club.nl"), email("2", "not-an-email"), email("3", "also.fine@club.nl")])
        .await
        .expect("applied");
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    match &results[1] {
        Err(error @ ConnectorError::Rejected { message }) => {
            assert!(!error.is_retryable());
            assert!(message.contains("400") && message.contains("rest_invalid_param"), "{message}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(server.record(3).unwrap()["meta"]["contact_info"][1]["value"], json!("also.fine@club.nl"));
}

#[tokio::test]
async fn failures_that_pass_are_retried_and_retry_after_is_obeyed() {
    let (server, mut connector) = wordpress(90, |_| {}).await;
    let paths = ["/meta/knvb_id", "/meta/first_name"];
    server.fail_every(5, 500);
    assert_eq!(read_all(&mut connector, &request(&paths)).await.len(), 90, "every fifth request a 500");
    server.clear_faults();
    server.drop_next(2);
    assert_eq!(read_all(&mut connector, &request(&paths)).await.len(), 90, "dropped connections");
    server.clear_requests();
    server.too_many(2, 1);
    assert_eq!(read_all(&mut connector, &request(&paths)).await.len(), 90, "429 with Retry-After");
    let log = server.requests();
    assert_eq!(log.iter().filter(|request| request.status == Some(429)).count(), 2);
    // Each retry waited at least the second the server asked for.
    assert!(log[1].at.duration_since(log[0].at) >= Duration::from_secs(1));
    assert!(log[2].at.duration_since(log[1].at) >= Duration::from_secs(1));

    // When the failures outlast the retries, the error says so and may be retried later.
    server.fail_every(1, 503);
    let error = connector.read_page(&request(&paths), None).await.unwrap_err();
    assert!(error.is_retryable(), "{error}");
    assert!(error.to_string().contains("503"), "{error}");
}

#[tokio::test]
async fn a_malformed_answer_says_where_it_broke() {
    let (server, mut connector) = wordpress(5, |config| config.retries = Some(0)).await;
    server.malformed_next(1);
    let error = connector.read_page(&request(&["/meta/knvb_id"]), None).await.unwrap_err();
    assert!(matches!(error, ConnectorError::Malformed { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("line 1, column") && message.contains("/wp-json/wp/v2/people"), "{message}");
    assert_eq!(read_all(&mut connector, &request(&["/meta/knvb_id"])).await.len(), 5, "it passes");
}

#[tokio::test]
async fn every_kind_of_auth_is_sent_and_secrets_stay_out_of_errors() {
    let cases = [
        (
            fixture::Auth::Basic { user: "admin".into(), password: "app pass word".into() },
            Auth::Basic { user: "admin".into(), password: Secret::new("app pass word") },
        ),
        (fixture::Auth::Bearer("t0ken".into()), Auth::Bearer(Secret::new("t0ken"))),
        (
            fixture::Auth::Header { name: "Authorization".into(), value: "Token abc123".into() },
            Auth::Header { name: "Authorization".into(), value: Secret::new("Token abc123") },
        ),
        (
            fixture::Auth::Query { name: "api_key".into(), value: "k3y".into() },
            Auth::Query { name: "api_key".into(), value: Secret::new("k3y") },
        ),
    ];
    for (required, given) in cases {
        let (server, mut connector) = wordpress(3, |config| config.auth = Some(given.clone())).await;
        server.require_auth(required);
        assert_eq!(read_all(&mut connector, &request(&["/meta/knvb_id"])).await.len(), 3, "{given:?}");
        let wrong = match &given {
            Auth::Basic { user, .. } => {
                Auth::Basic { user: user.clone(), password: Secret::new("wrong-secret") }
            }
            Auth::Bearer(_) => Auth::Bearer(Secret::new("wrong-secret")),
            Auth::Header { name, .. } => {
                Auth::Header { name: name.clone(), value: Secret::new("wrong-secret") }
            }
            Auth::Query { name, .. } => {
                Auth::Query { name: name.clone(), value: Secret::new("wrong-secret") }
            }
        };
        let mut config = Api::WordPress.config(&server);
        config.auth = Some(wrong);
        let mut refused = RestConnector::open(&config).unwrap();
        let error = refused.read_page(&request(&["/meta/knvb_id"]), None).await.unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(error, ConnectorError::Misconfigured { .. }) && message.contains("401"),
            "{message}"
        );
        assert!(!message.contains("wrong-secret"), "a secret in an error: {message}");
    }
}

#[tokio::test]
async fn the_rate_limit_is_never_exceeded() {
    let (server, mut connector) = wordpress(30, |config| {
        config.rate = Some("8/s".into());
        config.page_size = Some(2);
    })
    .await;
    server.clear_requests();
    assert_eq!(read_all(&mut connector, &request(&["/meta/knvb_id"])).await.len(), 30);
    let ids: Vec<RecordId> = (1..=30).map(|id| RecordId::new(id.to_string())).collect();
    let found = connector.lookup(&["/meta/knvb_id".to_string()], &Lookup::Ids(ids)).await.unwrap();
    assert_eq!(found.len(), 30);
    let sent = server.requests().len();
    assert!(sent >= 45, "enough requests to test the limit: {sent}");
    let most = server.max_requests_in_window(Duration::from_secs(1));
    assert!(most <= 8, "{most} requests arrived within one second");
}

#[tokio::test]
async fn a_listing_in_modification_order_misses_nothing_while_records_change_under_it() {
    // An offset listing ordered by modification time: a record changed while it is paged
    // moves to the end, and every record after it moves up one place.
    let server = FixtureServer::start(Style::Offset).await;
    insert_members(&server, 1..=100, 1);
    let paths = ["/key"];
    for order in [Order::Any, Order::Modified] {
        let mut config = Api::Offset.config(&server);
        config.order = Some(order);
        config.page_size = Some(10);
        let mut connector = RestConnector::open(&config).unwrap();
        let request = ReadRequest {
            paths: paths.iter().map(|path| (*path).to_string()).collect(),
            since: Some(fieldsync_connector::Since::Time(
                jiff::Timestamp::from_second(1_767_261_600).unwrap(),
            )),
        };
        let mut keys = std::collections::BTreeSet::new();
        let mut token = None;
        let mut pages = 0;
        loop {
            let page = connector.read_page(&request, token.as_ref()).await.unwrap();
            keys.extend(page.records.iter().map(|record| record.values[0].as_str().unwrap().to_string()));
            pages += 1;
            if pages == 3 {
                // A person edits a record the listing already passed.
                server.advance_secs(1);
                server.update(5, json!({"name": "edited"}));
            }
            match page.next {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        match order {
            Order::Any => assert_eq!(keys.len(), 99, "paging by offset skips the record that moved up"),
            Order::Modified => assert_eq!(keys.len(), 100, "resuming after the last change seen skips none"),
        }
    }
}

#[tokio::test]
async fn records_sharing_one_second_are_each_listed_once() {
    // A bulk import: more records in one second than a page holds, with the listing resuming
    // after the last change seen.
    let server = FixtureServer::start(Style::Offset).await;
    insert_members(&server, 1..=55, 0);
    server.advance_secs(1);
    insert_members(&server, 56..=56, 0);
    let mut config = Api::Offset.config(&server);
    config.page_size = Some(10);
    let mut connector = RestConnector::open(&config).unwrap();
    let mut request = request(&["/key"]);
    request.since =
        Some(fieldsync_connector::Since::Time(jiff::Timestamp::from_second(1_767_261_600).unwrap()));
    let keys: Vec<String> = read_all(&mut connector, &request)
        .await
        .iter()
        .map(|record| record.values[0].as_str().unwrap().to_string())
        .collect();
    let unique: std::collections::BTreeSet<&String> = keys.iter().collect();
    assert_eq!(unique.len(), 56, "every record");
    assert_eq!(keys.len(), 56, "none twice: {keys:?}");
}

#[tokio::test]
async fn a_soft_delete_sets_its_field_and_such_records_are_listed_as_deleted() {
    let (server, mut connector) = wordpress(3, |config| {
        config.delete =
            Some(fieldsync_connector_rest::Delete::Soft { path: "/status".into(), value: json!("draft") });
    })
    .await;
    let results = connector.apply(&[Write::Delete { id: RecordId::new("2") }]).await.unwrap();
    assert!(results[0].is_ok(), "{results:?}");
    assert_eq!(server.record(2).unwrap()["status"], json!("draft"), "kept, marked");
    let read = read_all(&mut connector, &request(&["/meta/knvb_id"])).await;
    let deleted: Vec<&str> =
        read.iter().filter(|record| record.deleted).map(|record| record.id.as_str()).collect();
    assert_eq!(deleted, ["2"]);
}

#[tokio::test]
async fn a_slow_answer_times_out_and_is_retried_later() {
    let (server, mut connector) = wordpress(2, |config| {
        config.timeout = Some("200ms".into());
        config.retries = Some(0);
    })
    .await;
    server.slow(Duration::from_millis(600));
    let error = connector.read_page(&request(&["/meta/knvb_id"]), None).await.unwrap_err();
    assert!(error.is_retryable() && error.to_string().contains("timed out"), "{error}");
    server.slow(Duration::ZERO);
    assert_eq!(read_all(&mut connector, &request(&["/meta/knvb_id"])).await.len(), 2);
}

#[tokio::test]
async fn writes_are_paced_one_at_a_time() {
    let (server, mut connector) = wordpress(6, |config| {
        config.pace = Some("100ms..150ms".into());
        config.concurrency = Some(1);
    })
    .await;
    let writes: Vec<Write> =
        (1..=6).map(|id| update_one(id, "/meta/first_name", json!(format!("Paced {id}")), None)).collect();
    server.clear_requests();
    let results = connector.apply(&writes).await.unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let log = server.requests();
    assert_eq!(log.len(), 6);
    // With one request at a time, each write waits its pause after the one before it.
    for pair in log.windows(2) {
        assert!(pair[1].at.duration_since(pair[0].at) >= Duration::from_millis(100), "{pair:?}");
    }
    assert_eq!(server.record(6).unwrap()["meta"]["first_name"], json!("Paced 6"));
}

/// The JSON bodies of the requests with `method` the fixture received, in order.
fn bodies(server: &FixtureServer, method: &str) -> Vec<Value> {
    server
        .requests()
        .into_iter()
        .filter(|request| request.method == method)
        .map(|request| request.body.unwrap_or(Value::Null))
        .collect()
}

/// Whether any array in `value` holds a `null`, at any depth.
fn null_in_an_array(value: &Value) -> bool {
    match value {
        Value::Array(items) => items.iter().any(|item| item.is_null() || null_in_an_array(item)),
        Value::Object(members) => members.values().any(null_in_an_array),
        _ => false,
    }
}

#[tokio::test]
async fn regression_an_empty_value_in_an_array_is_left_out_of_a_create_and_removed_on_clear() {
    // Issue 12, point 6: `null` inside `contact_info` made WordPress answer 400 after it had
    // inserted the post.
    let (server, mut connector) = wordpress(2, |_| {}).await;
    let email = "/meta/contact_info[type=email]/value";
    let create = Write::Create {
        fields: vec![
            FieldWrite { path: "/meta/knvb_id".into(), value: json!("n0001"), expected: None },
            FieldWrite { path: "/meta/first_name".into(), value: json!("Noor"), expected: None },
            FieldWrite { path: email.into(), value: Value::Null, expected: None },
        ],
    };
    let clear = update_one("1", email, Value::Null, Some(json!("member1@example.org")));
    let results = connector.apply(&[create, clear]).await.expect("applied");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    for body in bodies(&server, "POST") {
        assert!(!null_in_an_array(&body), "a null was sent inside an array: {body}");
    }
    let created = server
        .records()
        .into_iter()
        .find(|record| record["meta"]["knvb_id"] == "n0001")
        .expect("the created post");
    let contact_info = &created["meta"]["contact_info"];
    assert!(
        contact_info.is_null() || *contact_info == json!([]),
        "the empty email is no element: {contact_info}"
    );
    assert_eq!(
        server.record(1).unwrap()["meta"]["contact_info"],
        json!([{"type": "phone", "value": "010-1234567"}]),
        "the cleared email's element is removed, the phone stays"
    );
    let found = connector
        .lookup(&[email.to_string()], &Lookup::Ids(vec![RecordId::new("1")]))
        .await
        .expect("a lookup");
    assert_eq!(found[0].values, vec![Value::Null]);
}

#[tokio::test]
async fn empty_values_are_written_as_the_connector_and_each_path_say() {
    let server = FixtureServer::start(Style::Offset).await;
    let id =
        server.insert(json!({"key": "m1", "name": "Ann", "email": "ann@club.nl", "birth": "1990-01-01"}));
    let mut config = Api::Offset.config(&server);
    config.empty = Some(fieldsync_connector_rest::Empty::EmptyString);
    config.empty_paths.insert("/birth".into(), fieldsync_connector_rest::Empty::Null);
    config.empty_paths.insert("/nickname".into(), fieldsync_connector_rest::Empty::Omit);
    let mut connector = RestConnector::open(&config).expect("a valid configuration");
    let field = |path: &str, value: Value| FieldWrite { path: path.into(), value, expected: None };
    let create = Write::Create {
        fields: vec![
            field("/key", json!("m2")),
            field("/name", Value::Null),
            field("/birth", json!("")),
            field("/nickname", Value::Null),
        ],
    };
    let clear = Write::Update {
        id: RecordId::new(id.to_string()),
        fields: vec![field("/email", Value::Null), field("/birth", json!("")), field("/nickname", json!(""))],
    };
    let results = connector.apply(&[create]).await.expect("applied");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let results = connector.apply(&[clear]).await.expect("applied");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(bodies(&server, "POST"), vec![json!({"key": "m2", "name": "", "birth": null})]);
    let updates: Vec<Value> = server
        .requests()
        .into_iter()
        .filter(|request| request.method == "PATCH")
        .filter_map(|request| request.body)
        .collect();
    assert_eq!(updates, vec![json!({"email": "", "birth": null, "nickname": null})]);
}

#[tokio::test]
async fn a_wordpress_post_moved_to_the_trash_is_read_as_deleted_and_deletes_stay_http() {
    // Issue 12, point 7: the listing of the `wordpress` preset left trashed posts out while a
    // look-up by id still found them, so a trashed member counted as present.
    let (server, mut connector) = wordpress(3, |config| {
        config.delete = Some(fieldsync_connector_rest::Delete::Http { query: Default::default() });
    })
    .await;
    server.advance_secs(1);
    server.update(2, json!({"status": "trash"}));
    let paths = ["/meta/knvb_id"];
    let listed = read_all(&mut connector, &request(&paths)).await;
    let deleted: Vec<&str> =
        listed.iter().filter(|record| record.deleted).map(|record| record.id.as_str()).collect();
    assert_eq!(deleted, vec!["2"], "the trashed post is listed as deleted");
    assert_eq!(listed.len(), 3);
    let found = connector
        .lookup(&["/meta/knvb_id".to_string()], &Lookup::Ids(vec![RecordId::new("2")]))
        .await
        .expect("a lookup");
    assert!(found[0].deleted, "a look-up of a trashed post finds it deleted");

    // A delete is an HTTP DELETE; without `force` WordPress trashes, and the post reads deleted.
    let results = connector.apply(&[Write::Delete { id: RecordId::new("3") }]).await.expect("applied");
    assert!(results[0].is_ok(), "{results:?}");
    let delete = server.requests().into_iter().find(|request| request.method == "DELETE").expect("a DELETE");
    assert!(!delete.path.contains("force"), "{}", delete.path);
    let listed = read_all(&mut connector, &request(&paths)).await;
    assert!(listed.iter().find(|record| record.id.as_str() == "3").is_some_and(|record| record.deleted));

    // The preset's default deletes for good.
    let (server, mut connector) = wordpress(1, |_| {}).await;
    connector.apply(&[Write::Delete { id: RecordId::new("1") }]).await.expect("applied")[0]
        .as_ref()
        .expect("deleted");
    let delete = server.requests().into_iter().find(|request| request.method == "DELETE").expect("a DELETE");
    assert!(delete.path.contains("force=true"), "{}", delete.path);
    assert!(server.records().is_empty());
}

#[tokio::test]
async fn creates_and_deletes_go_to_their_own_urls() {
    // Issue 12, point 8: a listing that is not the collection (a feed, a search) needs the
    // writes sent elsewhere.
    let (server, id, mut config) = ann_on(Api::Drf).await;
    config.base_url = format!("{}?search=", server.list_url());
    config.create_url = Some(format!("{}?via=create", server.list_url()));
    config.item_url = Some(format!("{}{{id}}/?via=item", server.list_url()));
    config.delete_url = Some(format!("{}{{id}}/?via=delete", server.list_url()));
    config.etag = Some(false);
    let mut connector = RestConnector::open(&config).expect("a valid configuration");
    let field =
        |path: &str, value: &str| FieldWrite { path: path.into(), value: json!(value), expected: None };
    let writes = [
        Write::Create {
            fields: vec![field("/key", "m2"), field("/name", "Bo"), field("/email", "bo@club.nl")],
        },
        Write::Update { id: RecordId::new(id.to_string()), fields: vec![field("/name", "Anna")] },
    ];
    let results = connector.apply(&writes).await.expect("applied");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let results =
        connector.apply(&[Write::Delete { id: RecordId::new(id.to_string()) }]).await.expect("applied");
    assert!(results[0].is_ok(), "{results:?}");
    let sent: Vec<(String, String)> = server
        .requests()
        .into_iter()
        .filter(|request| request.method != "GET")
        .map(|request| (request.method, request.path))
        .collect();
    let list = "/api/members/";
    assert_eq!(
        sent,
        vec![
            ("POST".to_string(), format!("{list}?via=create")),
            ("PATCH".to_string(), format!("{list}{id}/?via=item")),
            ("DELETE".to_string(), format!("{list}{id}/?via=delete")),
        ]
    );
    let bad = |change: fn(&mut RestConfig)| {
        let mut config = RestConfig::new("http://127.0.0.1/api/");
        change(&mut config);
        RestConnector::open(&config).unwrap_err().to_string()
    };
    assert!(bad(|config| config.delete_url = Some("http://127.0.0.1/x".into())).contains("`delete_url`"));
    assert!(bad(|config| config.create_url = Some("not a url".into())).contains("`create_url`"));
    assert!(bad(|config| config.stale = Some(vec![200])).contains("`stale`"));
}

#[tokio::test]
async fn a_status_configured_as_stale_is_target_moved() {
    let (server, id, mut config) = ann_on(Api::Offset).await;
    config.stale = Some(vec![409]);
    let mut connector = RestConnector::open(&config).expect("a valid configuration");
    server.fail_every(1, 409);
    let write = update_one(id, "/name", json!("Anna"), None);
    let results = connector.apply(std::slice::from_ref(&write)).await.expect("applied");
    assert!(matches!(results[0], Err(ConnectorError::TargetMoved { .. })), "{results:?}");
    config.stale = None;
    let mut connector = RestConnector::open(&config).expect("a valid configuration");
    let results = connector.apply(&[write]).await.expect("applied");
    assert!(
        matches!(results[0], Err(ConnectorError::Rejected { .. })),
        "409 is not stale unless configured: {results:?}"
    );
}

#[tokio::test]
async fn create_unique_without_a_key_parameter_reads_the_listing_once_per_run() {
    // Issue 12, point 8: the whole listing was read for every batch of creates.
    let (server, mut connector) = wordpress(90, |_| {}).await;
    let create = |number: usize| {
        let record = TestRecord::numbered(number);
        Write::Create {
            fields: vec![
                FieldWrite { path: "/meta/knvb_id".into(), value: json!(record.key), expected: None },
                FieldWrite { path: "/meta/first_name".into(), value: json!(record.name), expected: None },
            ],
        }
    };
    let listings = |server: &FixtureServer| {
        server
            .requests()
            .iter()
            .filter(|request| request.method == "GET" && !request.path.contains("/people/"))
            .count()
    };
    let results = connector.apply(&[create(101), create(102)]).await.expect("applied");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let once = listings(&server);
    assert!(once >= 3, "90 people at 40 a page are three pages, read {once}");
    let results = connector.apply(&[create(103), create(101), create(5)]).await.expect("applied");
    assert!(results[0].is_ok(), "{results:?}");
    assert!(
        matches!(results[1], Err(ConnectorError::AlreadyExists { .. })),
        "this run's own create: {results:?}"
    );
    assert!(matches!(results[2], Err(ConnectorError::AlreadyExists { .. })), "{results:?}");
    assert_eq!(listings(&server), once, "a second batch read the listing again");

    // The next run (a new listing) reads them afresh.
    connector.read_page(&request(&["/meta/knvb_id"]), None).await.expect("a page");
    let before = listings(&server);
    let results = connector.apply(&[create(104)]).await.expect("applied");
    assert!(results[0].is_ok(), "{results:?}");
    assert!(listings(&server) > before, "the next run's creates did not read the listing");
}

#[tokio::test]
async fn etag_claimed_against_an_api_that_sends_none_fails_check_and_writes() {
    // Issue 12: with `etag = true` against an API without ETags, `If-Match` silently
    // disappeared while conditional writes were still claimed.
    let (server, mut connector) = wordpress(2, |config| config.etag = Some(true)).await;
    let error = connector.check(&["/meta/knvb_id".to_string()]).await.expect_err("check must fail");
    assert!(error.to_string().contains("`etag` = true") && error.to_string().contains("no ETag"), "{error}");
    let write = update_one("1", "/meta/first_name", json!("Anna"), Some(json!("Member 1")));
    let results = connector.apply(&[write]).await.expect("applied");
    assert!(matches!(results[0], Err(ConnectorError::Misconfigured { .. })), "{results:?}");
    assert_eq!(server.total_writes(), 0, "nothing was written");

    // Without the claim the engine re-reads; with ETags the claim holds.
    let (_server, connector) = wordpress(1, |_| {}).await;
    assert!(!connector.capabilities().conditional_writes);
    let (_drf, _, config) = ann_on(Api::Drf).await;
    let mut connector = RestConnector::open(&config).unwrap();
    let probe = connector.check(&["/key".to_string()]).await.expect("check passes with ETags");
    assert!(probe.capabilities.conditional_writes);
}

#[tokio::test]
async fn a_key_parameter_repeated_per_value_asks_for_several_keys_a_request() {
    let drf = FixtureServer::start(Style::Drf).await;
    let ids: Vec<i64> = (1..=7)
        .map(|n| drf.insert(json!({"key": format!("m{n}"), "name": format!("Member {n}"), "email": format!("m{n}@club.nl")})))
        .collect();
    let mut config = Api::Drf.config(&drf);
    config.key_param =
        Some(KeyParam { name: "key".into(), path: None, join: Some("repeat".into()), max: Some(3) });
    let mut connector = RestConnector::open(&config).unwrap();
    let before = drf.requests().len();
    let asked: Vec<String> = ["m1", "m2", "m4", "m5", "m7", "nobody"].map(String::from).to_vec();
    let found = connector
        .lookup(&["/name".to_string()], &Lookup::Key { path: "/key".into(), values: asked })
        .await
        .expect("looked up");
    let mut got: Vec<(String, Value)> =
        found.iter().map(|record| (record.id.to_string(), record.values[0].clone())).collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected: Vec<(String, Value)> = [0, 1, 3, 4, 6]
        .iter()
        .map(|&index| (ids[index].to_string(), json!(format!("Member {}", index + 1))))
        .collect();
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, expected);
    let requests = drf.requests()[before..].to_vec();
    let mut asked_per_request: Vec<usize> =
        requests.iter().map(|request| request.path.matches("key=").count()).collect();
    asked_per_request.sort_unstable();
    assert_eq!(asked_per_request, vec![3, 3], "six keys, three a request: {requests:?}");
}
