//! A fixture member-administration web site for the browser connector's tests: an in-process
//! imitation of a federation's member admin that has no API, only server-rendered pages and
//! forms behind a login.
//!
//! What it imitates, and the traps a client meets there:
//!
//! - A login form; every other page without a valid session cookie is redirected (303) to
//!   `/login?next=<the page>`. Sessions can be made to expire after a number of requests
//!   ([`SiteServer::expire_sessions_after`]) or all at once
//!   ([`SiteServer::expire_all_sessions`]). A form posted with an expired session is not
//!   applied: it is answered with the login redirect and lost, as in the real system.
//! - A paged member list and a CSV export of every member.
//! - Three pages per member (`general`, `other`, `financial`), each showing its values
//!   read-only with an Edit button. The form is in the page but `hidden` and its inputs
//!   `disabled`; a click on Edit reveals and enables it only after a script delay
//!   ([`SiteServer::set_edit_delay`]), so a client must wait for the form rather than for the
//!   page. A save redirects (303) back to the page, which shows a "Saved" notice once.
//! - Server-side validation of e-mail addresses: an invalid one re-renders the form with an
//!   error (status 200, as most admin applications answer) and saves nothing.
//! - Faults: refused connections (the listener stops and comes back on the same port, with
//!   its data), and slow answers.
//! - Options that stop being convenient: a form that is not in the page until Edit builds it
//!   from a `<template>` or fetches it ([`SiteServer::set_form_mode`]); numeric ids in the
//!   addresses that differ from the relation code ([`SiteServer::use_numeric_ids`]); an
//!   export lacking columns ([`SiteServer::leave_out_of_export`]); modification times on a
//!   local clock to the minute, `06-01-2026 14:03` ([`SiteServer::show_local_times`]); row
//!   versions that refuse a stale form ([`SiteServer::use_row_versions`]) and a person who
//!   saves while a form is open ([`SiteServer::edit_before_next_save`]); a note column that
//!   keeps less than it was sent ([`SiteServer::keep_notes_up_to`]); a field left off one
//!   member's pages ([`SiteServer::leave_off_page`]); the financial block spelled `Ja`/`Nee`
//!   in the export, the view and a select ([`SiteServer::spell_block`]).
//!
//! The server runs on its own thread, with its own single-threaded tokio runtime, so it
//! answers whatever runtime a test uses (a `#[tokio::test]` runs on one thread) and keeps
//! answering while the test awaits or blocks.
//!
//! # Pages
//!
//! Every page is HTML5 with no external assets. Pages behind the login start with
//! `<nav id="site-nav">` holding `a#nav-members` and `a#logout`.
//!
//! - `GET /login[?next=URL]`: `form#login` (`method="post" action="/login"`) with
//!   `input#username` (`name="username"`), `input#password` (`name="password"`), a hidden
//!   `input[name="next"]` and `button#login-submit`. `POST /login` with the right credentials
//!   sets `session=<token>; HttpOnly; Path=/` and redirects (303) to `next` (a path on this
//!   site) or `/members`; with wrong ones it shows the form again (200) with
//!   `div.error#login-error` "Invalid username or password". `GET /logout` ends the session
//!   and redirects to `/login`.
//! - `GET /members[?page=N]` (pages from 1; [`SiteServer::set_page_size`], 25 by default):
//!   `table#members > tbody > tr.member[data-id=CODE]` with `td.relation-code` (the code),
//!   `td.name` (first and last name, a link to the member's general page), `td.email` and
//!   `td.modified`; `a#prev-page` and `a#next-page` (`href="/members?page=N+1"`) when there
//!   are such pages; `span#total` holds the number of members; `a#export` links to the CSV.
//!   The list is in insertion order.
//! - `GET /members/export.csv`: `Content-Type: text/csv; charset=utf-8`,
//!   `Content-Disposition: attachment; filename="members.csv"`; a header row
//!   ([`EXPORT_COLUMNS`]) `relation_code, first_name, last_name, email, email2, mobile, phone,
//!   note, remarks, financial_block, modified`, `financial_block` as `0`/`1`, `modified` in
//!   UTC with milliseconds (`2026-01-01T10:00:00.123Z`).
//! - `GET /member/{CODE}/{general|other|financial}`: `main#member[data-id=CODE]` with
//!   `h1#member-name`, `span#view-relation_code`, `span#view-modified` (as in the CSV), tabs
//!   `a#tab-general`, `a#tab-other`, `a#tab-financial`; after a save `div.flash#saved`
//!   "Saved" (once); `section#view` with the read-only values and `button#edit`
//!   (`data-delay-ms` holds the delay); `form#edit-form` (`method="post"`, `action` the page's
//!   own path, `hidden`) holding the inputs and `button#save`, all `disabled` until the Edit
//!   script ran; when it ran, the view is hidden. Each input's `id` and `name` are the
//!   field's name.
//!   - `general`: read-only `span#view-first_name`, `span#view-last_name`; `span#view-email`,
//!     `span#view-email2`, `span#view-mobile`, `span#view-phone`, and text inputs `#email`,
//!     `#email2`, `#mobile`, `#phone`.
//!   - `other`: `span#view-note` and `input#note` (text); `span#view-remarks` (with
//!     `white-space: pre-wrap`) and `textarea#remarks`.
//!   - `financial`: a disabled checkbox `input#view-financial_block`, `checked` when the
//!     block is on, and the checkbox `input#financial_block` (`value="1"`).
//!
//!   `POST` to a page saves that page's fields only: a text field absent from the form is
//!   left as it is, a checkbox absent from the form is unchecked (browsers send only checked
//!   boxes). Values are stored as received, untrimmed; browsers send a textarea's line
//!   breaks as CRLF and the site keeps them so. Every save moves the member's `modified`
//!   time, even when nothing changed, and redirects (303) to the page. An `email` or `email2`
//!   that is not empty and not a plausible address shows the form again (200), open, with
//!   the values posted and `div.error#form-error` "E-mail address is not valid: VALUE";
//!   nothing is saved. An unknown member is a 404 page with `h1#not-found`.
//!
//! Modification times are the real time in UTC, in milliseconds (shifted by
//! [`SiteServer::skew_clock`]); a member's time always moves forward by at least a
//! millisecond, so two edits of one member are always told apart.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::future::IntoFuture;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::{self, HeaderValue};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use fieldsync_connector::loopback::{LoopbackServer, RequestJournal, Serve};
use fieldsync_connector::testkit::plausible_email;
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

/// The user name the site accepts.
const USER: &str = "club-admin";
/// The password the site accepts.
const PASSWORD: &str = "Veld-2026-geheim";
/// Members per page of the list unless [`SiteServer::set_page_size`] says otherwise.
const DEFAULT_PAGE_SIZE: usize = 25;
/// The Edit button's delay unless [`SiteServer::set_edit_delay`] says otherwise.
const DEFAULT_EDIT_DELAY: Duration = Duration::from_millis(300);

