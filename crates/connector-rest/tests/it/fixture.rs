//! A fixture HTTP server for the rest connector's tests: an in-process imitation of the JSON
//! APIs the connector reads and writes — WordPress, Django REST Framework, three generic
//! paging styles (a `Link` header, an opaque cursor, an offset) and an offline-first client's
//! cloud API of revisioned documents with a change feed — with a clock the test controls,
//! faults it can inject, authentication, and a log of every request.
//!
//! The server runs on its own thread, with its own single-threaded tokio runtime, so it
//! answers whatever runtime a test uses (a `#[tokio::test]` runs on one thread) and keeps
//! answering while the test awaits or blocks. [`FixtureServer::stop`] ends that runtime,
//! which closes every connection at once, like a server that is killed;
//! [`FixtureServer::restart`] listens on the same port again, with the records kept.
//!
//! Every page of a listing is computed afresh from the records as they are when it is asked
//! for, as real servers do: a record modified or inserted while a client pages through a
//! listing ordered by modification time moves, and offset-based pages shift under it.
//!
//! The clock has one-second resolution, like the APIs imitated: records written in the same
//! second carry the same modification time. It only moves when the test moves it.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::future::IntoFuture;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::serve::{IncomingStream, Listener};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use fieldsync_connector::loopback::{LoopbackServer, RequestJournal, Serve};
use fieldsync_connector::testkit::plausible_email;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The API a [`FixtureServer`] imitates: its paths, paging, record shape, times and errors.
///
/// Every style serves one collection (see [`FixtureServer::list_url`]) and its records at
/// `{list}/{id}` (`{list}{id}/` for [`Style::Drf`]). Local times are in `Europe/Amsterdam`
/// (UTC+1 in winter, UTC+2 in summer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// WordPress's REST API (`wp/v2`) for a custom post type whose `rest_base` is `people`,
    /// at `/wp-json/wp/v2/people`.
    ///
    /// A post is `{"id","date","date_gmt","modified","modified_gmt","slug","status","type",
    /// "link","title":{"raw","rendered"},"meta":{..}}`: `*_gmt` times are UTC without an
    /// offset (`2026-01-01T10:00:00`), `date` and `modified` the same instants in the site's
    /// zone (`Europe/Amsterdam`), also without an offset; `raw` is only shown with
    /// `context=edit`, and `rendered` escapes `&`, `<` and `>` as WordPress does.
    ///
    /// Listings take `page` (from 1), `per_page` (1 to 100, 10 by default), `orderby`
    /// (`date` by default, `id`, `modified`, `slug`, `title`; equal values are ordered by id
    /// in the same direction), `order` (`desc` by default, `asc`), `status` (`publish` by
    /// default, a comma-separated list, or `any` for all but `trash`), `context` (`view`,
    /// `embed`, `edit`), `include` and `exclude` (ids), and `modified_after`, `modified_before`, `after`
    /// and `before`, which are strict (WordPress compares with `>` and `<`). A time without
    /// an offset is read as UTC and compared with `modified_gmt` (or `date_gmt`). Answers
    /// carry `X-WP-Total`, `X-WP-TotalPages` and a `Link` header with `prev`/`next`; a page
    /// past the last is refused with `rest_post_invalid_page_number`.
    ///
    /// `POST {list}` creates (`status` defaults to `draft`, as in WordPress), `POST`, `PUT`
    /// or `PATCH {list}/{id}` updates: `title` (a string or `{"raw":..}`) and `status`
    /// replace, each `meta` key replaces its value whole (an array too), and a `null` meta
    /// value deletes the key. Other top-level keys are ignored, as WordPress ignores unknown
    /// parameters. Every write moves `modified_gmt` to the clock, even when nothing changed.
    /// `DELETE {list}/{id}` moves the post to the trash (a second time: 410
    /// `rest_already_trashed`); with `force=true` it is deleted and the answer is
    /// `{"deleted":true,"previous":{..}}`. A body whose content type is not JSON is read by
    /// WordPress as form fields, which this fixture does not decode: such a write changes
    /// nothing but the modification time.
    WordPress,
    /// Django REST Framework with page-number paging, at `/api/members/` (with the trailing
    /// slash Django's routers use: a `GET` without it is redirected with 301, other methods
    /// get 404).
    ///
    /// A record is `{"id":5,"updated_at":"2026-01-01T10:00:00Z",..}` with whatever fields the
    /// test gave it. Listings take `page` (from 1, or `last`), `page_size` (50 by default,
    /// at most 1000: more is cut to 1000, as DRF's `max_page_size` does), `ordering` (a
    /// comma-separated list of `id`, `updated_at`, each optionally with `-`; unknown fields
    /// are ignored, the default is `id`), `updated_after` (inclusive: `>=`) and
    /// `updated_before` (inclusive: `<=`), where a time without an offset is UTC. The answer
    /// is `{"count","next","previous","results"}`: `next` and `previous` are absolute URLs
    /// keeping the other query parameters (sorted by name, as DRF writes them), `null` at
    /// the ends; a page out of range is 404 `{"detail":"Invalid page."}`.
    ///
    /// A record read alone carries an `ETag`; `PATCH` replaces the top-level keys it is
    /// given, `PUT` replaces all fields, and both (and `DELETE`) refuse a stale `If-Match`
    /// with 412 `{"detail":"Precondition failed."}` (without `If-Match` they go ahead).
    /// `POST {list}` answers 201, `DELETE` 204 with an empty body. `id` and `updated_at` in a
    /// body are read-only and ignored. Every write moves `updated_at` to the clock (Django's
    /// `auto_now`), even when nothing changed. A server error is Django's HTML error page.
    Drf,
    /// A generic API paged with a `Link` header (RFC 8288), at `/v1/contacts`.
    ///
    /// A record is `{"id":"c-1","modified":"2026-01-01 11:00:00",..}`: the id is `c-` and the
    /// number [`FixtureServer::insert`] returned, and `modified` is a naive time in
    /// `Europe/Amsterdam` local time (the connector must be told that zone).
    ///
    /// Listings are JSON arrays ordered by `modified`, then id; they take `per_page` (30 by
    /// default, at most 100: more is cut to 100), `page` (from 1; past the end an empty
    /// array) and `since` (inclusive: `>=`; a time with an offset, or a naive local time).
    /// The `Link` header names `next` and `last` while more pages follow, and `prev` and
    /// `first` after the first page.
    LinkHeader,
    /// A generic API paged with an opaque cursor, at `/v2/people`.
    ///
    /// A record is `{"uuid":"5e1f0c2a-..","updated":1767261600,..}` (`updated` in Unix
    /// seconds). Listings take `limit` (1 to 100, 25 by default), `cursor` (the
    /// `next_cursor` of the previous page) and `updated_since` (Unix seconds, inclusive:
    /// `>=`), and answer `{"data":[..],"meta":{"next_cursor":".."}}`, `next_cursor` being
    /// `null` on the last page. The order is `updated`, then creation; the cursor holds the
    /// position of the last record of its page, so a record modified while a client pages
    /// is listed again later, and one modified in the same second as that position, but
    /// created earlier, is not listed again.
    Cursor,
    /// A generic API paged by offset, at `/members`.
    ///
    /// A record is `{"id":5,"updated":"2026-01-01T11:00:00+01:00",..}` (local time with its
    /// offset). Listings take `offset` (0 by default), `limit` (1 to 500, 50 by default) and
    /// `changes_since` (inclusive: `>=`; a naive time is local), ordered by `updated`, then
    /// id, and answer `{"items":[..],"total":123}`.
    Offset,
    /// An offline-first client's cloud API of revisioned documents with a change feed, in
    /// CouchDB's shapes, at `/sync`.
    ///
    /// A document is `{"_id":"lid-0007","_rev":"3-5c0f…",..}` with whatever fields the test gave
    /// it; `_rev` is its number of writes, a dash and a hash, and changes on every write (a
    /// person's edit too). Every write also takes the next number of the database's sequence.
    ///
    /// `GET /sync` answers `{"db_name":"members","update_seq":N,"doc_count":M}`.
    /// `GET /sync/changes` takes `since` (a sequence; absent or `0`: from the start; `now`: the
    /// current sequence, no rows) and `limit` (1 to 1000, 100 by default) and answers
    /// `{"results":[{"seq":S,"id":"lid-0007","changes":[{"rev":..}],"doc":{..}},..],"last_seq":L}`:
    /// each document once, at its latest sequence, in the order of sequences, only those after
    /// `since`; a deleted one as `{"seq","id","changes","deleted":true}` (a tombstone, no
    /// `doc`); `last_seq` is the sequence of the last row, or `since` (the current sequence
    /// without one) when there is none. Every row answered is counted
    /// ([`FixtureServer::rows_served`]).
    /// `GET /sync/docs` lists the live documents by id: `offset` and `limit` (1 to 1000, 100),
    /// `{"total_rows","offset","rows":[doc,..]}`.
    ///
    /// `GET /sync/docs/{id}` answers the document with an `ETag` of its `_rev` (quoted), or 404
    /// `{"error":"not_found","reason":"missing"}` (`"deleted"` for a deleted one).
    /// `PUT /sync/docs/{id}` replaces the whole document (the fields not sent are gone); it must
    /// name the current revision — `_rev` in the body, `?rev=`, or `If-Match` — or is refused
    /// with 409 `{"error":"conflict","reason":"Document update conflict."}`.
    /// `POST /sync/docs` creates a document under a new id (an `_id` in the body is ignored).
    /// Both answer 201 `{"ok":true,"id","rev"}` — not the document. `DELETE /sync/docs/{id}`
    /// must name the revision (`?rev=` or `If-Match`, else 409) and answers 200
    /// `{"ok":true,"id","rev"}`, leaving a tombstone in the feed. A refused email is 400
    /// `{"error":"bad_request","reason":"email: Enter a valid email address."}`.
    Feed,
}

impl Style {
    /// The path of the collection endpoint.
    fn list_path(self) -> &'static str {
        match self {
            Style::WordPress => "/wp-json/wp/v2/people",
            Style::Drf => "/api/members/",
            Style::LinkHeader => "/v1/contacts",
            Style::Cursor => "/v2/people",
            Style::Offset => "/members",
            Style::Feed => "/sync/docs",
        }
    }

    /// The key of a record's id in the API's records.
    fn id_key(self) -> &'static str {
        match self {
            Style::Cursor => "uuid",
            Style::Feed => "_id",
            _ => "id",
        }
    }

    /// The key of a record's modification time in the API's records.
    fn time_key(self) -> &'static str {
        match self {
            Style::WordPress => "modified_gmt",
            Style::Drf => "updated_at",
            Style::LinkHeader => "modified",
            Style::Cursor | Style::Offset => "updated",
            // No time: the revision is the fixture's own, like a time, and never written.
            Style::Feed => "_rev",
        }
    }
}

/// The credentials a [`FixtureServer`] requires once [`FixtureServer::require_auth`] is called.
/// A request without them, or with others, is answered 401 with the style's JSON error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// HTTP Basic authentication: `Authorization: Basic base64(user:password)`, as WordPress
    /// application passwords use.
    Basic {
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// A header with an exact value, such as `Authorization: Token abc` (DRF's token
    /// authentication) or `X-Api-Key: abc`.
    Header {
        /// The header's name (any case).
        name: String,
        /// The header's exact value.
        value: String,
    },
    /// A query parameter with an exact value, such as `?api_key=abc`.
    Query {
        /// The parameter's name.
        name: String,
        /// The parameter's exact value.
        value: String,
    },
}