/// One of a member's three pages, each with its own form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Page {
    /// `/member/{id}/general`: `email`, `email2`, `mobile`, `phone` (and the name, read-only).
    General,
    /// `/member/{id}/other`: `note` (a text input) and `remarks` (a textarea).
    Other,
    /// `/member/{id}/financial`: `financial_block` (a checkbox).
    Financial,
}

impl Page {
    /// Every page, in the order of the tabs.
    pub const ALL: [Page; 3] = [Page::General, Page::Other, Page::Financial];

    /// The last segment of the page's path: `general`, `other` or `financial`.
    pub fn name(self) -> &'static str {
        match self {
            Page::General => "general",
            Page::Other => "other",
            Page::Financial => "financial",
        }
    }

    /// The fields the page's form saves.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Page::General => &["email", "email2", "mobile", "phone"],
            Page::Other => &["note", "remarks"],
            Page::Financial => &["financial_block"],
        }
    }

    /// The page whose form saves `field`, when one does.
    pub fn of(field: &str) -> Option<Page> {
        Page::ALL.into_iter().find(|page| page.fields().contains(&field))
    }

    /// The page's path for the member `id`, such as `/member/KNVB0001/general`.
    pub fn path(self, id: &str) -> String {
        format!("/member/{id}/{}", self.name())
    }

    fn parse(segment: &str) -> Option<Page> {
        Page::ALL.into_iter().find(|page| page.name() == segment)
    }

    fn title(self) -> &'static str {
        match self {
            Page::General => "General",
            Page::Other => "Other",
            Page::Financial => "Financial",
        }
    }
}

/// A member as the site holds it. Its id is its relation code: the member's pages are at
/// `/member/{relation_code}/...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The relation code, such as `KNVB0001`: the member's id on the site.
    pub relation_code: String,
    /// The first name (read-only on the site).
    pub first_name: String,
    /// The last name (read-only on the site).
    pub last_name: String,
    /// The e-mail address (`general`).
    pub email: String,
    /// The second e-mail address (`general`).
    pub email2: String,
    /// The mobile number (`general`).
    pub mobile: String,
    /// The phone number (`general`).
    pub phone: String,
    /// A free text field on one line (`other`).
    pub note: String,
    /// A free text field on several lines (`other`).
    pub remarks: String,
    /// Whether financial transfers are blocked (`financial`).
    pub financial_block: bool,
    /// When the member was last changed, by a person or a save (milliseconds, UTC).
    pub modified: Timestamp,
    /// The site's own number for the member (`101`, `108`, … — never the relation code's
    /// digits), its id in the pages' addresses under [`SiteServer::use_numeric_ids`].
    pub number: u64,
    /// The row version, one more with every change (shown in the form under
    /// [`SiteServer::use_row_versions`]).
    pub version: u64,
}

impl Member {
    /// A field's value as JSON: a string, or a boolean for `financial_block`; `modified` as in
    /// the CSV export. `None` for a name that is not a field.
    pub fn value(&self, field: &str) -> Option<Value> {
        let text = match field {
            "relation_code" => &self.relation_code,
            "first_name" => &self.first_name,
            "last_name" => &self.last_name,
            "email" => &self.email,
            "email2" => &self.email2,
            "mobile" => &self.mobile,
            "phone" => &self.phone,
            "note" => &self.note,
            "remarks" => &self.remarks,
            "financial_block" => return Some(Value::Bool(self.financial_block)),
            "modified" => return Some(Value::String(format_modified(self.modified))),
            _ => return None,
        };
        Some(Value::String(text.clone()))
    }

    /// The text field `field`, for writing; `None` for `financial_block`, `relation_code`,
    /// `modified` and names that are not fields.
    fn text_mut(&mut self, field: &str) -> Option<&mut String> {
        Some(match field {
            "first_name" => &mut self.first_name,
            "last_name" => &mut self.last_name,
            "email" => &mut self.email,
            "email2" => &mut self.email2,
            "mobile" => &mut self.mobile,
            "phone" => &mut self.phone,
            "note" => &mut self.note,
            "remarks" => &mut self.remarks,
            _ => return None,
        })
    }

    /// Sets a field from a JSON value as the test API gives it.
    ///
    /// # Panics
    ///
    /// When `field` is not a field a person can edit, or `value` does not fit it.
    fn set(&mut self, field: &str, value: &Value) {
        if field == "financial_block" {
            self.financial_block = match value {
                Value::Bool(on) => *on,
                Value::Number(n) if n.as_u64() == Some(0) => false,
                Value::Number(n) if n.as_u64() == Some(1) => true,
                Value::String(s) if s == "0" => false,
                Value::String(s) if s == "1" => true,
                other => panic!("financial_block is a boolean (or 0/1), not {other}"),
            };
            return;
        }
        let Some(slot) = self.text_mut(field) else { panic!("the site has no editable field {field:?}") };
        *slot = match value {
            Value::Null => String::new(),
            Value::String(text) => text.clone(),
            other => panic!("{field} is text, not {other}"),
        };
    }

    fn full_name(&self) -> String {
        format!("{} {}", self.first_name, self.last_name).trim().to_owned()
    }
}

/// One request the site received, as [`SiteServer::requests`] lists them.
#[derive(Clone, Debug)]
pub struct RequestLog {
    /// The method, such as `GET`.
    pub method: String,
    /// The path and query, such as `/members?page=2`.
    pub path: String,
    /// Whether the request was answered as a logged-in user: it carried a valid session
    /// cookie that had not run out. Always false for `/login` and `/logout`.
    pub session: bool,
    /// The fields of a form that was posted, in order (the password's value is `***`).
    pub form: Vec<(String, String)>,
    /// Whether this was a posted form lost to a missing or expired session (answered with
    /// the login redirect, not applied).
    pub lost: bool,
    /// When the request arrived.
    pub at: Instant,
    /// The status answered; `None` while the answer is on its way.
    pub status: Option<u16>,
}

/// The fixture admin site on `127.0.0.1`, with members, sessions and faults the test
/// controls. Dropping it stops the server.
pub struct SiteServer {
    shared: Arc<Shared>,
    server: LoopbackServer,
}