/// One request the fixture received, as [`FixtureServer::requests`] lists them.
#[derive(Clone, Debug)]
pub struct RequestLog {
    /// The method, such as `GET`.
    pub method: String,
    /// The path and query, such as `/api/members/?page=2`.
    pub path: String,
    /// Whether an `Authorization` header was sent.
    pub authorization: bool,
    /// The `If-Match` header, when one was sent.
    pub if_match: Option<String>,
    /// The body, when it was JSON.
    pub body: Option<Value>,
    /// When the request arrived.
    pub at: Instant,
    /// The status answered; `None` while the answer is on its way, or when the connection
    /// was closed without an answer.
    pub status: Option<u16>,
    /// Whether the connection was closed without an answer ([`FixtureServer::drop_next`]).
    pub dropped: bool,
}

/// An HTTP server on `127.0.0.1` imitating one [`Style`] of API, with records, a clock,
/// faults and authentication the test controls. Dropping it stops the server.
pub struct FixtureServer {
    shared: Arc<Shared>,
    server: LoopbackServer,
}

impl FixtureServer {
    /// Starts a server of `style` on an ephemeral port, with no records and the clock at
    /// 2026-01-01T10:00:00Z.
    pub async fn start(style: Style) -> FixtureServer {
        let listener = LoopbackServer::listener();
        let addr = listener.local_addr().expect("the address of the fixture's listener");
        let zone = TimeZone::get("Europe/Amsterdam")
            .or_else(|_| TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3"))
            .expect("the Europe/Amsterdam time zone");
        let shared = Arc::new(Shared {
            style,
            base: format!("http://{addr}"),
            zone,
            inner: Mutex::new(Inner {
                now: Timestamp::from_second(1_767_261_600).expect("a valid instant"),
                next_id: 1,
                records: BTreeMap::new(),
                writes: BTreeMap::new(),
                log: RequestJournal::default(),
                faults: Faults::default(),
                auth: None,
                seq: 0,
                tombstones: BTreeMap::new(),
                rows_served: 0,
            }),
        });
        let server = LoopbackServer::start("fixture-server", listener, serve(Arc::clone(&shared)));
        FixtureServer { shared, server }
    }

    /// Stops the server as if it were killed: the port refuses connections and every open
    /// connection is closed, answered or not. Does nothing when it is already stopped.
    pub fn stop(&self) {
        self.server.stop();
    }

    /// Starts the server again on the same port, with the records, clock, faults and log it
    /// had. Does nothing when it is running.
    pub fn restart(&self) {
        self.server.restart();
    }

    /// The server's URL without a path, such as `http://127.0.0.1:41234`.
    pub fn base_url(&self) -> String {
        self.shared.base.clone()
    }

    /// The URL of the style's collection endpoint, such as
    /// `http://127.0.0.1:41234/wp-json/wp/v2/people`.
    pub fn list_url(&self) -> String {
        format!("{}{}", self.shared.base, self.shared.style.list_path())
    }

    /// The URL of one record, such as `{list}/12` (`{list}12/` for DRF, `{list}/c-12` for
    /// the `Link` header style, `{list}/{uuid}` for the cursor style).
    pub fn item_url(&self, id: i64) -> String {
        format!("{}{}", self.shared.base, self.shared.item_path(id))
    }

    /// The change feed's URL ([`Style::Feed`]).
    pub fn feed_url(&self) -> String {
        format!("{}/sync/changes", self.shared.base)
    }

    /// The database's URL, whose answer holds its `update_seq` ([`Style::Feed`]).
    pub fn database_url(&self) -> String {
        format!("{}/sync", self.shared.base)
    }

    /// How many rows the change feed has answered ([`Style::Feed`]).
    pub fn rows_served(&self) -> usize {
        self.shared.lock().rows_served
    }

    /// The database's sequence now: the number of the last write ([`Style::Feed`]).
    pub fn update_seq(&self) -> u64 {
        self.shared.lock().seq
    }

    /// Deletes a record as a person would: for [`Style::Feed`] a tombstone the feed lists.
    pub fn delete(&self, id: i64) {
        let mut inner = self.shared.lock();
        assert!(inner.remove(id), "no fixture record {id} to delete");
    }

    /// Adds a record as a person would, modified now, and returns its id (the number the
    /// other methods take).
    ///
    /// For WordPress, `title` (a string) and `status` (`publish` by default) are the post's
    /// own; `meta` (an object) and every other key go into the post's `meta`. For the other
    /// styles the record's keys are its fields; an id or modification time in it is
    /// ignored, the fixture assigns both.
    pub fn insert(&self, record: Value) -> i64 {
        let Value::Object(record) = record else { panic!("a fixture record is a JSON object") };
        let mut inner = self.shared.lock();
        self.shared.insert(&mut inner, &record)
    }

    /// Edits a record as a person would, modifying it now; this is not counted as a write
    /// (see [`FixtureServer::writes`]).
    ///
    /// For WordPress the patch's keys go into `meta` (replacing each key's value; `null`
    /// deletes it), except `title` and `status`, which set the post's own. For DRF the
    /// patch's top-level keys replace the record's. For the other styles the patch is a
    /// JSON merge patch (RFC 7396): objects merge, `null` deletes.
    ///
    /// # Panics
    ///
    /// When the record does not exist, or the patch is not an object.
    pub fn update(&self, id: i64, patch: Value) {
        let Value::Object(patch) = patch else { panic!("a fixture patch is a JSON object") };
        let mut inner = self.shared.lock();
        assert!(self.shared.person_edit(&mut inner, id, &patch), "no fixture record {id} to update");
    }

    /// The current records as the API returns them (for WordPress with `context=edit`, trashed
    /// posts included), by id.
    pub fn records(&self) -> Vec<Value> {
        let inner = self.shared.lock();
        inner.records.iter().map(|(id, stored)| self.shared.render(*id, stored, true)).collect()
    }

    /// One record as the API returns it, when it exists.
    pub fn record(&self, id: i64) -> Option<Value> {
        let inner = self.shared.lock();
        inner.records.get(&id).map(|stored| self.shared.render(id, stored, true))
    }

    /// How many writes (creates, updates, deletes) the API accepted for a record; edits made
    /// through [`FixtureServer::update`] are not counted.
    pub fn writes(&self, id: i64) -> usize {
        self.shared.lock().writes.get(&id).copied().unwrap_or(0)
    }

    /// How many writes the API accepted, for all records.
    pub fn total_writes(&self) -> usize {
        self.shared.lock().writes.values().sum()
    }

    /// The fixture's clock: the modification time of the next write.
    pub fn now(&self) -> Timestamp {
        self.shared.lock().now
    }

    /// Moves the clock by `seconds` (backwards when negative).
    pub fn advance_secs(&self, seconds: i64) {
        let mut inner = self.shared.lock();
        inner.now =
            inner.now.checked_add(SignedDuration::from_secs(seconds)).expect("a clock within jiff's range");
    }

    /// From now on, every `n`-th request (counting from this call, whatever it is answered)
    /// is answered with `status` and the style's error body (for DRF a 5xx is Django's HTML
    /// error page).
    ///
    /// # Panics
    ///
    /// When `n` is 0 or `status` is not an HTTP status.
    pub fn fail_every(&self, n: u64, status: u16) {
        assert!(n > 0, "fail_every needs n > 0");
        let status = StatusCode::from_u16(status).expect("an HTTP status");
        let mut inner = self.shared.lock();
        inner.faults.fail_every = Some((n, status));
        inner.faults.counted = 0;
    }

    /// The next `count` requests are answered 429 with `Retry-After: retry_after_secs`.
    pub fn too_many(&self, count: usize, retry_after_secs: u64) {
        let mut inner = self.shared.lock();
        inner.faults.too_many = count;
        inner.faults.retry_after = retry_after_secs;
    }

    /// Every answer (faults included) is delayed by `delay`; `Duration::ZERO` ends that.
    pub fn slow(&self, delay: Duration) {
        self.shared.lock().faults.slow = delay;
    }

    /// The connections of the next `count` requests are closed without an answer, after the
    /// request was read (and after the delay of [`FixtureServer::slow`]).
    pub fn drop_next(&self, count: usize) {
        self.shared.lock().faults.drop_next = count;
    }

    /// The next `count` successful list answers have a body cut in the middle (status and
    /// headers are as usual), so it is not valid JSON.
    pub fn malformed_next(&self, count: usize) {
        self.shared.lock().faults.malformed_next = count;
    }

    /// Right after the next read of record `id` (alone or in a listing) is answered, `patch`
    /// is applied as a person's edit ([`FixtureServer::update`]): the record changed between
    /// the client's read and its write.
    pub fn change_after_read(&self, id: i64, patch: Value) {
        let Value::Object(patch) = patch else { panic!("a fixture patch is a JSON object") };
        self.shared.lock().faults.change_after_read.insert(id, patch);
    }

    /// Whether writes with an email that is not a plausible address are refused with 400:
    /// for WordPress `meta.email` and the `value` of `meta.contact_info` elements whose
    /// `type` is `email`, for the cursor style `email` and `fields.email`, for the others
    /// `email`. An empty string or `null` (a cleared email) is accepted.
    pub fn reject_invalid_email(&self, on: bool) {
        self.shared.lock().faults.reject_invalid_email = on;
    }

    /// Ends every fault: failures, 429s, delays, dropped connections, malformed answers,
    /// changes after reads and email checks.
    pub fn clear_faults(&self) {
        self.shared.lock().faults = Faults::default();
    }

    /// From now on every request must carry `auth`.
    pub fn require_auth(&self, auth: Auth) {
        self.shared.lock().auth = Some(auth);
    }

    /// The requests received since the start (or [`FixtureServer::clear_requests`]), in the
    /// order they arrived.
    pub fn requests(&self) -> Vec<RequestLog> {
        self.shared.lock().log.entries().to_vec()
    }

    /// Forgets the requests received so far.
    pub fn clear_requests(&self) {
        self.shared.lock().log.clear();
    }

    /// The highest number of requests that arrived within any `window`: for each request,
    /// those that arrived at it or less than `window` after it.
    pub fn max_requests_in_window(&self, window: Duration) -> usize {
        let mut arrivals: Vec<Instant> =
            self.shared.lock().log.entries().iter().map(|request| request.at).collect();
        arrivals.sort_unstable();
        let mut first = 0;
        let mut most = 0;
        for (last, at) in arrivals.iter().enumerate() {
            while at.duration_since(arrivals[first]) >= window {
                first += 1;
            }
            most = most.max(last - first + 1);
        }
        most
    }
}

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

/// What the server's thread and the test share.
struct Shared {
    style: Style,
    /// `http://127.0.0.1:PORT`.
    base: String,
    /// The zone of local times.
    zone: TimeZone,
    inner: Mutex<Inner>,
}

/// The records, clock, faults and log.
struct Inner {
    now: Timestamp,
    next_id: i64,
    records: BTreeMap<i64, Stored>,
    /// Writes the API accepted, per record (kept after a record is deleted).
    writes: BTreeMap<i64, usize>,
    log: RequestJournal<RequestLog>,
    faults: Faults,
    auth: Option<Auth>,
    /// The sequence of the last write (every style counts; the feed shows it).
    seq: u64,
    /// Deleted records' last sequence and revision, for the feed's tombstones.
    tombstones: BTreeMap<i64, (u64, u64)>,
    /// Rows the change feed answered.
    rows_served: usize,
}

impl Inner {
    /// Stores a new record of `fields`, made now, and returns its id.
    fn add(&mut self, fields: Map<String, Value>) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        self.seq += 1;
        self.records
            .insert(id, Stored { created: self.now, modified: self.now, fields, seq: self.seq, rev: 1 });
        id
    }