impl SiteServer {
    /// Starts the site on an ephemeral port, with no members.
    pub async fn start() -> SiteServer {
        let listener = LoopbackServer::listener();
        let addr = listener.local_addr().expect("the address of the site's listener");
        let shared = Arc::new(Shared {
            base: format!("http://{addr}"),
            inner: Mutex::new(Inner {
                members: Vec::new(),
                next_code: 1,
                sessions: HashMap::new(),
                saves: BTreeMap::new(),
                lost_posts: 0,
                logins: 0,
                failed_logins: 0,
                log: RequestJournal::default(),
                page_size: DEFAULT_PAGE_SIZE,
                edit_delay: DEFAULT_EDIT_DELAY,
                expire_after: None,
                reject_invalid_email: true,
                slow: Duration::ZERO,
                skew: SignedDuration::ZERO,
                form_mode: FormMode::Hidden,
                numeric_ids: false,
                export_without: Vec::new(),
                local_times: None,
                row_versions: false,
                person_edits: Vec::new(),
                note_limit: None,
                left_off: Vec::new(),
                moved_refusals: 0,
                block_words: None,
            }),
        });
        let server = LoopbackServer::start("site-server", listener, serve(Arc::clone(&shared)));
        SiteServer { shared, server }
    }

    /// The site's URL without a path, such as `http://127.0.0.1:41234`.
    pub fn base_url(&self) -> String {
        self.shared.base.clone()
    }

    /// The URL of a member's page, such as `http://127.0.0.1:41234/member/KNVB0001/other`.
    pub fn member_url(&self, id: &str, page: Page) -> String {
        format!("{}{}", self.shared.base, page.path(id))
    }

    /// The user name and password the login form accepts.
    pub fn credentials(&self) -> (String, String) {
        (USER.to_owned(), PASSWORD.to_owned())
    }

    /// Adds a member as a person would, modified now, and returns its id (its relation code).
    ///
    /// `fields` is a JSON object with any of `relation_code`, `first_name`, `last_name`,
    /// `email`, `email2`, `mobile`, `phone`, `note`, `remarks` (strings; `null` is empty) and
    /// `financial_block` (a boolean, or 0/1). Fields left out are empty (unchecked); without
    /// a `relation_code` the site assigns `KNVB0001`, `KNVB0002`, and so on.
    ///
    /// # Panics
    ///
    /// When `fields` is not an object, has another key or a value that does not fit, or its
    /// relation code is empty, not letters and digits, or already taken.
    pub fn insert(&self, fields: Value) -> String {
        let Value::Object(fields) = fields else { panic!("a site member is a JSON object") };
        let mut inner = self.shared.lock();
        let code = match fields.get("relation_code") {
            Some(Value::String(code)) => code.clone(),
            Some(other) => panic!("relation_code is a string, not {other}"),
            None => loop {
                let code = format!("KNVB{:04}", inner.next_code);
                inner.next_code += 1;
                if inner.position(&code).is_none() {
                    break code;
                }
            },
        };
        assert!(
            !code.is_empty() && code.bytes().all(|b| b.is_ascii_alphanumeric()),
            "a relation code is letters and digits, not {code:?}"
        );
        assert!(inner.position(&code).is_none(), "the relation code {code} is taken");
        let mut member = Member {
            relation_code: code.clone(),
            first_name: String::new(),
            last_name: String::new(),
            email: String::new(),
            email2: String::new(),
            mobile: String::new(),
            phone: String::new(),
            note: String::new(),
            remarks: String::new(),
            financial_block: false,
            modified: inner.now(),
            number: 101 + 7 * inner.members.len() as u64,
            version: 1,
        };
        for (field, value) in &fields {
            if field != "relation_code" {
                member.set(field, value);
            }
        }
        inner.members.push(member);
        code
    }

    /// Edits one field of a member as a person would (any field but `relation_code` and
    /// `modified`), moving its modification time; this is not counted as a save (see
    /// [`SiteServer::saves`]).
    ///
    /// # Panics
    ///
    /// When the member does not exist, or the field or value do not fit (see
    /// [`SiteServer::insert`]).
    pub fn update(&self, id: &str, field: &str, value: impl Into<Value>) {
        let mut inner = self.shared.lock();
        let at = inner.position(id).unwrap_or_else(|| panic!("no site member {id} to update"));
        let value = value.into();
        let mut member = inner.members[at].clone();
        member.set(field, &value);
        member.modified = inner.touch(&member);
        member.version += 1;
        inner.members[at] = member;
    }

    /// Removes a member as a person would; false when it did not exist.
    pub fn remove(&self, id: &str) -> bool {
        let mut inner = self.shared.lock();
        let Some(at) = inner.position(id) else { return false };
        inner.members.remove(at);
        true
    }

    /// A member as the site holds it now, when it exists.
    pub fn member(&self, id: &str) -> Option<Member> {
        let inner = self.shared.lock();
        inner.position(id).map(|at| inner.members[at].clone())
    }

    /// Every member, in the order of the list.
    pub fn members(&self) -> Vec<Member> {
        self.shared.lock().members.clone()
    }

    /// How many forms the site saved for a member (edits through [`SiteServer::update`] are
    /// not counted; forms refused by validation or lost to an expired session neither).
    pub fn saves(&self, id: &str) -> usize {
        self.shared.lock().saves.get(id).copied().unwrap_or(0)
    }

    /// How many forms the site saved, for all members.
    pub fn total_saves(&self) -> usize {
        self.shared.lock().saves.values().sum()
    }

    /// How many posted forms were answered with the login redirect instead of being applied
    /// (no session, or one that expired). `POST /login` is not counted.
    pub fn lost_posts(&self) -> usize {
        self.shared.lock().lost_posts
    }

    /// How many logins succeeded.
    pub fn logins(&self) -> usize {
        self.shared.lock().logins
    }

    /// How many logins were refused for wrong credentials.
    pub fn failed_logins(&self) -> usize {
        self.shared.lock().failed_logins
    }

    /// The requests received since the start (or [`SiteServer::clear_requests`]), in the
    /// order they arrived.
    pub fn requests(&self) -> Vec<RequestLog> {
        self.shared.lock().log.entries().to_vec()
    }

    /// Forgets the requests received so far.
    pub fn clear_requests(&self) {
        self.shared.lock().log.clear();
    }

    /// Sets the number of members on a page of the list.
    ///
    /// # Panics
    ///
    /// When `size` is 0.
    pub fn set_page_size(&self, size: usize) {
        assert!(size > 0, "a page holds at least one member");
        self.shared.lock().page_size = size;
    }

    /// Sets how long the Edit button's script waits before it reveals and enables the form.
    pub fn set_edit_delay(&self, delay: Duration) {
        self.shared.lock().edit_delay = delay;
    }

    /// From now on a session is valid for `requests` requests after its login (counting
    /// every page and form but `/login` and `/logout`); the next one is answered as if it had
    /// no session, and the session is gone. `None` (the default): sessions never expire.
    pub fn expire_sessions_after(&self, requests: Option<usize>) {
        self.shared.lock().expire_after = requests;
    }

    /// Ends every session now: the next request of each is redirected to the login.
    pub fn expire_all_sessions(&self) {
        self.shared.lock().sessions.clear();
    }

    /// Whether a form with an `email` or `email2` that is not empty and not a plausible
    /// address is refused (the default) or saved as it is.
    pub fn reject_invalid_email(&self, on: bool) {
        self.shared.lock().reject_invalid_email = on;
    }

    /// Every answer is delayed by `delay`; `Duration::ZERO` ends that.
    pub fn slow(&self, delay: Duration) {
        self.shared.lock().slow = delay;
    }

    /// Shifts the site's clock by `skew` from the real time (later when positive), as a
    /// server whose clock drifts; `SignedDuration::ZERO` ends that.
    pub fn skew_clock(&self, skew: SignedDuration) {
        self.shared.lock().skew = skew;
    }

    /// How a member's page holds its form before Edit is pressed; [`FormMode::Hidden`].
    pub fn set_form_mode(&self, mode: FormMode) {
        self.shared.lock().form_mode = mode;
    }

    /// From now on the pages' addresses, the list's `data-id` and the export's first column
    /// `id` are the members' numbers ([`Member::number`]), not their relation codes.
    pub fn use_numeric_ids(&self) {
        self.shared.lock().numeric_ids = true;
    }

    /// The member's number ([`Member::number`]).
    ///
    /// # Panics
    ///
    /// When there is no such member.
    pub fn number_of(&self, id: &str) -> u64 {
        self.member(id).unwrap_or_else(|| panic!("no site member {id}")).number
    }

    /// Leaves these columns out of the CSV export.
    pub fn leave_out_of_export(&self, columns: &[&str]) {
        self.shared.lock().export_without = columns.iter().map(|column| (*column).to_owned()).collect();
    }

    /// Shows modification times (export, list, pages) as a local clock in `zone` shows them,
    /// to the minute and without a zone: `06-01-2026 14:03`.
    ///
    /// # Panics
    ///
    /// When `zone` is not a time zone.
    pub fn show_local_times(&self, zone: &str) {
        self.shared.lock().local_times = Some(jiff::tz::TimeZone::get(zone).expect("a time zone"));
    }

    /// A modification time as the site shows it.
    pub fn shown_time(&self, time: Timestamp) -> String {
        self.shared.lock().shown_time(time)
    }

    /// From now on each form carries the member's row version (`input[name=version]`), and a
    /// form whose version is no longer the member's is refused with
    /// `div.error.moved#form-error` "This member was changed by someone else since you
    /// opened it." and nothing saved.
    pub fn use_row_versions(&self) {
        self.shared.lock().row_versions = true;
    }

    /// A person edits `field` of member `id` (as [`SiteServer::update`]) just before the
    /// next form posted for that member arrives: an edit made while a form was open.
    pub fn edit_before_next_save(&self, id: &str, field: &str, value: impl Into<Value>) {
        self.shared.lock().person_edits.push((id.to_owned(), field.to_owned(), value.into()));
    }

    /// The site keeps only the first `limit` characters of a saved note and still says
    /// "Saved", as a column too short for what was typed.
    pub fn keep_notes_up_to(&self, limit: usize) {
        self.shared.lock().note_limit = Some(limit);
    }

    /// Member `id`'s pages show neither the input nor the view of `field` (a field the site
    /// offers only for some members).
    pub fn leave_off_page(&self, id: &str, field: &str) {
        self.shared.lock().left_off.push((id.to_owned(), field.to_owned()));
    }

    /// From now on the site spells the financial block in words (`Ja`/`Nee`): the export's
    /// column and the view (`span#view-financial_block`) show them, and the form's input is
    /// `select#financial_block` with the words as its options' values.
    pub fn spell_block(&self, on: &str, off: &str) {
        self.shared.lock().block_words = Some((on.to_owned(), off.to_owned()));
    }

    /// How many forms were refused for a stale row version.
    pub fn moved_refusals(&self) -> usize {
        self.shared.lock().moved_refusals
    }

    /// Stops the server as if it went down: the port refuses connections and every open
    /// connection is closed, answered or not. Members, sessions and settings are kept. Does
    /// nothing when it is already stopped.
    pub fn refuse_connections(&self) {
        self.server.stop();
    }

    /// Listens again on the same port, with everything the site had. Does nothing when it is
    /// running.
    pub fn accept_connections(&self) {
        self.server.restart();
    }
}

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

/// What the server's thread and the test share.
struct Shared {
    /// `http://127.0.0.1:PORT`.
    base: String,
    inner: Mutex<Inner>,
}

/// The members, sessions, settings, counters and log.
struct Inner {
    /// In insertion order, which is the list's order.
    members: Vec<Member>,
    /// The number of the next relation code the site assigns.
    next_code: u64,
    /// By token.
    sessions: HashMap<String, Session>,
    /// Forms saved, per member (kept after a member is removed).
    saves: BTreeMap<String, usize>,
    lost_posts: usize,
    logins: usize,
    failed_logins: usize,
    log: RequestJournal<RequestLog>,
    page_size: usize,
    edit_delay: Duration,
    expire_after: Option<usize>,
    reject_invalid_email: bool,
    slow: Duration,
    skew: SignedDuration,
    form_mode: FormMode,
    numeric_ids: bool,
    export_without: Vec<String>,
    local_times: Option<jiff::tz::TimeZone>,
    row_versions: bool,
    /// Edits a person saves just before the next form of their member arrives.
    person_edits: Vec<(String, String, Value)>,
    /// How many characters of a note the site keeps.
    note_limit: Option<usize>,
    /// Fields whose input and view a member's page does not show: (relation code, field).
    left_off: Vec<(String, String)>,
    /// Forms refused for a stale row version.
    moved_refusals: usize,
    /// The site's own words for the financial block on and off, when it spells it.
    block_words: Option<(String, String)>,
}

/// How a member's page holds its form before Edit is pressed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FormMode {
    /// In the page, `hidden` and its controls `disabled` until Edit's script ran.
    #[default]
    Hidden,
    /// Not in the page: Edit's script builds it from a `<template id="edit-template">` into
    /// `div#form-slot`.
    Template,
    /// Not in the page: Edit's script fetches it from `GET /member/{ID}/{page}/form` (the
    /// current values and version) into `div#form-slot`.
    Fetched,
}

/// A logged-in session.
struct Session {
    /// Requests made with it since its login.
    requests: usize,
    /// The path of a page that shows the "Saved" notice the next time it is shown.
    flash: Option<String>,
}

impl Inner {
    fn position(&self, id: &str) -> Option<usize> {
        self.members.iter().position(|member| member.relation_code == id)
    }

    /// The member whose id in an address is `id`.
    fn locate(&self, id: &str) -> Option<usize> {
        if self.numeric_ids {
            self.members.iter().position(|member| member.number.to_string() == id)
        } else {
            self.position(id)
        }
    }

    /// A member's id in addresses.
    fn url_id(&self, member: &Member) -> String {
        if self.numeric_ids { member.number.to_string() } else { member.relation_code.clone() }
    }