    /// Notes a write of record `id`: the next sequence and a new revision.
    fn bump(&mut self, id: i64) {
        self.seq += 1;
        if let Some(stored) = self.records.get_mut(&id) {
            stored.seq = self.seq;
            stored.rev += 1;
        }
    }

    /// Deletes record `id`, leaving a tombstone at the next sequence; false when there is none.
    fn remove(&mut self, id: i64) -> bool {
        let Some(stored) = self.records.remove(&id) else { return false };
        self.seq += 1;
        self.tombstones.insert(id, (self.seq, stored.rev + 1));
        true
    }
}

/// One record: its times and its fields (for WordPress `title`, `status` and `meta`; for
/// the other styles the record's keys but the id and the modification time).
#[derive(Clone, Debug)]
struct Stored {
    created: Timestamp,
    modified: Timestamp,
    fields: Map<String, Value>,
    /// The sequence of its last write.
    seq: u64,
    /// How many writes it had: its revision's number.
    rev: u64,
}

/// The faults to inject.
#[derive(Default)]
struct Faults {
    fail_every: Option<(u64, StatusCode)>,
    /// Requests counted for `fail_every`.
    counted: u64,
    too_many: usize,
    retry_after: u64,
    slow: Duration,
    drop_next: usize,
    malformed_next: usize,
    change_after_read: HashMap<i64, Map<String, Value>>,
    reject_invalid_email: bool,
}

/// How one request is to be answered, before it reaches the API.
enum Fault {
    None,
    Drop,
    TooMany(u64),
    Fail(StatusCode),
}

impl Faults {
    /// The fault for a request that just arrived.
    fn next(&mut self) -> Fault {
        let failing = self.fail_every.and_then(|(n, status)| {
            self.counted += 1;
            self.counted.is_multiple_of(n).then_some(status)
        });
        if self.drop_next > 0 {
            self.drop_next -= 1;
            Fault::Drop
        } else if self.too_many > 0 {
            self.too_many -= 1;
            Fault::TooMany(self.retry_after)
        } else if let Some(status) = failing {
            Fault::Fail(status)
        } else {
            Fault::None
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// The id as the API shows it in records.
    fn api_id(&self, id: i64) -> Value {
        match self.style {
            Style::LinkHeader | Style::Cursor | Style::Feed => Value::String(self.id_text(id)),
            _ => Value::from(id),
        }
    }

    /// The id as it appears in a record's path.
    fn id_text(&self, id: i64) -> String {
        match self.style {
            Style::LinkHeader => format!("c-{id}"),
            Style::Cursor => format!("{UUID_PREFIX}{id:012x}"),
            Style::Feed => format!("lid-{id:04}"),
            _ => id.to_string(),
        }
    }

    /// The id in a record's path, when it is one this style makes.
    fn parse_id(&self, segment: &str) -> Option<i64> {
        match self.style {
            Style::LinkHeader => segment.strip_prefix("c-").and_then(parse_digits),
            Style::Feed => segment.strip_prefix("lid-").and_then(parse_digits),
            Style::Cursor => segment
                .strip_prefix(UUID_PREFIX)
                .filter(|hex| hex.len() == 12 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|hex| i64::from_str_radix(hex, 16).ok()),
            _ => parse_digits(segment),
        }
    }

    fn item_path(&self, id: i64) -> String {
        let list = self.style.list_path();
        match self.style {
            Style::Drf => format!("{list}{id}/"),
            _ => format!("{list}/{}", self.id_text(id)),
        }
    }

    /// A record as the API returns it.
    fn render(&self, id: i64, stored: &Stored, edit: bool) -> Value {
        if self.style == Style::WordPress {
            return self.wp_render(id, stored, edit);
        }
        if self.style == Style::Feed {
            return self.feed_render(id, stored);
        }
        let mut record = stored.fields.clone();
        record.insert(self.style.id_key().to_owned(), self.api_id(id));
        let time = match self.style {
            Style::Drf => Value::String(format_time(stored.modified, &TimeZone::UTC, "%Y-%m-%dT%H:%M:%SZ")),
            Style::LinkHeader => Value::String(format_time(stored.modified, &self.zone, "%Y-%m-%d %H:%M:%S")),
            Style::Cursor => Value::from(stored.modified.as_second()),
            Style::WordPress | Style::Offset | Style::Feed => {
                Value::String(format_time(stored.modified, &self.zone, "%Y-%m-%dT%H:%M:%S%:z"))
            }
        };
        record.insert(self.style.time_key().to_owned(), time);
        Value::Object(record)
    }

    /// A record's keys without the read-only id and modification time.
    fn writable(&self, record: &Map<String, Value>) -> Map<String, Value> {
        let mut fields = record.clone();
        fields.remove(self.style.id_key());
        fields.remove(self.style.time_key());
        fields
    }

    /// Adds a record as a person would and returns its id.
    fn insert(&self, inner: &mut Inner, record: &Map<String, Value>) -> i64 {
        let fields = match self.style {
            Style::WordPress => {
                let mut fields = wp_new_fields("publish");
                wp_apply(&mut fields, &wp_person_params(record));
                fields
            }
            _ => self.writable(record),
        };
        inner.add(fields)
    }

    /// A record the API created of `fields`: counted as a write and answered by `answer` (a
    /// `201 Created`), with its `Location`.
    fn created(
        &self,
        inner: &mut Inner,
        fields: Map<String, Value>,
        answer: impl FnOnce(i64, &Stored) -> Response,
    ) -> Response {
        let id = inner.add(fields);
        *inner.writes.entry(id).or_default() += 1;
        let mut response = answer(id, &inner.records[&id]);
        set_header(&mut response, "location", &format!("{}{}", self.base, self.item_path(id)));
        response
    }

    /// Edits a record as a person would; false when it does not exist.
    fn person_edit(&self, inner: &mut Inner, id: i64, patch: &Map<String, Value>) -> bool {
        let now = inner.now;
        let Some(stored) = inner.records.get_mut(&id) else { return false };
        match self.style {
            Style::WordPress => wp_apply(&mut stored.fields, &wp_person_params(patch)),
            Style::Drf => stored.fields.extend(self.writable(patch)),
            _ => merge_patch(&mut stored.fields, &self.writable(patch)),
        }
        stored.modified = now;
        inner.bump(id);
        true
    }

    /// Applies the person's edit waiting for a read of `id`, now that it was read.
    fn after_read(&self, inner: &mut Inner, id: i64) {
        if let Some(patch) = inner.faults.change_after_read.remove(&id) {
            self.person_edit(inner, id, &patch);
        }
    }

    /// A successful list answer: cut in the middle when a malformed answer is due; the
    /// listed records' waiting edits are applied once it is built.
    fn list_answer(
        &self,
        inner: &mut Inner,
        body: &Value,
        headers: Vec<(&'static str, String)>,
        ids: &[i64],
    ) -> Response {
        let mut bytes = serde_json::to_vec(body).unwrap_or_default();
        if inner.faults.malformed_next > 0 {
            inner.faults.malformed_next -= 1;
            bytes.truncate(bytes.len() / 2);
        }
        for id in ids {
            self.after_read(inner, *id);
        }
        let mut response = bytes_response(StatusCode::OK, bytes, self.content_type());
        for (name, value) in headers {
            set_header(&mut response, name, &value);
        }
        response
    }

    fn content_type(&self) -> &'static str {
        match self.style {
            Style::WordPress => "application/json; charset=UTF-8",
            _ => "application/json",
        }
    }

    fn json(&self, status: StatusCode, body: &Value) -> Response {
        bytes_response(status, serde_json::to_vec(body).unwrap_or_default(), self.content_type())
    }

    /// An absolute URL of `path` with `query`.
    fn url(&self, path: &str, query: &[(String, String)]) -> String {
        if query.is_empty() {
            format!("{}{path}", self.base)
        } else {
            format!("{}{path}?{}", self.base, encode_query(query))
        }
    }

    // -----------------------------------------------------------------------------------------
    // Requests
    // -----------------------------------------------------------------------------------------

    /// Logs a request that just arrived and picks its fault: its log serial, the delay
    /// before answering, and the fault.
    fn arrive(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> (usize, Duration, Fault) {
        let mut inner = self.lock();
        let serial = inner.log.arrive(RequestLog {
            method: method.to_string(),
            path: uri.path_and_query().map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned()),
            authorization: headers.contains_key(header::AUTHORIZATION),
            if_match: headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()).map(str::to_owned),
            body: serde_json::from_slice(body).ok(),
            at: Instant::now(),
            status: None,
            dropped: false,
        });
        let fault = inner.faults.next();
        (serial, inner.faults.slow, fault)
    }

    /// Records how a request was answered (`None`: closed without an answer).
    fn finish(&self, serial: usize, status: Option<u16>) {
        let mut inner = self.lock();
        if let Some(entry) = inner.log.get_mut(serial) {
            entry.status = status;
            entry.dropped = status.is_none();
        }
    }

    /// Answers a request that no fault took.
    fn answer(&self, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Response {
        let query = match Query::<Vec<(String, String)>>::try_from_uri(uri) {
            Ok(Query(query)) => query,
            Err(_) => {
                return self.error(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    "The query string is not valid.",
                );
            }
        };
        let mut inner = self.lock();
        if let Some(auth) = inner.auth.clone()
            && let Err(failure) = check_auth(&auth, headers, &query)
        {
            return self.unauthorized(&auth, failure);
        }
        let request = Request { method, path: uri.path(), query, headers, body };
        match self.style {
            Style::WordPress => self.wp_serve(&mut inner, &request),
            Style::Feed => self.feed_serve(&mut inner, &request),
            _ => self.api_serve(&mut inner, &request),
        }
    }

    /// An error in the style's format: WordPress `{"code","message","data":{"status"}}`, DRF
    /// `{"detail"}`, the others `{"error","message"}`.
    fn error(&self, status: StatusCode, code: &str, message: &str) -> Response {
        match self.style {
            Style::WordPress => self.wp_error(status, code, message),
            Style::Drf => self.json(status, &json!({ "detail": message })),
            Style::Feed => self.json(status, &json!({ "error": code, "reason": message })),
            _ => self.json(status, &json!({ "error": code, "message": message })),
        }
    }

    fn unauthorized(&self, auth: &Auth, failure: AuthFailure) -> Response {
        let mut response = match (self.style, failure) {
            (Style::WordPress, AuthFailure::Missing) => self.wp_error(
                StatusCode::UNAUTHORIZED,
                "rest_not_logged_in",
                "You are not currently logged in.",
            ),
            (Style::WordPress, AuthFailure::Wrong) => match auth {
                Auth::Basic { .. } => self.wp_error(
                    StatusCode::UNAUTHORIZED,
                    "incorrect_password",
                    "The provided password is an invalid application password.",
                ),
                _ => self.wp_error(
                    StatusCode::UNAUTHORIZED,
                    "rest_forbidden",
                    "Sorry, you are not allowed to do that.",
                ),
            },
            (_, AuthFailure::Missing) => self.error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Authentication credentials were not provided.",
            ),
            (Style::Drf, AuthFailure::Wrong) if matches!(auth, Auth::Basic { .. }) => {
                self.error(StatusCode::UNAUTHORIZED, "unauthorized", "Invalid username/password.")
            }
            (Style::Drf, AuthFailure::Wrong) => {
                self.error(StatusCode::UNAUTHORIZED, "unauthorized", "Invalid token.")
            }
            (_, AuthFailure::Wrong) => {
                self.error(StatusCode::UNAUTHORIZED, "unauthorized", "Invalid credentials.")
            }
        };
        let challenge = match auth {
            Auth::Basic { .. } => Some("Basic realm=\"api\"".to_owned()),
            Auth::Bearer(_) => Some("Bearer".to_owned()),
            Auth::Header { name, value } if name.eq_ignore_ascii_case("authorization") => {
                value.split_whitespace().next().map(str::to_owned)
            }
            Auth::Header { .. } | Auth::Query { .. } => None,
        };
        if let Some(challenge) = challenge {
            set_header(&mut response, "www-authenticate", &challenge);
        }
        response
    }

    fn too_many_response(&self, retry_after: u64) -> Response {
        let mut response = match self.style {
            Style::Drf => self.json(
                StatusCode::TOO_MANY_REQUESTS,
                &json!({ "detail": format!("Request was throttled. Expected available in {retry_after} seconds.") }),
            ),
            Style::WordPress => {
                self.wp_error(StatusCode::TOO_MANY_REQUESTS, "rest_too_many_requests", "Too many requests.")
            }
            _ => self.error(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", "Too many requests."),
        };
        set_header(&mut response, "retry-after", &retry_after.to_string());
        response
    }

    fn failure_response(&self, status: StatusCode) -> Response {
        let reason = status.canonical_reason().unwrap_or("Error");
        match self.style {
            Style::Drf if status.is_server_error() => {
                let page = format!(
                    "<!doctype html>\n<html lang=\"en\">\n<head>\n  <title>Server Error ({code})</title>\n</head>\n\
                     <body>\n  <h1>Server Error ({code})</h1><p></p>\n</body>\n</html>\n",
                    code = status.as_u16()
                );
                bytes_response(status, page.into_bytes(), "text/html; charset=utf-8")
            }
            Style::WordPress if status.is_server_error() => self.wp_error(
                status,
                "internal_server_error",
                "<p>There has been a critical error on this website.</p>",
            ),
            _ => self.error(status, "server_error", reason),
        }
    }

    // -----------------------------------------------------------------------------------------
    // WordPress
    // -----------------------------------------------------------------------------------------

    fn wp_error(&self, status: StatusCode, code: &str, message: &str) -> Response {
        self.json(status, &json!({ "code": code, "message": message, "data": { "status": status.as_u16() } }))
    }

    /// WordPress's answer to a parameter that does not validate.
    fn wp_invalid_param(&self, param: &str, reason: &str) -> Response {
        self.json(
            StatusCode::BAD_REQUEST,
            &json!({
                "code": "rest_invalid_param",
                "message": format!("Invalid parameter(s): {param}"),
                "data": { "status": 400, "params": { param: reason } },
            }),
        )
    }

    fn wp_no_route(&self) -> Response {
        self.wp_error(
            StatusCode::NOT_FOUND,
            "rest_no_route",
            "No route was found matching the URL and request method.",
        )
    }

    fn wp_invalid_id(&self) -> Response {
        self.wp_error(StatusCode::NOT_FOUND, "rest_post_invalid_id", "Invalid post ID.")
    }

    fn wp_render(&self, id: i64, stored: &Stored, edit: bool) -> Value {
        let title = stored.fields.get("title").and_then(Value::as_str).unwrap_or_default();
        let status = stored.fields.get("status").and_then(Value::as_str).unwrap_or("draft");
        let meta = stored.fields.get("meta").cloned().unwrap_or_else(|| Value::Object(Map::new()));
        let slug = slug_of(title, id);
        let rendered = wp_texturize(title);
        let title = if edit {
            json!({ "raw": title, "rendered": rendered })
        } else {
            json!({ "rendered": rendered })
        };
        json!({
            "id": id,
            "date": format_time(stored.created, &self.zone, WP_TIME),
            "date_gmt": format_time(stored.created, &TimeZone::UTC, WP_TIME),
            "modified": format_time(stored.modified, &self.zone, WP_TIME),
            "modified_gmt": format_time(stored.modified, &TimeZone::UTC, WP_TIME),
            "slug": slug,
            "status": status,
            "type": "person",
            "link": format!("{}/people/{slug}/", self.base),
            "title": title,
            "meta": meta,
        })
    }

    fn wp_serve(&self, inner: &mut Inner, request: &Request<'_>) -> Response {
        let list = Style::WordPress.list_path();
        let path = request.path.strip_suffix('/').unwrap_or(request.path);
        if path == list {
            return match *request.method {
                Method::GET | Method::HEAD => self.wp_list(inner, &request.query),
                Method::POST => self.wp_create(inner, request),
                _ => self.wp_no_route(),
            };
        }
        let Some(segment) = path.strip_prefix(list).and_then(|rest| rest.strip_prefix('/')) else {
            return self.wp_no_route();
        };
        let Some(id) = parse_digits(segment) else { return self.wp_no_route() };
        match *request.method {
            Method::GET | Method::HEAD => self.wp_get(inner, &request.query, id),
            Method::POST | Method::PUT | Method::PATCH => self.wp_update(inner, request, id),
            Method::DELETE => self.wp_delete(inner, &request.query, id),
            _ => self.wp_no_route(),
        }
    }

    /// The `context` parameter: whether it is `edit`.
    fn wp_context(&self, query: &[(String, String)]) -> Result<bool, Refusal> {
        match param(query, "context").unwrap_or("view") {
            "view" | "embed" => Ok(false),
            "edit" => Ok(true),
            _ => Err(Box::new(self.wp_invalid_param("context", "context is not one of view, embed, edit."))),
        }
    }

    fn wp_integer(&self, query: &[(String, String)], name: &str) -> Result<Option<i64>, Refusal> {
        match param(query, name) {
            None => Ok(None),
            Some(text) => text.trim().parse::<i64>().map(Some).map_err(|_| {
                Box::new(self.wp_invalid_param(name, &format!("{name} is not of type integer.")))
            }),
        }
    }

    /// A list of post ids (`include`, `exclude`), refused as WordPress refuses one that is not.
    fn wp_ids(&self, query: &[(String, String)], name: &str) -> Result<Option<Vec<i64>>, Refusal> {
        let Some(text) = param(query, name).filter(|text| !text.is_empty()) else { return Ok(None) };
        let mut ids = Vec::new();
        for (index, part) in text.split(',').enumerate() {
            match parse_digits(part.trim()) {
                Some(id) => ids.push(id),
                None => {
                    let reason = format!("{name}[{index}] is not of type integer.");
                    return Err(Box::new(self.wp_invalid_param(name, &reason)));
                }
            }
        }
        Ok(Some(ids))
    }

    fn wp_date(&self, query: &[(String, String)], name: &str) -> Result<Option<Timestamp>, Refusal> {
        let Some(text) = param(query, name) else { return Ok(None) };
        // rest_parse_date wants a date and a time, with an optional fraction and offset.
        let shaped = text.len() >= 19 && matches!(text.as_bytes()[10], b'T' | b't' | b' ');
        match shaped.then(|| parse_instant(text, &TimeZone::UTC)).flatten() {
            Some(t) => Ok(Some(t)),
            None => Err(Box::new(self.wp_invalid_param(name, "Invalid date."))),
        }
    }

    fn wp_list(&self, inner: &mut Inner, query: &[(String, String)]) -> Response {
        match self.wp_list_inner(inner, query) {
            Ok(response) => response,
            Err(refusal) => *refusal,
        }
    }

    fn wp_list_inner(&self, inner: &mut Inner, query: &[(String, String)]) -> Result<Response, Refusal> {
        let page = self.wp_integer(query, "page")?.unwrap_or(1);
        if page < 1 {
            return Err(Box::new(self.wp_invalid_param("page", "page must be greater than or equal to 1")));
        }
        let per_page = self.wp_integer(query, "per_page")?.unwrap_or(10);
        if !(1..=100).contains(&per_page) {
            return Err(Box::new(self.wp_invalid_param(
                "per_page",
                "per_page must be between 1 (inclusive) and 100 (inclusive)",
            )));
        }
        let edit = self.wp_context(query)?;
        let descending = match param(query, "order").unwrap_or("desc") {
            "desc" => true,
            "asc" => false,
            _ => return Err(Box::new(self.wp_invalid_param("order", "order is not one of asc, desc."))),
        };
        let orderby = param(query, "orderby").unwrap_or("date");
        if !["date", "id", "modified", "slug", "title"].contains(&orderby) {
            return Err(Box::new(
                self.wp_invalid_param("orderby", "orderby is not one of date, id, modified, slug, title."),
            ));
        }
        let statuses: Vec<&str> =
            param(query, "status").unwrap_or("publish").split(',').map(str::trim).collect();
        for (index, status) in statuses.iter().enumerate() {
            if *status != "any" && !WP_STATUSES.contains(status) {
                return Err(Box::new(self.wp_invalid_param(
                    "status",
                    &format!(
                        "status[{index}] is not one of publish, future, draft, pending, private, trash, any."
                    ),
                )));
            }
        }
        let modified_after = self.wp_date(query, "modified_after")?;
        let modified_before = self.wp_date(query, "modified_before")?;
        let after = self.wp_date(query, "after")?;
        let before = self.wp_date(query, "before")?;
        let include = self.wp_ids(query, "include")?;
        let exclude = self.wp_ids(query, "exclude")?;

        let status_matches = |status: &str| {
            statuses.iter().any(|wanted| *wanted == status || (*wanted == "any" && status != "trash"))
        };
        let mut rows: Vec<(i64, &Stored)> = inner
            .records
            .iter()
            .map(|(id, stored)| (*id, stored))
            .filter(|(id, stored)| {
                status_matches(wp_field(stored, "status"))
                    && modified_after.is_none_or(|t| stored.modified > t)
                    && modified_before.is_none_or(|t| stored.modified < t)
                    && after.is_none_or(|t| stored.created > t)
                    && before.is_none_or(|t| stored.created < t)
                    && include.as_ref().is_none_or(|ids| ids.contains(id))
                    && exclude.as_ref().is_none_or(|ids| !ids.contains(id))
            })
            .collect();
        rows.sort_by(|a, b| {
            let by = match orderby {
                "id" => CmpOrdering::Equal,
                "modified" => a.1.modified.cmp(&b.1.modified),
                "title" => wp_field(a.1, "title").cmp(wp_field(b.1, "title")),
                "slug" => slug_of(wp_field(a.1, "title"), a.0).cmp(&slug_of(wp_field(b.1, "title"), b.0)),
                _ => a.1.created.cmp(&b.1.created),
            }
            .then(a.0.cmp(&b.0));
            if descending { by.reverse() } else { by }
        });

        let total = rows.len() as u64;
        let per_page = per_page.unsigned_abs();
        let page = page.unsigned_abs();
        let pages = total.div_ceil(per_page);
        if total > 0 && page > pages {
            return Err(Box::new(self.wp_error(
                StatusCode::BAD_REQUEST,
                "rest_post_invalid_page_number",
                "The page number requested is larger than the number of pages available.",
            )));
        }
        let start = usize::try_from((page - 1).saturating_mul(per_page)).unwrap_or(usize::MAX);
        let take = usize::try_from(per_page).unwrap_or(usize::MAX);
        let listed: Vec<(i64, &Stored)> = rows.into_iter().skip(start).take(take).collect();
        let ids: Vec<i64> = listed.iter().map(|(id, _)| *id).collect();
        let body =
            Value::Array(listed.iter().map(|(id, stored)| self.wp_render(*id, stored, edit)).collect());

        let mut links = Vec::new();
        if page > 1 {
            let previous = (page - 1).min(pages.max(1));
            links.push(format!(
                "<{}>; rel=\"prev\"",
                self.url(Style::WordPress.list_path(), &with_page(query, previous))
            ));
        }
        if pages > page {
            links.push(format!(
                "<{}>; rel=\"next\"",
                self.url(Style::WordPress.list_path(), &with_page(query, page + 1))
            ));
        }
        let mut headers = vec![("x-wp-total", total.to_string()), ("x-wp-totalpages", pages.to_string())];
        if !links.is_empty() {
            headers.push(("link", links.join(", ")));
        }
        Ok(self.list_answer(inner, &body, headers, &ids))
    }

    fn wp_get(&self, inner: &mut Inner, query: &[(String, String)], id: i64) -> Response {
        let edit = match self.wp_context(query) {
            Ok(edit) => edit,
            Err(refusal) => return *refusal,
        };
        let Some(stored) = inner.records.get(&id) else { return self.wp_invalid_id() };
        let body = self.wp_render(id, stored, edit);
        self.after_read(inner, id);
        self.json(StatusCode::OK, &body)
    }

    /// A write's parameters: the JSON body's keys (see [`Style::WordPress`] for bodies that
    /// are not JSON).
    fn wp_body(&self, request: &Request<'_>) -> Result<Map<String, Value>, Refusal> {
        if request.body.iter().all(u8::is_ascii_whitespace) || !is_json(request.headers) {
            return Ok(Map::new());
        }
        match serde_json::from_slice::<Value>(request.body) {
            Ok(Value::Object(params)) => Ok(params),
            Ok(_) => Ok(Map::new()),
            Err(_) => Err(Box::new(self.json(
                StatusCode::BAD_REQUEST,
                &json!({
                    "code": "rest_invalid_json",
                    "message": "Invalid JSON body passed.",
                    "data": { "status": 400, "json_error_code": 4, "json_error_message": "Syntax error" },
                }),
            ))),
        }
    }

    /// A write's parameters ([`Shared::wp_body`]), checked ([`Shared::wp_validate`]).
    fn wp_write_params(&self, inner: &Inner, request: &Request<'_>) -> Result<Map<String, Value>, Refusal> {
        let params = self.wp_body(request)?;
        self.wp_validate(inner, &params)?;
        Ok(params)
    }

    /// Checks a write's `title`, `status` and `meta` as WordPress's schema does.
    fn wp_validate(&self, inner: &Inner, params: &Map<String, Value>) -> Result<(), Refusal> {
        if let Some(title) = params.get("title")
            && wp_title(title).is_none()
        {
            return Err(Box::new(self.wp_invalid_param("title", "title is not of type object.")));
        }
        if let Some(status) = params.get("status")
            && !status.as_str().is_some_and(|status| WP_WRITE_STATUSES.contains(&status))
        {
            return Err(Box::new(self.wp_invalid_param(
                "status",
                "status is not one of publish, future, draft, pending, private.",
            )));
        }
        if let Some(meta) = params.get("meta") {
            let Some(meta) = meta.as_object() else {
                return Err(Box::new(self.wp_invalid_param("meta", "meta is not of type object.")));
            };
            if inner.faults.reject_invalid_email
                && let Some(reason) = wp_invalid_email(meta)
            {
                return Err(Box::new(self.wp_invalid_param("meta", &reason)));
            }
        }
        Ok(())
    }

    fn wp_create(&self, inner: &mut Inner, request: &Request<'_>) -> Response {
        let params = match self.wp_write_params(inner, request) {
            Ok(params) => params,
            Err(refusal) => return *refusal,
        };
        let mut fields = wp_new_fields("draft");
        wp_apply(&mut fields, &params);
        self.created(inner, fields, |id, stored| {
            self.json(StatusCode::CREATED, &self.wp_render(id, stored, true))
        })
    }

    fn wp_update(&self, inner: &mut Inner, request: &Request<'_>, id: i64) -> Response {
        if !inner.records.contains_key(&id) {
            return self.wp_invalid_id();
        }
        let params = match self.wp_write_params(inner, request) {
            Ok(params) => params,
            Err(refusal) => return *refusal,
        };
        let now = inner.now;
        let Some(stored) = inner.records.get_mut(&id) else { return self.wp_invalid_id() };
        wp_apply(&mut stored.fields, &params);
        stored.modified = now;
        let body = self.wp_render(id, stored, true);
        *inner.writes.entry(id).or_default() += 1;
        self.json(StatusCode::OK, &body)
    }

    fn wp_delete(&self, inner: &mut Inner, query: &[(String, String)], id: i64) -> Response {
        let force = match param(query, "force") {
            None | Some("false" | "0") => false,
            Some("true" | "1") => true,
            Some(_) => return self.wp_invalid_param("force", "force is not of type boolean."),
        };
        let now = inner.now;
        let Some(stored) = inner.records.get_mut(&id) else { return self.wp_invalid_id() };
        let body = if force {
            let previous = self.wp_render(id, stored, true);
            inner.records.remove(&id);
            json!({ "deleted": true, "previous": previous })
        } else {
            if wp_field(stored, "status") == "trash" {
                return self.wp_error(
                    StatusCode::GONE,
                    "rest_already_trashed",
                    "The post has already been deleted.",
                );
            }
            stored.fields.insert("status".to_owned(), Value::from("trash"));
            stored.modified = now;
            self.wp_render(id, stored, true)
        };
        *inner.writes.entry(id).or_default() += 1;
        self.json(StatusCode::OK, &body)
    }

    // -----------------------------------------------------------------------------------------
    // DRF and the generic styles
    // -----------------------------------------------------------------------------------------

    fn api_serve(&self, inner: &mut Inner, request: &Request<'_>) -> Response {
        let list = self.style.list_path();
        let target = if request.path == list {
            Target::Collection
        } else if self.style == Style::Drf {
            match request.path.strip_prefix(list) {
                Some(rest) if !rest.contains('/') => return self.drf_without_slash(request),
                Some(rest) => match rest.strip_suffix('/') {
                    Some(segment) if !segment.is_empty() && !segment.contains('/') => {
                        Target::Item(self.parse_id(segment))
                    }
                    _ => Target::Unknown,
                },
                None if request.path == list.trim_end_matches('/') => return self.drf_without_slash(request),
                None => Target::Unknown,
            }
        } else {
            match request.path.strip_prefix(list).and_then(|rest| rest.strip_prefix('/')) {
                Some(segment) if !segment.is_empty() && !segment.contains('/') => {
                    Target::Item(self.parse_id(segment))
                }
                _ => Target::Unknown,
            }
        };
        let read = matches!(*request.method, Method::GET | Method::HEAD);
        match target {
            Target::Unknown => self.not_found(),
            Target::Collection if read => self.api_list(inner, &request.query),
            Target::Collection if *request.method == Method::POST => self.api_create(inner, request),
            Target::Collection => self.method_not_allowed(request.method, "GET, POST, HEAD, OPTIONS"),
            // An id this style never makes names no record, whatever the method.
            Target::Item(id) => match *request.method {
                _ if read => self.api_get(inner, id),
                Method::PATCH => self.api_write(inner, request, id, true),
                Method::PUT => self.api_write(inner, request, id, false),
                Method::DELETE => self.api_delete(inner, request, id),
                _ => self.method_not_allowed(request.method, "GET, PUT, PATCH, DELETE, HEAD, OPTIONS"),
            },
        }
    }

    /// Django's answer to a path without its trailing slash: a redirect for reads, 404 else.
    fn drf_without_slash(&self, request: &Request<'_>) -> Response {
        if !matches!(*request.method, Method::GET | Method::HEAD) {
            return self.not_found();
        }
        let mut response =
            bytes_response(StatusCode::MOVED_PERMANENTLY, Vec::new(), "text/html; charset=utf-8");
        let target = if request.query.is_empty() {
            format!("{}/", request.path)
        } else {
            format!("{}/?{}", request.path, encode_query(&request.query))
        };
        set_header(&mut response, "location", &target);
        response
    }

    fn not_found(&self) -> Response {
        match self.style {
            Style::Drf => self.json(StatusCode::NOT_FOUND, &json!({ "detail": "Not found." })),
            _ => self.error(StatusCode::NOT_FOUND, "not_found", "No record was found at this path."),
        }
    }

    fn method_not_allowed(&self, method: &Method, allow: &str) -> Response {
        let mut response = self.error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("Method \"{method}\" not allowed."),
        );
        set_header(&mut response, "allow", allow);
        response
    }

    fn bad_parameter(&self, name: &str, message: &str) -> Response {
        match self.style {
            Style::Drf => self.json(StatusCode::BAD_REQUEST, &json!({ name: [message] })),
            _ => self.error(StatusCode::BAD_REQUEST, "invalid_parameter", &format!("{name}: {message}")),
        }
    }

    fn api_list(&self, inner: &mut Inner, query: &[(String, String)]) -> Response {
        let answer = match self.style {
            Style::Drf => self.drf_list(inner, query),
            Style::LinkHeader => self.link_list(inner, query),
            Style::Cursor => self.cursor_list(inner, query),
            Style::WordPress | Style::Offset | Style::Feed => self.offset_list(inner, query),
        };
        match answer {
            Ok(response) => response,
            Err(refusal) => *refusal,
        }
    }

    /// A time parameter; a time without an offset is read in `naive`.
    fn time_param(
        &self,
        query: &[(String, String)],
        name: &str,
        naive: &TimeZone,
    ) -> Result<Option<Timestamp>, Refusal> {
        match param(query, name) {
            None => Ok(None),
            Some(text) => match parse_instant(text, naive) {
                Some(t) => Ok(Some(t)),
                None => Err(Box::new(self.bad_parameter(name, "Enter a valid date/time."))),
            },
        }
    }

    /// A whole-number parameter within `range`, or `default` when absent.
    fn number_param(
        &self,
        query: &[(String, String)],
        name: &str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<u64, Refusal> {
        match param(query, name) {
            None => Ok(default),
            Some(text) => match text.trim().parse::<u64>() {
                Ok(n) if range.contains(&n) => Ok(n),
                _ => Err(Box::new(self.bad_parameter(
                    name,
                    &format!("must be a whole number from {} to {}", range.start(), range.end()),
                ))),
            },
        }
    }

    /// The records modified at or after `since`, ordered by modification time, then id.
    fn rows_since(inner: &Inner, since: Option<Timestamp>) -> Vec<(i64, &Stored)> {
        let mut rows: Vec<(i64, &Stored)> = inner
            .records
            .iter()
            .map(|(id, stored)| (*id, stored))
            .filter(|(_, stored)| since.is_none_or(|t| stored.modified >= t))
            .collect();
        rows.sort_by(|a, b| a.1.modified.cmp(&b.1.modified).then(a.0.cmp(&b.0)));
        rows
    }

    fn drf_list(&self, inner: &mut Inner, query: &[(String, String)]) -> Result<Response, Refusal> {
        let page_size = param(query, "page_size")
            .and_then(|text| text.trim().parse::<u64>().ok())
            .filter(|n| *n > 0)
            .map_or(DRF_PAGE_SIZE, |n| n.min(DRF_MAX_PAGE_SIZE));
        let after = self.time_param(query, "updated_after", &TimeZone::UTC)?;
        let before = self.time_param(query, "updated_before", &TimeZone::UTC)?;
        let ordering: Vec<(&str, bool)> = param(query, "ordering")
            .unwrap_or("id")
            .split(',')
            .map(str::trim)
            .map(|term| term.strip_prefix('-').map_or((term, false), |field| (field, true)))
            .filter(|(field, _)| ["id", "updated_at"].contains(field))
            .collect();
        let mut rows: Vec<(i64, &Stored)> = inner
            .records
            .iter()
            .map(|(id, stored)| (*id, stored))
            .filter(|(_, stored)| {
                after.is_none_or(|t| stored.modified >= t) && before.is_none_or(|t| stored.modified <= t)
            })
            // `?key=a&key=b`: any of the keys, as Django's `MultipleChoiceFilter` reads a repeated
            // parameter.
            .filter(|(_, stored)| {
                let keys: Vec<&str> =
                    query.iter().filter(|(name, _)| name == "key").map(|(_, value)| value.as_str()).collect();
                keys.is_empty()
                    || stored.fields.get("key").and_then(Value::as_str).is_some_and(|key| keys.contains(&key))
            })
            .collect();
        rows.sort_by(|a, b| {
            ordering
                .iter()
                .map(|(field, descending)| {
                    let by = if *field == "id" { a.0.cmp(&b.0) } else { a.1.modified.cmp(&b.1.modified) };
                    if *descending { by.reverse() } else { by }
                })
                .find(|by| by.is_ne())
                .unwrap_or_else(|| a.0.cmp(&b.0))
        });

        let count = rows.len() as u64;
        let pages = count.div_ceil(page_size).max(1);
        let page = match param(query, "page").map(str::trim) {
            None => 1,
            Some("last") => pages,
            Some(text) => match text.parse::<u64>() {
                Ok(n) if (1..=pages).contains(&n) => n,
                _ => {
                    return Err(Box::new(
                        self.json(StatusCode::NOT_FOUND, &json!({ "detail": "Invalid page." })),
                    ));
                }
            },
        };
        let start = usize::try_from((page - 1) * page_size).unwrap_or(usize::MAX);
        let take = usize::try_from(page_size).unwrap_or(usize::MAX);
        let listed: Vec<(i64, &Stored)> = rows.into_iter().skip(start).take(take).collect();
        let ids: Vec<i64> = listed.iter().map(|(id, _)| *id).collect();
        let results: Vec<Value> = listed.iter().map(|(id, stored)| self.render(*id, stored, true)).collect();

        let page_url = |page: Option<u64>| {
            let mut pairs: Vec<(String, String)> =
                query.iter().filter(|(name, _)| name != "page").cloned().collect();
            if let Some(page) = page {
                pairs.push(("page".to_owned(), page.to_string()));
            }
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            Value::String(self.url(Style::Drf.list_path(), &pairs))
        };
        let next = if page < pages { page_url(Some(page + 1)) } else { Value::Null };
        let previous = match page {
            1 => Value::Null,
            2 => page_url(None),
            _ => page_url(Some(page - 1)),
        };
        let body = json!({ "count": count, "next": next, "previous": previous, "results": results });
        Ok(self.list_answer(inner, &body, Vec::new(), &ids))
    }

    fn link_list(&self, inner: &mut Inner, query: &[(String, String)]) -> Result<Response, Refusal> {
        let per_page = self.number_param(query, "per_page", 30, 1..=u64::MAX)?.min(100);
        let page = self.number_param(query, "page", 1, 1..=u64::MAX)?;
        let since = self.time_param(query, "since", &self.zone)?;
        let rows = Self::rows_since(inner, since);
        let total = rows.len() as u64;
        let last = total.div_ceil(per_page).max(1);
        let start = usize::try_from((page - 1).saturating_mul(per_page)).unwrap_or(usize::MAX);
        let take = usize::try_from(per_page).unwrap_or(usize::MAX);
        let listed: Vec<(i64, &Stored)> = rows.into_iter().skip(start).take(take).collect();
        let ids: Vec<i64> = listed.iter().map(|(id, _)| *id).collect();
        let body = Value::Array(listed.iter().map(|(id, stored)| self.render(*id, stored, true)).collect());

        let link = |page: u64, rel: &str| {
            format!("<{}>; rel=\"{rel}\"", self.url(Style::LinkHeader.list_path(), &with_page(query, page)))
        };
        let mut links = Vec::new();
        if page < last {
            links.push(link(page + 1, "next"));
            links.push(link(last, "last"));
        }
        if page > 1 {
            links.push(link(page.saturating_sub(1).min(last), "prev"));
            links.push(link(1, "first"));
        }
        let headers = if links.is_empty() { Vec::new() } else { vec![("link", links.join(", "))] };
        Ok(self.list_answer(inner, &body, headers, &ids))
    }

    fn cursor_list(&self, inner: &mut Inner, query: &[(String, String)]) -> Result<Response, Refusal> {
        let limit = self.number_param(query, "limit", 25, 1..=100)?;
        let since = match param(query, "updated_since") {
            None => None,
            Some(text) => {
                match text.trim().parse::<i64>().ok().and_then(|s| Timestamp::from_second(s).ok()) {
                    Some(t) => Some(t),
                    None => {
                        return Err(Box::new(self.bad_parameter("updated_since", "must be Unix seconds")));
                    }
                }
            }
        };
        let position = match param(query, "cursor").filter(|text| !text.is_empty()) {
            None => None,
            Some(text) => match decode_cursor(text) {
                Some(position) => Some(position),
                None => {
                    return Err(Box::new(self.error(
                        StatusCode::BAD_REQUEST,
                        "invalid_cursor",
                        "The cursor is not valid.",
                    )));
                }
            },
        };
        let take = usize::try_from(limit).unwrap_or(usize::MAX);
        let mut rows: Vec<(i64, &Stored)> = Self::rows_since(inner, since)
            .into_iter()
            .filter(|(id, stored)| {
                position.is_none_or(|position| (stored.modified.as_second(), *id) > position)
            })
            .take(take.saturating_add(1))
            .collect();
        let more = rows.len() > take;
        rows.truncate(take);
        let next_cursor = match rows.last() {
            Some((id, stored)) if more => Value::String(encode_cursor(stored.modified.as_second(), *id)),
            _ => Value::Null,
        };
        let ids: Vec<i64> = rows.iter().map(|(id, _)| *id).collect();
        let data: Vec<Value> = rows.iter().map(|(id, stored)| self.render(*id, stored, true)).collect();
        let body = json!({ "data": data, "meta": { "next_cursor": next_cursor } });
        Ok(self.list_answer(inner, &body, Vec::new(), &ids))
    }

    fn offset_list(&self, inner: &mut Inner, query: &[(String, String)]) -> Result<Response, Refusal> {
        let offset = self.number_param(query, "offset", 0, 0..=u64::MAX)?;
        let limit = self.number_param(query, "limit", 50, 1..=500)?;
        let since = self.time_param(query, "changes_since", &self.zone)?;
        let rows = Self::rows_since(inner, since);
        let total = rows.len();
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let take = usize::try_from(limit).unwrap_or(usize::MAX);
        let listed: Vec<(i64, &Stored)> = rows.into_iter().skip(start).take(take).collect();
        let ids: Vec<i64> = listed.iter().map(|(id, _)| *id).collect();
        let items: Vec<Value> = listed.iter().map(|(id, stored)| self.render(*id, stored, true)).collect();
        let body = json!({ "items": items, "total": total });
        Ok(self.list_answer(inner, &body, Vec::new(), &ids))
    }

    /// A record's answer, with its `ETag`.
    fn record_answer(&self, status: StatusCode, body: &Value) -> Response {
        let mut response = self.json(status, body);
        set_header(&mut response, "etag", &etag_of(body));
        response
    }

    fn api_get(&self, inner: &mut Inner, id: Option<i64>) -> Response {
        let Some((id, stored)) = id.and_then(|id| inner.records.get(&id).map(|stored| (id, stored))) else {
            return self.not_found();
        };
        let body = self.render(id, stored, true);
        self.after_read(inner, id);
        self.record_answer(StatusCode::OK, &body)
    }

    /// 412 when `If-Match` names another version than `current`.
    fn precondition(&self, headers: &HeaderMap, current: &str) -> Result<(), Refusal> {
        let Some(expected) = headers.get(header::IF_MATCH) else { return Ok(()) };
        let expected = expected.to_str().unwrap_or_default();
        if expected.trim() == "*" || expected.split(',').any(|tag| tag.trim() == current) {
            return Ok(());
        }
        Err(Box::new(match self.style {
            Style::Drf => {
                self.json(StatusCode::PRECONDITION_FAILED, &json!({ "detail": "Precondition failed." }))
            }
            _ => self.error(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                "The record changed since it was read.",
            ),
        }))
    }

    /// A write's body: a JSON object (an empty body is an empty object).
    fn api_body(&self, request: &Request<'_>) -> Result<Map<String, Value>, Refusal> {
        if request.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Map::new());
        }
        let drf = self.style == Style::Drf;
        if !is_json(request.headers) {
            let given = request.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
            let message = format!("Unsupported media type \"{given}\" in request.");
            return Err(Box::new(self.error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                &message,
            )));
        }
        match serde_json::from_slice::<Value>(request.body) {
            Ok(Value::Object(fields)) => Ok(fields),
            Ok(other) if drf => {
                let kind = match other {
                    Value::Array(_) => "list",
                    Value::String(_) => "str",
                    Value::Bool(_) => "bool",
                    Value::Null => "NoneType",
                    Value::Number(number) if number.is_f64() => "float",
                    _ => "int",
                };
                let message = format!("Invalid data. Expected a dictionary, but got {kind}.");
                Err(Box::new(self.json(StatusCode::BAD_REQUEST, &json!({ "non_field_errors": [message] }))))
            }
            Ok(_) => Err(Box::new(self.error(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "The body must be a JSON object.",
            ))),
            Err(error) => Err(Box::new(self.error(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                &format!("JSON parse error - {error}"),
            ))),
        }
    }

    /// The fields a write may set ([`Shared::writable`]) from its body ([`Shared::api_body`]),
    /// unless its email is refused ([`Shared::api_email_refused`]).
    fn api_write_fields(&self, inner: &Inner, request: &Request<'_>) -> Result<Map<String, Value>, Refusal> {
        let fields = self.writable(&self.api_body(request)?);
        if self.api_email_refused(inner, &fields) {
            return Err(Box::new(self.email_refused()));
        }
        Ok(fields)
    }

    /// Whether a write's email is refused (see [`FixtureServer::reject_invalid_email`]).
    fn api_email_refused(&self, inner: &Inner, fields: &Map<String, Value>) -> bool {
        if !inner.faults.reject_invalid_email {
            return false;
        }
        let nested = match self.style {
            Style::Cursor => fields.get("fields").and_then(|f| f.get("email")),
            _ => None,
        };
        fields.get("email").into_iter().chain(nested).any(|email| !plausible_email_value(email))
    }

    fn email_refused(&self) -> Response {
        self.json(StatusCode::BAD_REQUEST, &json!({ "email": ["Enter a valid email address."] }))
    }

    fn api_create(&self, inner: &mut Inner, request: &Request<'_>) -> Response {
        let fields = match self.api_write_fields(inner, request) {
            Ok(fields) => fields,
            Err(refusal) => return *refusal,
        };
        self.created(inner, fields, |id, stored| {
            self.record_answer(StatusCode::CREATED, &self.render(id, stored, true))
        })
    }

    fn api_write(
        &self,
        inner: &mut Inner,
        request: &Request<'_>,
        id: Option<i64>,
        partial: bool,
    ) -> Response {
        let Some((id, stored)) = id.and_then(|id| inner.records.get(&id).map(|stored| (id, stored))) else {
            return self.not_found();
        };
        if let Err(refusal) = self.precondition(request.headers, &etag_of(&self.render(id, stored, true))) {
            return *refusal;
        }
        let changes = match self.api_write_fields(inner, request) {
            Ok(fields) => fields,
            Err(refusal) => return *refusal,
        };
        let now = inner.now;
        let Some(stored) = inner.records.get_mut(&id) else { return self.not_found() };
        match (self.style, partial) {
            (_, false) => stored.fields = changes,
            (Style::Drf, true) => stored.fields.extend(changes),
            (_, true) => merge_patch(&mut stored.fields, &changes),
        }
        stored.modified = now;
        inner.bump(id);
        let body = self.render(id, &inner.records[&id], true);
        *inner.writes.entry(id).or_default() += 1;
        self.record_answer(StatusCode::OK, &body)
    }

    fn api_delete(&self, inner: &mut Inner, request: &Request<'_>, id: Option<i64>) -> Response {
        let Some((id, stored)) = id.and_then(|id| inner.records.get(&id).map(|stored| (id, stored))) else {
            return self.not_found();
        };
        if let Err(refusal) = self.precondition(request.headers, &etag_of(&self.render(id, stored, true))) {
            return *refusal;
        }
        inner.records.remove(&id);
        *inner.writes.entry(id).or_default() += 1;
        bytes_response(StatusCode::NO_CONTENT, Vec::new(), self.content_type())
    }
}