    /// A modification time as the site shows it.
    fn shown_time(&self, time: Timestamp) -> String {
        match &self.local_times {
            Some(zone) => time.to_zoned(zone.clone()).strftime("%d-%m-%Y %H:%M").to_string(),
            None => format_modified(time),
        }
    }

    /// The site's clock, to the millisecond.
    fn now(&self) -> Timestamp {
        let now = Timestamp::now().checked_add(self.skew).expect("a clock within jiff's range");
        Timestamp::from_millisecond(now.as_millisecond()).expect("a valid instant")
    }

    /// The modification time of a change to `member`: now, but at least a millisecond after
    /// its last one.
    fn touch(&self, member: &Member) -> Timestamp {
        let next = member.modified.checked_add(SignedDuration::from_millis(1)).expect("a valid instant");
        self.now().max(next)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Logs a request that just arrived; returns its serial number and the delay to answer.
    fn arrive(&self, method: &Method, uri: &Uri, form: &[(String, String)]) -> (usize, Duration) {
        let mut inner = self.lock();
        let form = form
            .iter()
            .map(|(name, value)| {
                let value = if name == "password" { "***".to_owned() } else { value.clone() };
                (name.clone(), value)
            })
            .collect();
        let serial = inner.log.arrive(RequestLog {
            method: method.to_string(),
            path: path_and_query(uri),
            session: false,
            form,
            lost: false,
            at: Instant::now(),
            status: None,
        });
        (serial, inner.slow)
    }

    /// Records how a request was answered.
    fn finish(&self, serial: usize, status: u16, session: bool, lost: bool) {
        let mut inner = self.lock();
        if let Some(entry) = inner.log.get_mut(serial) {
            entry.status = Some(status);
            entry.session = session;
            entry.lost = lost;
        }
    }

    /// Answers a request; also says whether it had a valid session and whether it was a form
    /// lost for want of one.
    fn answer(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        form: &[(String, String)],
    ) -> (Response, bool, bool) {
        let path = uri.path();
        let query = parse_urlencoded(uri.query().unwrap_or_default());
        let token = session_cookie(headers);
        match path {
            "/login" => return (self.login(method, &query, form), false, false),
            "/logout" => {
                if let Some(token) = token {
                    self.lock().sessions.remove(&token);
                }
                return (redirect("/login"), false, false);
            }
            _ => {}
        }

        let Some(token) = self.authenticate(token) else {
            let lost = *method == Method::POST;
            if lost {
                self.lock().lost_posts += 1;
            }
            // A lost form's page is where the login should lead back to.
            let next = if lost { path.to_owned() } else { path_and_query(uri) };
            return (redirect(&format!("/login?next={}", encode_next(&next))), false, lost);
        };

        let response = if path == "/" {
            if *method == Method::GET { redirect("/members") } else { method_not_allowed() }
        } else if path == "/members" {
            if *method == Method::GET { self.list(&query) } else { method_not_allowed() }
        } else if path == "/members/export.csv" {
            if *method == Method::GET { self.export() } else { method_not_allowed() }
        } else if let Some((id, page, fragment)) = member_path(path) {
            match *method {
                Method::GET if fragment => self.form_fragment(&id, page),
                Method::GET => self.show(&token, &id, page),
                Method::POST if !fragment => self.save(&token, &id, page, form),
                _ => method_not_allowed(),
            }
        } else {
            not_found("No such page.")
        };
        (response, true, false)
    }

    /// The session of `token` when it is valid, counting this request against it.
    fn authenticate(&self, token: Option<String>) -> Option<String> {
        let token = token?;
        let mut inner = self.lock();
        let limit = inner.expire_after;
        let session = inner.sessions.get_mut(&token)?;
        session.requests += 1;
        if limit.is_some_and(|limit| session.requests > limit) {
            inner.sessions.remove(&token);
            return None;
        }
        Some(token)
    }

    fn login(&self, method: &Method, query: &[(String, String)], form: &[(String, String)]) -> Response {
        match *method {
            Method::GET => html(StatusCode::OK, login_page(param(query, "next").unwrap_or_default(), false)),
            Method::POST => {
                let next = param(form, "next").unwrap_or_default();
                let user = param(form, "username").unwrap_or_default();
                let password = param(form, "password").unwrap_or_default();
                let mut inner = self.lock();
                if user != USER || password != PASSWORD {
                    inner.failed_logins += 1;
                    return html(StatusCode::OK, login_page(next, true));
                }
                inner.logins += 1;
                let token = loop {
                    let token = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
                    if !inner.sessions.contains_key(&token) {
                        break token;
                    }
                };
                inner.sessions.insert(token.clone(), Session { requests: 0, flash: None });
                drop(inner);
                // Only a path on this site, so the login cannot lead elsewhere.
                let target = if next.starts_with('/') && !next.starts_with("//") { next } else { "/members" };
                let mut response = redirect(target);
                if let Ok(cookie) = HeaderValue::from_str(&format!("session={token}; HttpOnly; Path=/")) {
                    response.headers_mut().insert(header::SET_COOKIE, cookie);
                }
                response
            }
            _ => method_not_allowed(),
        }
    }

    fn list(&self, query: &[(String, String)]) -> Response {
        let page = match param(query, "page") {
            None => 1,
            Some(text) => match text.parse::<usize>() {
                Ok(page) if page > 0 => page,
                _ => {
                    return html(
                        StatusCode::BAD_REQUEST,
                        error_page("Bad request", "The page is not valid."),
                    );
                }
            },
        };
        let inner = self.lock();
        let size = inner.page_size;
        let total = inner.members.len();
        let mut rows = String::new();
        for member in inner.members.iter().skip((page - 1).saturating_mul(size)).take(size) {
            let url_id = inner.url_id(member);
            let _ = writeln!(
                rows,
                "<tr class=\"member\" data-id=\"{id}\"><td class=\"relation-code\">{code}</td>\
                 <td class=\"name\"><a href=\"{href}\">{name}</a></td><td class=\"email\">{email}</td>\
                 <td class=\"modified\">{modified}</td></tr>",
                id = escape(&url_id),
                code = escape(&member.relation_code),
                href = escape(&Page::General.path(&url_id)),
                name = escape(&member.full_name()),
                email = escape(&member.email),
                modified = inner.shown_time(member.modified),
            );
        }
        drop(inner);
        let mut pager = String::new();
        if page > 1 {
            let _ = writeln!(pager, "<a id=\"prev-page\" href=\"/members?page={}\">Previous</a>", page - 1);
        }
        if page.saturating_mul(size) < total {
            let _ = writeln!(pager, "<a id=\"next-page\" href=\"/members?page={}\">Next</a>", page + 1);
        }
        let body = format!(
            "<main id=\"member-list\">\n<h1>Members</h1>\n\
             <p><span id=\"total\">{total}</span> members, page <span id=\"page\">{page}</span>. \
             <a id=\"export\" href=\"/members/export.csv\">Export (CSV)</a></p>\n\
             <table id=\"members\">\n<thead><tr><th>Relation code</th><th>Name</th><th>E-mail</th>\
             <th>Modified</th></tr></thead>\n<tbody>\n{rows}</tbody>\n</table>\n\
             <nav id=\"pager\">\n{pager}</nav>\n</main>"
        );
        html(StatusCode::OK, document("Members", &body, true))
    }

    fn export(&self) -> Response {
        let inner = self.lock();
        let mut header = EXPORT_COLUMNS.to_vec();
        if inner.numeric_ids {
            header.insert(0, "id");
        }
        let kept: Vec<usize> = (0..header.len())
            .filter(|&index| !inner.export_without.iter().any(|column| column == header[index]))
            .collect();
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer.write_record(kept.iter().map(|&index| header[index])).expect("a CSV header in memory");
        for m in &inner.members {
            let block = match (&inner.block_words, m.financial_block) {
                (Some((on, _)), true) => on.as_str(),
                (Some((_, off)), false) => off.as_str(),
                (None, true) => "1",
                (None, false) => "0",
            };
            let modified = inner.shown_time(m.modified);
            let number = m.number.to_string();
            let mut row = vec![
                m.relation_code.as_str(),
                &m.first_name,
                &m.last_name,
                &m.email,
                &m.email2,
                &m.mobile,
                &m.phone,
                &m.note,
                &m.remarks,
                block,
                &modified,
            ];
            if inner.numeric_ids {
                row.insert(0, &number);
            }
            writer.write_record(kept.iter().map(|&index| row[index])).expect("a CSV row in memory");
        }
        drop(inner);
        let bytes = writer.into_inner().expect("the CSV in memory");
        let mut response = Response::new(Body::from(bytes));
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
        headers.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment; filename=\"members.csv\""),
        );
        response
    }

    /// A member's page, read-only with its form as the form mode holds it.
    fn show(&self, token: &str, id: &str, page: Page) -> Response {
        let mut inner = self.lock();
        let Some(at) = inner.locate(id) else { return not_found("No such member.") };
        let member = inner.members[at].clone();
        let path = page.path(id);
        let flash = match inner.sessions.get_mut(token) {
            Some(session) if session.flash.as_deref() == Some(path.as_str()) => {
                session.flash.take().is_some()
            }
            _ => false,
        };
        let render = inner.render(&member, page);
        drop(inner);
        html(StatusCode::OK, member_page(&member, page, &render, flash, None))
    }

    /// `GET /member/{ID}/{page}/form`: the page's form alone, open, as it is now.
    fn form_fragment(&self, id: &str, page: Page) -> Response {
        let inner = self.lock();
        let Some(at) = inner.locate(id) else { return not_found("No such member.") };
        let member = inner.members[at].clone();
        let render = inner.render(&member, page);
        drop(inner);
        html(StatusCode::OK, edit_form(&member, page, &render, true))
    }

    /// Saves a page's form, or shows it again with the reason it was refused.
    fn save(&self, token: &str, id: &str, page: Page, form: &[(String, String)]) -> Response {
        let mut inner = self.lock();
        let Some(at) = inner.locate(id) else { return not_found("No such member.") };
        let code = inner.members[at].relation_code.clone();
        // A person's edit saved while this form was open lands first.
        let edits: Vec<(String, String, Value)> = {
            let (mine, others) = std::mem::take(&mut inner.person_edits)
                .into_iter()
                .partition(|(member, _, _)| *member == code);
            inner.person_edits = others;
            mine
        };
        for (_, field, value) in edits {
            let mut member = inner.members[at].clone();
            member.set(&field, &value);
            member.modified = inner.touch(&member);
            member.version += 1;
            inner.members[at] = member;
        }
        let mut member = inner.members[at].clone();
        for field in page.fields() {
            if *field == "financial_block" {
                member.financial_block = match &inner.block_words {
                    Some((on, _)) => param(form, field) == Some(on.as_str()),
                    None => param(form, field).is_some(),
                };
            } else if let Some(value) = param(form, field) {
                *member.text_mut(field).expect("a page's text field") = value.to_owned();
            }
        }
        let refusal = if inner.row_versions
            && param(form, "version").and_then(|version| version.parse::<u64>().ok()) != Some(member.version)
        {
            Some(("error moved", MOVED.to_owned()))
        } else if inner.reject_invalid_email {
            ["email", "email2"]
                .into_iter()
                .filter(|field| page.fields().contains(field))
                .filter_map(|field| param(form, field))
                .find(|value| !value.is_empty() && !plausible_email(value))
                .map(|value| ("error", format!("E-mail address is not valid: {value}")))
        } else {
            None
        };
        if let Some((class, error)) = refusal {
            if error == MOVED {
                inner.moved_refusals += 1;
            }
            let render = inner.render(&member, page);
            drop(inner);
            return html(StatusCode::OK, member_page(&member, page, &render, false, Some((class, &error))));
        }
        if let Some(limit) = inner.note_limit {
            member.note = member.note.chars().take(limit).collect();
        }
        member.modified = inner.touch(&inner.members[at]);
        member.version += 1;
        inner.members[at] = member;
        *inner.saves.entry(code).or_default() += 1;
        let path = page.path(id);
        if let Some(session) = inner.sessions.get_mut(token) {
            session.flash = Some(path.clone());
        }
        redirect(&path)
    }
}