impl Shared {
    // -----------------------------------------------------------------------------------------
    // The change-feed API of revisioned documents
    // -----------------------------------------------------------------------------------------

    /// A document's revision: its number of writes, a dash and a hash.
    fn feed_rev(id: i64, rev: u64) -> String {
        let mut hasher = DefaultHasher::new();
        (id, rev).hash(&mut hasher);
        format!("{rev}-{:08x}", hasher.finish() & 0xffff_ffff)
    }

    fn feed_render(&self, id: i64, stored: &Stored) -> Value {
        let mut document = Map::new();
        document.insert("_id".to_owned(), self.api_id(id));
        document.insert("_rev".to_owned(), Value::String(Self::feed_rev(id, stored.rev)));
        document.extend(stored.fields.clone());
        Value::Object(document)
    }

    fn feed_serve(&self, inner: &mut Inner, request: &Request<'_>) -> Response {
        let read = matches!(*request.method, Method::GET | Method::HEAD);
        let docs = Style::Feed.list_path();
        match request.path {
            "/sync" if read => self.json(
                StatusCode::OK,
                &json!({ "db_name": "members", "update_seq": inner.seq, "doc_count": inner.records.len() }),
            ),
            "/sync/changes" if read => {
                self.feed_changes(inner, &request.query).unwrap_or_else(|refusal| *refusal)
            }
            path if path == docs && read => {
                self.feed_list(inner, &request.query).unwrap_or_else(|refusal| *refusal)
            }
            path if path == docs && *request.method == Method::POST => self.feed_create(inner, request),
            path => match path.strip_prefix(docs).and_then(|rest| rest.strip_prefix('/')) {
                Some(segment) if !segment.is_empty() && !segment.contains('/') => {
                    let id = self.parse_id(segment);
                    match *request.method {
                        _ if read => self.feed_get(inner, id),
                        Method::PUT => self.feed_put(inner, request, id),
                        Method::DELETE => self.feed_delete(inner, request, id),
                        _ => self.method_not_allowed(request.method, "GET, PUT, DELETE, HEAD"),
                    }
                }
                _ => self.error(StatusCode::NOT_FOUND, "not_found", "missing"),
            },
        }
    }

    fn feed_changes(&self, inner: &mut Inner, query: &[(String, String)]) -> Result<Response, Refusal> {
        let limit = self.number_param(query, "limit", 100, 1..=1000)?;
        let since = match param(query, "since") {
            None => 0,
            Some("now") => inner.seq,
            Some(text) => match text.trim().parse::<u64>() {
                Ok(since) => since,
                Err(_) => return Err(Box::new(self.bad_parameter("since", "must be a sequence or `now`"))),
            },
        };
        // Each document once, at its latest sequence; tombstones too.
        let mut rows: Vec<(u64, i64, Option<&Stored>, u64)> = inner
            .records
            .iter()
            .map(|(id, stored)| (stored.seq, *id, Some(stored), stored.rev))
            .chain(inner.tombstones.iter().map(|(id, (seq, rev))| (*seq, *id, None, *rev)))
            .filter(|(seq, ..)| *seq > since)
            .collect();
        rows.sort_by_key(|(seq, ..)| *seq);
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let last = rows.last().map_or(since, |(seq, ..)| *seq);
        let ids: Vec<i64> =
            rows.iter().filter(|(_, _, stored, _)| stored.is_some()).map(|(_, id, ..)| *id).collect();
        let results: Vec<Value> = rows
            .iter()
            .map(|(seq, id, stored, rev)| {
                let changes = json!([{ "rev": Self::feed_rev(*id, *rev) }]);
                match stored {
                    Some(stored) => json!({
                        "seq": seq, "id": self.id_text(*id), "changes": changes, "doc": self.feed_render(*id, stored)
                    }),
                    None => json!({ "seq": seq, "id": self.id_text(*id), "changes": changes, "deleted": true }),
                }
            })
            .collect();
        inner.rows_served += results.len();
        let body = json!({ "results": results, "last_seq": last });
        Ok(self.list_answer(inner, &body, Vec::new(), &ids))
    }