/// The columns of the CSV export (`/members/export.csv`), in order. Under
/// [`SiteServer::use_numeric_ids`] an `id` column comes first; the columns named to
/// [`SiteServer::leave_out_of_export`] are left out.
pub const EXPORT_COLUMNS: [&str; 11] = [
    "relation_code",
    "first_name",
    "last_name",
    "email",
    "email2",
    "mobile",
    "phone",
    "note",
    "remarks",
    "financial_block",
    "modified",
];

/// The message of a form refused for a stale row version.
pub const MOVED: &str = "This member was changed by someone else since you opened it.";

/// What a member's page needs of the site's settings.
struct Render {
    /// The site's words for the financial block on and off.
    block_words: Option<(String, String)>,
    /// Fields this member's pages leave off.
    left_off: Vec<String>,
    url_id: String,
    delay: Duration,
    mode: FormMode,
    version: Option<u64>,
    modified: String,
}

impl Inner {
    fn render(&self, member: &Member, _page: Page) -> Render {
        Render {
            block_words: self.block_words.clone(),
            left_off: self
                .left_off
                .iter()
                .filter(|(code, _)| *code == member.relation_code)
                .map(|(_, field)| field.clone())
                .collect(),
            url_id: self.url_id(member),
            delay: self.edit_delay,
            mode: self.form_mode,
            version: self.row_versions.then_some(member.version),
            modified: self.shown_time(member.modified),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Pages
// ---------------------------------------------------------------------------------------------

/// A whole HTML document; `nav` adds the navigation of pages behind the login.
fn document(title: &str, body: &str, nav: bool) -> String {
    let nav = if nav {
        "<nav id=\"site-nav\"><a id=\"nav-members\" href=\"/members\">Members</a> \
         <a id=\"logout\" href=\"/logout\">Log out</a></nav>\n"
    } else {
        ""
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{} - Member admin</title>\n\
         </head>\n<body>\n{nav}{body}\n</body>\n</html>\n",
        escape(title)
    )
}

fn login_page(next: &str, failed: bool) -> String {
    let error = if failed {
        "<div class=\"error\" id=\"login-error\">Invalid username or password</div>\n"
    } else {
        ""
    };
    let body = format!(
        "<main id=\"login-page\">\n<h1>Log in</h1>\n{error}\
         <form id=\"login\" method=\"post\" action=\"/login\">\n\
         <input type=\"hidden\" name=\"next\" value=\"{next}\">\n\
         <p><label for=\"username\">User name</label> \
         <input type=\"text\" id=\"username\" name=\"username\" autocomplete=\"username\"></p>\n\
         <p><label for=\"password\">Password</label> \
         <input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"current-password\"></p>\n\
         <button type=\"submit\" id=\"login-submit\">Log in</button>\n</form>\n</main>",
        next = escape(next)
    );
    document("Log in", &body, false)
}

fn error_page(title: &str, message: &str) -> String {
    document(title, &format!("<main>\n<h1>{}</h1>\n<p>{}</p>\n</main>", escape(title), escape(message)), true)
}

/// The script of the Edit button: after the button's delay it shows the form (enabling the
/// controls of a hidden one, building one from its template, or fetching one into
/// `div#form-slot`) and hides the read-only view.
const EDIT_SCRIPT: &str = "<script>\n\
(function () {\n\
  var edit = document.getElementById('edit');\n\
  edit.addEventListener('click', function () {\n\
    var delay = Number(edit.getAttribute('data-delay-ms')) || 0;\n\
    setTimeout(function () {\n\
      var shown = function () { document.getElementById('view').hidden = true; };\n\
      var slot = document.getElementById('form-slot');\n\
      var template = document.getElementById('edit-template');\n\
      if (template) {\n\
        slot.appendChild(template.content.cloneNode(true));\n\
        shown();\n\
      } else if (slot) {\n\
        fetch(slot.getAttribute('data-form'), { credentials: 'same-origin' })\n\
          .then(function (answer) { return answer.text(); })\n\
          .then(function (text) { slot.innerHTML = text; shown(); });\n\
      } else {\n\
        var form = document.getElementById('edit-form');\n\
        var controls = form.querySelectorAll('input, textarea, select, button');\n\
        for (var i = 0; i < controls.length; i++) { controls[i].disabled = false; }\n\
        form.hidden = false;\n\
        shown();\n\
      }\n\
    }, delay);\n\
  });\n\
})();\n\
</script>";

/// A page's form: open (shown, its controls enabled) or as a hidden form waits for Edit.
fn edit_form(member: &Member, page: Page, render: &Render, open: bool) -> String {
    let disabled = if open { "" } else { " disabled" };
    let mut inputs = String::new();
    if let Some(version) = render.version {
        let _ = writeln!(inputs, "<input type=\"hidden\" name=\"version\" value=\"{version}\">");
    }
    let text_input = |inputs: &mut String, field: &str, label: &str, value: &str| {
        if render.left_off.iter().any(|left_off| left_off == field) {
            return;
        }
        let _ = writeln!(
            inputs,
            "<p class=\"field\"><label for=\"{field}\">{label}</label> \
             <input type=\"text\" id=\"{field}\" name=\"{field}\" value=\"{value}\"{disabled}></p>",
            value = escape(value),
        );
    };
    match page {
        Page::General => {
            for (field, label, value) in [
                ("email", "E-mail", &member.email),
                ("email2", "Second e-mail", &member.email2),
                ("mobile", "Mobile", &member.mobile),
                ("phone", "Phone", &member.phone),
            ] {
                text_input(&mut inputs, field, label, value);
            }
        }
        Page::Other => {
            text_input(&mut inputs, "note", "Note", &member.note);
            // A newline right after the start tag is dropped by HTML parsers; one is written
            // so that remarks starting with a newline keep it.
            let _ = writeln!(
                inputs,
                "<p class=\"field\"><label for=\"remarks\">Remarks</label> \
                 <textarea id=\"remarks\" name=\"remarks\" rows=\"4\"{disabled}>\n{}</textarea></p>",
                escape(&member.remarks),
            );
        }
        Page::Financial if render.block_words.is_some() => {
            let (on, off) = render.block_words.clone().unwrap_or_default();
            let option = |word: &str, chosen: bool| {
                let selected = if chosen { " selected" } else { "" };
                format!("<option value=\"{word}\"{selected}>{word}</option>", word = escape(word))
            };
            let _ = writeln!(
                inputs,
                "<p class=\"field\"><label for=\"financial_block\">Financial block</label> \
                 <select id=\"financial_block\" name=\"financial_block\"{disabled}>{}{}</select></p>",
                option(&on, member.financial_block),
                option(&off, !member.financial_block),
            );
        }
        Page::Financial => {
            let checked = if member.financial_block { " checked" } else { "" };
            let _ = writeln!(
                inputs,
                "<p class=\"field\"><input type=\"checkbox\" id=\"financial_block\" name=\"financial_block\" \
                 value=\"1\"{checked}{disabled}> <label for=\"financial_block\">Financial block</label></p>"
            );
        }
    }
    let hidden = if open { "" } else { " hidden" };
    format!(
        "<form id=\"edit-form\" method=\"post\" action=\"{action}\"{hidden}>\n{inputs}\
         <button type=\"submit\" id=\"save\"{disabled}>Save</button>\n</form>\n",
        action = escape(&page.path(&render.url_id)),
    )
}

/// A member's page. With `error` (a form refused: its class and message), the form is shown
/// open with the member's values as posted; otherwise the read-only view, the Edit button and
/// the form as the form mode holds it.
fn member_page(
    member: &Member,
    page: Page,
    render: &Render,
    flash: bool,
    error: Option<(&str, &str)>,
) -> String {
    let id = escape(&render.url_id);
    let open = error.is_some();
    let mut tabs = String::new();
    for tab in Page::ALL {
        let class = if tab == page { " class=\"active\"" } else { "" };
        let _ = write!(
            tabs,
            "<a id=\"tab-{name}\"{class} href=\"{href}\">{title}</a> ",
            name = tab.name(),
            href = escape(&tab.path(&render.url_id)),
            title = tab.title(),
        );
    }
    let mut view = String::new();
    let text_view = |view: &mut String, field: &str, label: &str, value: &str, style: &str| {
        if render.left_off.iter().any(|left_off| left_off == field) {
            return;
        }
        let _ = writeln!(
            view,
            "<dt>{label}</dt><dd><span id=\"view-{field}\"{style}>{value}</span></dd>",
            value = escape(value),
        );
    };
    match page {
        Page::General => {
            text_view(&mut view, "first_name", "First name", &member.first_name, "");
            text_view(&mut view, "last_name", "Last name", &member.last_name, "");
            for (field, label, value) in [
                ("email", "E-mail", &member.email),
                ("email2", "Second e-mail", &member.email2),
                ("mobile", "Mobile", &member.mobile),
                ("phone", "Phone", &member.phone),
            ] {
                text_view(&mut view, field, label, value, "");
            }
        }
        Page::Other => {
            text_view(&mut view, "note", "Note", &member.note, "");
            text_view(&mut view, "remarks", "Remarks", &member.remarks, " style=\"white-space: pre-wrap\"");
        }
        Page::Financial if render.block_words.is_some() => {
            let (on, off) = render.block_words.clone().unwrap_or_default();
            let word = if member.financial_block { on } else { off };
            text_view(&mut view, "financial_block", "Financial block", &word, "");
        }
        Page::Financial => {
            let checked = if member.financial_block { " checked" } else { "" };
            let _ = writeln!(
                view,
                "<dt>Financial block</dt><dd><input type=\"checkbox\" id=\"view-financial_block\" \
                 disabled{checked}></dd>"
            );
        }
    }
    let form = if open {
        edit_form(member, page, render, true)
    } else {
        match render.mode {
            FormMode::Hidden => edit_form(member, page, render, false),
            FormMode::Template => format!(
                "<template id=\"edit-template\">{}</template>\n<div id=\"form-slot\"></div>\n",
                edit_form(member, page, render, true)
            ),
            FormMode::Fetched => format!(
                "<div id=\"form-slot\" data-form=\"{}/form\"></div>\n",
                escape(&page.path(&render.url_id))
            ),
        }
    };
    let flash = if flash { "<div class=\"flash\" id=\"saved\">Saved</div>\n" } else { "" };
    let error = error.map_or_else(String::new, |(class, error)| {
        format!("<div class=\"{class}\" id=\"form-error\">{}</div>\n", escape(error))
    });
    let view_hidden = if open { " hidden" } else { "" };
    let body = format!(
        "<main id=\"member\" data-id=\"{id}\">\n\
         <h1 id=\"member-name\">{name}</h1>\n\
         <p>Relation code <span id=\"view-relation_code\">{code}</span>, \
         modified <span id=\"view-modified\">{modified}</span></p>\n\
         <nav id=\"tabs\">{tabs}</nav>\n\
         {flash}{error}\
         <section id=\"view\"{view_hidden}>\n<dl>\n{view}</dl>\n\
         <button type=\"button\" id=\"edit\" data-delay-ms=\"{delay}\">Edit</button>\n</section>\n\
         {form}\
         {EDIT_SCRIPT}\n</main>",
        name = escape(&member.full_name()),
        code = escape(&member.relation_code),
        modified = escape(&render.modified),
        delay = render.delay.as_millis(),
    );
    document(&format!("{} - {}", member.full_name(), page.title()), &body, true)
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A member's modification time as the site shows it: UTC with milliseconds.
fn format_modified(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn html(status: StatusCode, page: String) -> Response {
    let mut response = Response::new(Body::from(page));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    response
}

/// A 303 See Other to `location` (a path on this site).
fn redirect(location: &str) -> Response {
    let mut response = html(
        StatusCode::SEE_OTHER,
        format!("<!DOCTYPE html>\n<p>See <a href=\"{0}\">{0}</a>.</p>\n", escape(location)),
    );
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn not_found(message: &str) -> Response {
    let body = format!("<main>\n<h1 id=\"not-found\">Not found</h1>\n<p>{}</p>\n</main>", escape(message));
    html(StatusCode::NOT_FOUND, document("Not found", &body, true))
}

fn method_not_allowed() -> Response {
    html(
        StatusCode::METHOD_NOT_ALLOWED,
        error_page("Method not allowed", "This page does not take that method."),
    )
}

/// `/member/{id}/{page}` or `/member/{id}/{page}/form`: the id (percent-decoded), the page,
/// and whether it is the form alone.
fn member_path(path: &str) -> Option<(String, Page, bool)> {
    let rest = path.strip_prefix("/member/")?;
    let (id, page) = rest.split_once('/')?;
    let id = percent_decode(id);
    (!id.is_empty()).then_some(())?;
    let (page, fragment) = match page.strip_suffix("/form") {
        Some(page) => (page, true),
        None => (page, false),
    };
    Some((id, Page::parse(page)?, fragment))
}

fn path_and_query(uri: &Uri) -> String {
    uri.path_and_query().map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned())
}

/// The value of the `session` cookie, when one was sent (parsed by the `cookie` crate, as
/// fantoccini hands it out).
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(fantoccini::cookies::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|cookie| cookie.name() == "session")
        .map(|cookie| cookie.value().to_owned())
}

/// The last value of a parameter (a form or a query).
fn param<'q>(pairs: &'q [(String, String)], name: &str) -> Option<&'q str> {
    pairs.iter().rev().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
}

/// `application/x-www-form-urlencoded` pairs, as forms and queries carry them.
fn parse_urlencoded(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(&name.replace('+', " ")), percent_decode(&value.replace('+', " ")))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let hex = bytes.get(at + 1..at + 3).and_then(|hex| std::str::from_utf8(hex).ok());
        match (bytes[at], hex.and_then(|hex| u8::from_str_radix(hex, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                at += 3;
            }
            (byte, _) => {
                out.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A path for `next=`: everything but unreserved characters and `/` percent-encoded.
fn encode_next(path: &str) -> String {
    percent_encode(path, b"/")
}

/// `text` with every byte percent-encoded but the unreserved characters (letters, digits,
/// `-._~`) and the bytes in `keep`, as a query or a posted form holds it.
pub fn percent_encode(text: &str, keep: &[u8]) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) || keep.contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// Text for HTML content or a quoted attribute.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The server: its thread and listener
// ---------------------------------------------------------------------------------------------

/// What serves the site's listener: its router.
fn serve(shared: Arc<Shared>) -> Serve {
    Arc::new(move |listener| {
        let app = Router::new().fallback(handle).with_state(Arc::clone(&shared));
        Box::pin(async move {
            let _ = axum::serve(listener, app).into_future().await;
        })
    })
}

/// Every request goes through here: logged, delayed, then answered.
async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form =
        if method == Method::POST { parse_urlencoded(&String::from_utf8_lossy(&body)) } else { Vec::new() };
    let (serial, delay) = shared.arrive(&method, &uri, &form);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (response, session, lost) = shared.answer(&method, &uri, &headers, &form);
    shared.finish(serial, response.status().as_u16(), session, lost);
    response
}