    fn feed_list(&self, inner: &mut Inner, query: &[(String, String)]) -> Result<Response, Refusal> {
        let offset = self.number_param(query, "offset", 0, 0..=u64::MAX)?;
        let limit = self.number_param(query, "limit", 100, 1..=1000)?;
        let listed: Vec<(i64, &Stored)> = inner
            .records
            .iter()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .map(|(id, stored)| (*id, stored))
            .collect();
        let ids: Vec<i64> = listed.iter().map(|(id, _)| *id).collect();
        let rows: Vec<Value> = listed.iter().map(|(id, stored)| self.feed_render(*id, stored)).collect();
        let body = json!({ "total_rows": inner.records.len(), "offset": offset, "rows": rows });
        Ok(self.list_answer(inner, &body, Vec::new(), &ids))
    }

    /// The 404 of a document that is not there: `deleted` or `missing`.
    fn feed_missing(&self, inner: &Inner, id: Option<i64>) -> Response {
        let deleted = id.is_some_and(|id| inner.tombstones.contains_key(&id));
        self.error(StatusCode::NOT_FOUND, "not_found", if deleted { "deleted" } else { "missing" })
    }

    fn feed_get(&self, inner: &mut Inner, id: Option<i64>) -> Response {
        let Some((id, stored)) = id.and_then(|id| inner.records.get(&id).map(|stored| (id, stored))) else {
            return self.feed_missing(inner, id);
        };
        let body = self.feed_render(id, stored);
        let mut response = self.json(StatusCode::OK, &body);
        set_header(&mut response, "etag", &format!("\"{}\"", Self::feed_rev(id, stored.rev)));
        self.after_read(inner, id);
        response
    }

    /// The revision a write names: `_rev` in its body, `?rev=`, or `If-Match`.
    fn feed_named_rev(request: &Request<'_>, body: Option<&Map<String, Value>>) -> Option<String> {
        body.and_then(|body| body.get("_rev"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| param(&request.query, "rev").map(str::to_owned))
            .or_else(|| {
                request
                    .headers
                    .get(header::IF_MATCH)
                    .and_then(|value| value.to_str().ok())
                    .map(|tag| tag.trim().trim_matches('"').to_owned())
            })
    }

    fn feed_conflict(&self) -> Response {
        self.error(StatusCode::CONFLICT, "conflict", "Document update conflict.")
    }

    fn feed_ok(&self, status: StatusCode, id: i64, rev: u64) -> Response {
        self.json(status, &json!({ "ok": true, "id": self.id_text(id), "rev": Self::feed_rev(id, rev) }))
    }

    fn feed_fields(&self, inner: &Inner, request: &Request<'_>) -> Result<Map<String, Value>, Refusal> {
        let body = self.api_body(request)?;
        let fields: Map<String, Value> =
            body.into_iter().filter(|(key, _)| key != "_id" && key != "_rev").collect();
        if self.api_email_refused(inner, &fields) {
            return Err(Box::new(self.error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "email: Enter a valid email address.",
            )));
        }
        Ok(fields)
    }

    fn feed_create(&self, inner: &mut Inner, request: &Request<'_>) -> Response {
        let fields = match self.feed_fields(inner, request) {
            Ok(fields) => fields,
            Err(refusal) => return *refusal,
        };
        self.created(inner, fields, |id, stored| self.feed_ok(StatusCode::CREATED, id, stored.rev))
    }

    fn feed_put(&self, inner: &mut Inner, request: &Request<'_>, id: Option<i64>) -> Response {
        let Some((id, stored)) = id.and_then(|id| inner.records.get(&id).map(|stored| (id, stored))) else {
            return self.feed_missing(inner, id);
        };
        let body = match self.api_body(request) {
            Ok(body) => body,
            Err(refusal) => return *refusal,
        };
        if Self::feed_named_rev(request, Some(&body)) != Some(Self::feed_rev(id, stored.rev)) {
            return self.feed_conflict();
        }
        let fields = match self.feed_fields(inner, request) {
            Ok(fields) => fields,
            Err(refusal) => return *refusal,
        };
        let now = inner.now;
        let Some(stored) = inner.records.get_mut(&id) else { return self.feed_missing(inner, Some(id)) };
        stored.fields = fields;
        stored.modified = now;
        inner.bump(id);
        *inner.writes.entry(id).or_default() += 1;
        self.feed_ok(StatusCode::CREATED, id, inner.records[&id].rev)
    }

    fn feed_delete(&self, inner: &mut Inner, request: &Request<'_>, id: Option<i64>) -> Response {
        let Some((id, stored)) = id.and_then(|id| inner.records.get(&id).map(|stored| (id, stored))) else {
            return self.feed_missing(inner, id);
        };
        if Self::feed_named_rev(request, None) != Some(Self::feed_rev(id, stored.rev)) {
            return self.feed_conflict();
        }
        inner.remove(id);
        *inner.writes.entry(id).or_default() += 1;
        let rev = inner.tombstones[&id].1;
        self.feed_ok(StatusCode::OK, id, rev)
    }
}

/// What a request's path names.
enum Target {
    /// The collection endpoint.
    Collection,
    /// One record's endpoint, with its id when it is one the style makes.
    Item(Option<i64>),
    /// Nothing this API serves.
    Unknown,
}

/// An answer that ends a request before its handler is done: a refusal of its parameters,
/// body or preconditions (boxed, as a `Response` is large and refusals are the rare path).
type Refusal = Box<Response>;

/// One request, as the API handlers see it.
struct Request<'a> {
    method: &'a Method,
    path: &'a str,
    query: Vec<(String, String)>,
    headers: &'a HeaderMap,
    body: &'a [u8],
}

/// Why a request's credentials were refused.
#[derive(Clone, Copy)]
enum AuthFailure {
    Missing,
    Wrong,
}

fn check_auth(auth: &Auth, headers: &HeaderMap, query: &[(String, String)]) -> Result<(), AuthFailure> {
    let header_text = |name: &str| headers.get(name).map(|value| value.to_str().unwrap_or_default());
    let scheme = |scheme: &str, expected: &str| -> Result<(), AuthFailure> {
        let given = header_text("authorization").ok_or(AuthFailure::Missing)?;
        match given.split_once(' ') {
            Some((name, value)) if name.eq_ignore_ascii_case(scheme) && value.trim() == expected => Ok(()),
            _ => Err(AuthFailure::Wrong),
        }
    };
    let exact = |given: Option<&str>, expected: &str| match given {
        None => Err(AuthFailure::Missing),
        Some(given) if given == expected => Ok(()),
        Some(_) => Err(AuthFailure::Wrong),
    };
    match auth {
        Auth::Basic { user, password } => scheme("Basic", &STANDARD.encode(format!("{user}:{password}"))),
        Auth::Bearer(token) => scheme("Bearer", token),
        Auth::Header { name, value } => exact(header_text(name), value),
        Auth::Query { name, value } => exact(param(query, name), value),
    }
}

// ---------------------------------------------------------------------------------------------
// WordPress fields
// ---------------------------------------------------------------------------------------------

/// The format of WordPress's times: no offset.
const WP_TIME: &str = "%Y-%m-%dT%H:%M:%S";
/// The statuses a listing may ask for (besides `any`).
const WP_STATUSES: [&str; 6] = ["publish", "future", "draft", "pending", "private", "trash"];
/// The statuses a write may set.
const WP_WRITE_STATUSES: [&str; 5] = ["publish", "future", "draft", "pending", "private"];

fn wp_new_fields(status: &str) -> Map<String, Value> {
    let mut fields = Map::new();
    fields.insert("title".to_owned(), Value::from(""));
    fields.insert("status".to_owned(), Value::from(status));
    fields.insert("meta".to_owned(), Value::Object(Map::new()));
    fields
}

/// A stored WordPress field that is a string (`title`, `status`).
fn wp_field<'a>(stored: &'a Stored, name: &str) -> &'a str {
    stored.fields.get(name).and_then(Value::as_str).unwrap_or_default()
}

/// A written title: a string or `{"raw": ..}`.
fn wp_title(title: &Value) -> Option<String> {
    match title {
        Value::String(raw) => Some(raw.clone()),
        Value::Object(object) => object.get("raw").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

/// A person's record or patch as write parameters: `title`, `status` and `meta` are the
/// post's, every other key a meta key.
fn wp_person_params(patch: &Map<String, Value>) -> Map<String, Value> {
    let mut params = Map::new();
    let mut meta = Map::new();
    for (key, value) in patch {
        match (key.as_str(), value) {
            ("title" | "status", _) => {
                params.insert(key.clone(), value.clone());
            }
            ("meta", Value::Object(keys)) => meta.extend(keys.clone()),
            _ => {
                meta.insert(key.clone(), value.clone());
            }
        }
    }
    params.insert("meta".to_owned(), Value::Object(meta));
    params
}

/// Applies validated write parameters to a post's fields.
fn wp_apply(fields: &mut Map<String, Value>, params: &Map<String, Value>) {
    if let Some(title) = params.get("title").and_then(wp_title) {
        fields.insert("title".to_owned(), Value::String(title));
    }
    if let Some(status) = params.get("status").and_then(Value::as_str) {
        fields.insert("status".to_owned(), Value::from(status));
    }
    if let Some(Value::Object(changes)) = params.get("meta") {
        let meta = fields.entry("meta").or_insert_with(|| Value::Object(Map::new()));
        if !meta.is_object() {
            *meta = Value::Object(Map::new());
        }
        if let Value::Object(meta) = meta {
            for (key, value) in changes {
                if value.is_null() {
                    meta.remove(key);
                } else {
                    meta.insert(key.clone(), value.clone());
                }
            }
        }
    }
}

/// The reason a meta object's email is refused, when it is.
fn wp_invalid_email(meta: &Map<String, Value>) -> Option<String> {
    if meta.get("email").is_some_and(|email| !plausible_email_value(email)) {
        return Some("meta.email is not a valid email.".to_owned());
    }
    let contacts = meta.get("contact_info").and_then(Value::as_array)?;
    contacts.iter().enumerate().find_map(|(index, contact)| {
        let is_email = contact.get("type").and_then(Value::as_str) == Some("email");
        let value = contact.get("value").unwrap_or(&Value::Null);
        (is_email && !plausible_email_value(value))
            .then(|| format!("meta.contact_info[{index}][value] is not a valid email."))
    })
}

/// A title as WordPress renders it: `&`, `<` and `>` escaped.
fn wp_texturize(title: &str) -> String {
    title.replace('&', "&#038;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A post's slug: the title in lower case, words joined by `-` (the id when it has none).
fn slug_of(title: &str, id: i64) -> String {
    let words: Vec<String> = title
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect();
    if words.is_empty() { id.to_string() } else { words.join("-") }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// DRF's page size when the request names none.
const DRF_PAGE_SIZE: u64 = 50;
/// DRF's `max_page_size`.
const DRF_MAX_PAGE_SIZE: u64 = 1000;
/// The cursor style's UUIDs: this prefix and the id in 12 hexadecimal digits.
const UUID_PREFIX: &str = "5e1f0c2a-7d4b-4c39-9a61-";

/// The last value of a query parameter (PHP and Django both take the last).
fn param<'q>(query: &'q [(String, String)], name: &str) -> Option<&'q str> {
    query.iter().rev().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
}

/// `query` with `page` set to `page` (added at the end when it was not there).
fn with_page(query: &[(String, String)], page: u64) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = query.iter().filter(|(name, _)| name != "page").cloned().collect();
    pairs.push(("page".to_owned(), page.to_string()));
    pairs
}

/// Percent-encodes a query (everything but RFC 3986's unreserved characters).
fn encode_query(pairs: &[(String, String)]) -> String {
    let mut out = String::new();
    for (index, (name, value)) in pairs.iter().enumerate() {
        if index > 0 {
            out.push('&');
        }
        percent_encode(&mut out, name);
        out.push('=');
        percent_encode(&mut out, value);
    }
    out
}

fn percent_encode(out: &mut String, text: &str) {
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

fn parse_digits(text: &str) -> Option<i64> {
    (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())).then(|| text.parse().ok()).flatten()
}

/// An instant in ISO 8601 / RFC 3339: with `Z` or an offset, or without (then read in `naive`).
fn parse_instant(text: &str, naive: &TimeZone) -> Option<Timestamp> {
    let text = text.trim();
    if let Ok(t) = text.parse::<Timestamp>() {
        return Some(t);
    }
    let civil = text.parse::<jiff::civil::DateTime>().ok()?;
    civil.to_zoned(naive.clone()).ok().map(|zoned| zoned.timestamp())
}

fn format_time(t: Timestamp, zone: &TimeZone, format: &str) -> String {
    t.to_zoned(zone.clone()).strftime(format).to_string()
}

/// An email value a write may carry: a plausible address, or empty or `null` (cleared).
fn plausible_email_value(email: &Value) -> bool {
    match email {
        Value::Null => true,
        Value::String(text) => text.is_empty() || plausible_email(text),
        _ => false,
    }
}

/// A strong ETag: a quoted hash of the record as answered.
fn etag_of(record: &Value) -> String {
    let mut hasher = DefaultHasher::new();
    record.to_string().hash(&mut hasher);
    format!("\"{:016x}\"", hasher.finish())
}

/// The cursor style's cursor: the position `(modified second, id)` in hexadecimal.
fn encode_cursor(second: i64, id: i64) -> String {
    let mut out = String::new();
    for byte in format!("{second}:{id}").bytes() {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

fn decode_cursor(text: &str) -> Option<(i64, i64)> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    let bytes: Option<Vec<u8>> =
        (0..text.len()).step_by(2).map(|at| u8::from_str_radix(&text[at..at + 2], 16).ok()).collect();
    let plain = String::from_utf8(bytes?).ok()?;
    let (second, id) = plain.split_once(':')?;
    Some((second.parse().ok()?, id.parse().ok()?))
}

/// Whether a request's body is declared JSON (`application/json`, or `+json`).
fn is_json(headers: &HeaderMap) -> bool {
    let Some(content_type) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

/// RFC 7396 JSON merge patch: objects merge, `null` deletes, anything else replaces.
fn merge_patch(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(inner_patch) => {
                let entry = target.entry(key.clone()).or_insert_with(|| Value::Object(Map::new()));
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                }
                if let Value::Object(inner) = entry {
                    merge_patch(inner, inner_patch);
                }
            }
            _ => {
                target.insert(key.clone(), value.clone());
            }
        }
    }
}

fn bytes_response(status: StatusCode, bytes: Vec<u8>, content_type: &'static str) -> Response {
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Sets a header (`name` in lower case); a value that cannot be a header is left out.
fn set_header(response: &mut Response, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(HeaderName::from_static(name), value);
    }
}

// ---------------------------------------------------------------------------------------------
// The server: its thread, listener and connections
// ---------------------------------------------------------------------------------------------

/// What serves the fixture's listener: its router, with connections that can be dropped.
fn serve(shared: Arc<Shared>) -> Serve {
    Arc::new(move |listener| {
        let app = Router::new().fallback(handle).with_state(Arc::clone(&shared));
        Box::pin(async move {
            let server = axum::serve(
                FixtureListener(listener),
                app.into_make_service_with_connect_info::<Connection>(),
            );
            let _ = server.into_future().await;
        })
    })
}

/// Every request goes through here: logged, delayed, faulted, then answered by the style.
async fn handle(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(connection): ConnectInfo<Connection>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (serial, delay, fault) = shared.arrive(&method, &uri, &headers, &body);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let response = match fault {
        Fault::Drop => {
            connection.close();
            shared.finish(serial, None);
            // Never sent: the connection refuses to write it.
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        Fault::TooMany(retry_after) => shared.too_many_response(retry_after),
        Fault::Fail(status) => shared.failure_response(status),
        Fault::None => shared.answer(&method, &uri, &headers, &body),
    };
    shared.finish(serial, Some(response.status().as_u16()));
    response
}

/// The listener: a TCP listener whose connections can be closed from a handler.
struct FixtureListener(tokio::net::TcpListener);

impl Listener for FixtureListener {
    type Io = FixtureStream;
    type Addr = Connection;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, _)) => {
                    // Small answers go out at once rather than waiting for an acknowledgement.
                    let _ = stream.set_nodelay(true);
                    let connection = Connection::default();
                    return (FixtureStream { stream, closed: Arc::clone(&connection.closed) }, connection);
                }
                // Out of file descriptors or a connection reset before it was accepted.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr().map(|_| Connection::default())
    }
}

/// What a handler knows of its connection: a switch that closes it.
#[derive(Clone, Debug, Default)]
struct Connection {
    closed: Arc<AtomicBool>,
}

impl Connection {
    /// Closes the connection: the answer being prepared is never written.
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }
}

impl Connected<IncomingStream<'_, FixtureListener>> for Connection {
    fn connect_info(stream: IncomingStream<'_, FixtureListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// A TCP connection that reads as ended and refuses writes once it was closed, so the
/// server drops it without writing an answer.
struct FixtureStream {
    stream: tokio::net::TcpStream,
    closed: Arc<AtomicBool>,
}

impl FixtureStream {
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

impl AsyncRead for FixtureStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.is_closed() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for FixtureStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.is_closed() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed by the fixture",
            )));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.is_closed() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed by the fixture",
            )));
        }
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
