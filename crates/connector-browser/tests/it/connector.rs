//! The browser connector in headless Chromium against the fixture admin site: the conformance
//! suite first, then logins, expiring sessions, a site that stops answering, rejections.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use fieldsync_connector::testkit::django::{DjangoOptions, DjangoServer};
use fieldsync_connector::testkit::{self, Fixture, RejectedValue, TestPaths, TestRecord};
use fieldsync_connector::{
    Connector, ConnectorError, ConnectorRecord, FieldWrite, Lookup, ReadRequest, Write,
};
use fieldsync_connector_browser::testkit::site::{FormMode, MOVED, Member, SiteServer};
use fieldsync_connector_browser::{
    Browser, BrowserConfig, BrowserConnector, BrowserOptions, Field, FieldKind, Listing, Login, MemberPage,
    Secret,
};
use fieldsync_model::RecordId;
use serde_json::{Value, json};

/// Whether Chromium and chromedriver are here; says so loudly when not (and fails in CI).
fn browser_available() -> bool {
    match Browser::available(&BrowserOptions::default()) {
        Ok(()) => true,
        Err(missing) => {
            assert!(
                std::env::var_os("FIELDSYNC_REQUIRE_ALL").is_none(),
                "FIELDSYNC_REQUIRE_ALL is set but {missing} (install chromium chromium-driver)"
            );
            eprintln!("SKIPPED: {missing} (install chromium chromium-driver)");
            false
        }
    }
}

/// A text field: its input `#NAME`, its read-only view `#view-NAME`.
fn field(name: &str) -> Field {
    Field { selector: format!("#{name}"), kind: FieldKind::Text, view: Some(format!("#view-{name}")) }
}

/// The connector's configuration for the fixture site: its login, its CSV export and the
/// three pages of a member.
pub fn config(site: &SiteServer) -> BrowserConfig {
    let (user, password) = site.credentials();
    let page = |name: &str, fields: &[(&str, Field)]| MemberPage {
        url: format!("/member/{{id}}/{name}"),
        edit: Some("#edit".into()),
        save: "#save".into(),
        saved: "#saved".into(),
        error: Some("#form-error".into()),
        moved: None,
        moved_text: None,
        fields: fields
            .iter()
            .map(|(path, field)| ((*path).to_string(), field.clone()))
            .collect::<BTreeMap<_, _>>(),
    };
    BrowserConfig {
        base_url: site.base_url(),
        login: Login {
            url: "/login".into(),
            username_field: "#username".into(),
            password_field: "#password".into(),
            submit: "#login-submit".into(),
            username: user,
            password: Secret::new(password),
            page: "form#login".into(),
            error: Some("#login-error".into()),
        },
        list: Listing::Csv { url: "/members/export.csv".into(), delimiter: None },
        id: "relation_code".into(),
        modified: Some("modified".into()),
        modified_format: None,
        time_zone: None,
        pages: vec![
            page(
                "general",
                &[
                    ("email", field("email")),
                    ("email2", field("email2")),
                    ("mobile", field("mobile")),
                    ("phone", field("phone")),
                ],
            ),
            page("other", &[("note", field("note")), ("remarks", field("remarks"))]),
            page(
                "financial",
                &[(
                    "financial_block",
                    Field {
                        selector: "#financial_block".into(),
                        kind: FieldKind::Checkbox,
                        view: Some("#view-financial_block".into()),
                    },
                )],
            ),
        ],
        pace: None,
        timeout: Some("10s".into()),
        retries: None,
        screenshots: None,
        chromedriver: None,
        chromium: None,
        date_formats: None,
    }
}

struct SiteFixture {
    site: Option<SiteServer>,
    screenshots: tempfile::TempDir,
}

impl Fixture for SiteFixture {
    type Connector = BrowserConnector;

    async fn open(&mut self, records: &[TestRecord]) -> BrowserConnector {
        let site = SiteServer::start().await;
        site.set_edit_delay(Duration::from_millis(50));
        for record in records {
            site.insert(json!({"relation_code": record.key, "note": record.name, "email": record.email}));
        }
        let connector = BrowserConnector::open(config(&site), self.screenshots.path().into())
            .expect("a valid configuration");
        self.site = Some(site);
        connector
    }

    async fn edit(&mut self, key: &str, path: &str, value: Value) {
        self.site.as_ref().expect("an open site").update(key, path, value);
    }

    fn paths(&self) -> TestPaths {
        TestPaths { key: "relation_code".into(), name: "note".into(), email: "email".into() }
    }

    fn rejected_value(&self) -> Option<RejectedValue> {
        Some(RejectedValue { path: "email".into(), value: json!("not-an-email") })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conforms_against_the_admin_site() {
    if !browser_available() {
        return;
    }
    let mut fixture = SiteFixture { site: None, screenshots: tempfile::tempdir().unwrap() };
    testkit::run_all(
        &mut fixture,
        &["sequence_read", "incremental_read", "conditional_update", "create", "delete", "typed_values"],
    )
    .await;
}

/// The site's member list as the listing: its rows in pages, each member's id in `data-id`
/// and the value at `path` in the cell `cell`.
fn member_table(path: &str, cell: &str) -> Listing {
    Listing::Table {
        url: "/members".into(),
        rows: "tr.member".into(),
        id_attribute: "data-id".into(),
        id_selector: None,
        cells: [(path.to_string(), cell.to_string())].into(),
        next: Some("#next-page".into()),
    }
}

fn update(id: &str, fields: &[(&str, Value)]) -> Write {
    Write::Update {
        id: RecordId::new(id),
        fields: fields
            .iter()
            .map(|(path, value)| FieldWrite { path: (*path).into(), value: value.clone(), expected: None })
            .collect(),
    }
}

/// A site with `count` members, a connector on it and the directory of its screenshots;
/// `None` (after saying so) when there is no browser to run the connector in.
async fn open_site(count: usize) -> Option<(SiteServer, BrowserConnector, tempfile::TempDir)> {
    if !browser_available() {
        return None;
    }
    let site = SiteServer::start().await;
    for number in 1..=count {
        site.insert(json!({
            "relation_code": format!("KNVB{number:04}"),
            "first_name": format!("First{number}"),
            "last_name": "Jansen",
            "email": format!("member{number}@club.nl"),
            "mobile": "0612345678",
            "note": "",
            "remarks": "",
            "financial_block": false,
        }));
    }
    let (connector, screenshots) = open(config(&site));
    Some((site, connector, screenshots))
}

/// [`open_site`] with a short Edit delay and sessions that end after `requests` requests.
async fn open_site_with_short_sessions(
    count: usize,
    requests: usize,
) -> Option<(SiteServer, BrowserConnector, tempfile::TempDir)> {
    let (site, connector, screenshots) = open_site(count).await?;
    site.set_edit_delay(Duration::from_millis(20));
    site.expire_sessions_after(Some(requests));
    Some((site, connector, screenshots))
}

/// A connector with `config`, and the fresh directory its screenshots go to.
fn open(config: BrowserConfig) -> (BrowserConnector, tempfile::TempDir) {
    let screenshots = tempfile::tempdir().unwrap();
    let connector = BrowserConnector::open(config, screenshots.path().into()).unwrap();
    (connector, screenshots)
}

/// Writes giving each member of `numbers` (`KNVB0001` for 1) the e-mail address and the note
/// that `values` makes of its number.
fn email_and_note_writes(
    numbers: RangeInclusive<usize>,
    values: impl Fn(usize) -> (String, String),
) -> Vec<Write> {
    numbers
        .map(|number| {
            let (email, note) = values(number);
            update(&format!("KNVB{number:04}"), &[("email", json!(email)), ("note", json!(note))])
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_is_written_page_by_page_only_where_it_differs_and_read_back() {
    let Some((site, mut connector, _shots)) = open_site(3).await else { return };
    let began = Instant::now();
    let write = update(
        "KNVB0002",
        &[
            ("email", json!("new@club.nl")),
            ("mobile", json!("0612345678")), // already there: not touched
            ("remarks", json!("first line\nsecond line")),
            ("financial_block", json!(true)),
        ],
    );
    let results = connector.apply(&[write]).await.unwrap();
    eprintln!("one member over three pages: {:.2} s", began.elapsed().as_secs_f64());
    assert!(results[0].is_ok(), "{results:?}");
    let member = site.member("KNVB0002").unwrap();
    assert_eq!(member.email, "new@club.nl");
    assert_eq!(member.remarks.replace("\r\n", "\n"), "first line\nsecond line");
    assert!(member.financial_block);
    assert_eq!(site.saves("KNVB0002"), 3, "one save per page that changed");
    // The same write again changes nothing, so nothing is saved.
    let again = connector
        .apply(&[update("KNVB0002", &[("email", json!("new@club.nl")), ("financial_block", json!(true))])])
        .await
        .unwrap();
    assert!(again[0].is_ok());
    assert_eq!(site.saves("KNVB0002"), 3);
    // Unticking is a click only when the box is ticked.
    connector.apply(&[update("KNVB0002", &[("financial_block", json!(false))])]).await.unwrap();
    assert!(!site.member("KNVB0002").unwrap().financial_block);
    connector.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_land_while_sessions_expire_every_five_requests() {
    let Some((site, mut connector, _shots)) = open_site_with_short_sessions(50, 5).await else { return };
    let writes =
        email_and_note_writes(1..=50, |number| (format!("edited{number}@club.nl"), format!("note {number}")));
    let began = Instant::now();
    let results = connector.apply(&writes).await.unwrap();
    let elapsed = began.elapsed();
    for (number, result) in (1..=50).zip(&results) {
        assert!(result.is_ok(), "member {number}: {result:?}");
    }
    for number in 1..=50 {
        let member = site.member(&format!("KNVB{number:04}")).unwrap();
        assert_eq!(member.email, format!("edited{number}@club.nl"));
        assert_eq!(member.note, format!("note {number}"));
    }
    assert!(site.logins() > 10, "sessions expired and were renewed: {} logins", site.logins());
    let found = connector
        .lookup(&["email".to_string()], &Lookup::Ids(vec![RecordId::new("KNVB0050")]))
        .await
        .unwrap();
    assert_eq!(found[0].values[0], json!("edited50@club.nl"));
    eprintln!(
        "50 members, two pages each, sessions of 5 requests: {:.1} s ({:.0} ms a member, {} logins, {} lost saves redone)",
        elapsed.as_secs_f64(),
        elapsed.as_millis() as f64 / 50.0,
        site.logins(),
        site.lost_posts()
    );
    connector.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_email_leaves_the_sites_message_and_a_screenshot() {
    let Some((site, mut connector, shots)) = open_site(3).await else { return };
    let results = connector
        .apply(&[
            update("KNVB0001", &[("email", json!("no-at-sign"))]),
            update("KNVB0002", &[("note", json!("fine"))]),
        ])
        .await
        .unwrap();
    let message = match &results[0] {
        Err(error @ ConnectorError::Rejected { message }) => {
            assert!(!error.is_retryable());
            message.clone()
        }
        other => panic!("expected a rejection, got {other:?}"),
    };
    assert!(message.contains("E-mail address is not valid"), "{message}");
    assert!(message.contains("/member/KNVB0001/general"), "the page: {message}");
    let shot =
        message.split("screenshot ").nth(1).map(|rest| rest.trim_end_matches(')')).expect("a screenshot");
    let png = std::fs::read(shot).expect("the screenshot file");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    assert!(shot.starts_with(shots.path().to_str().unwrap()));
    assert!(results[1].is_ok(), "the next member goes on: {:?}", results[1]);
    assert_eq!(site.member("KNVB0002").unwrap().note, "fine");
    assert_eq!(site.member("KNVB0001").unwrap().email, "member1@club.nl");
    connector.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_a_configuration_error_naming_the_site() {
    let Some((site, _connector, shots)) = open_site(1).await else { return };
    let mut wrong = config(&site);
    wrong.login.password = Secret::new("wrong-secret");
    let mut connector = BrowserConnector::open(wrong, shots.path().into()).unwrap();
    let error = connector
        .read_page(&ReadRequest { paths: vec!["email".into()], since: None }, None)
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, ConnectorError::Misconfigured { .. }), "{message}");
    assert!(
        message.contains("Invalid username or password") && !message.contains("wrong-secret"),
        "{message}"
    );
    connector.close().await;
    // And a path the site does not hold is named, with what it does hold.
    let mut connector = BrowserConnector::open(config(&site), shots.path().into()).unwrap();
    let typo = connector.check(&["financial_blok".to_string()]).await.unwrap_err().to_string();
    assert!(typo.contains("`financial_blok`") && typo.contains("financial_block"), "{typo}");
    connector.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_site_stops_answering_the_remaining_members_wait() {
    let Some((site, mut connector, _shots)) = open_site(6).await else { return };
    // A first write logs in; then the site goes away.
    connector.apply(&[update("KNVB0001", &[("note", json!("before"))])]).await.unwrap();
    site.refuse_connections();
    let writes: Vec<Write> =
        (2..=6).map(|number| update(&format!("KNVB{number:04}"), &[("note", json!("after"))])).collect();
    let results = connector.apply(&writes).await.unwrap();
    for result in &results {
        assert!(matches!(result, Err(error) if error.is_retryable()), "{result:?}");
    }
    site.accept_connections();
    let results = connector.apply(&writes).await.unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!((2..=6).all(|number| site.member(&format!("KNVB{number:04}")).unwrap().note == "after"));
    connector.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_lost_to_an_expired_session_is_redone_and_one_that_landed_is_not() {
    // Sessions of three requests: some saves go through and their answer lands on the login
    // page, others are lost with the session. Both look the same from the browser.
    let Some((site, mut connector, _shots)) = open_site_with_short_sessions(6, 3).await else { return };
    let writes = email_and_note_writes(1..=6, |number| (format!("e{number}@club.nl"), format!("n{number}")));
    let results = connector.apply(&writes).await.unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(site.lost_posts() > 0, "some saves were lost");
    for number in 1..=6 {
        let id = format!("KNVB{number:04}");
        let member = site.member(&id).unwrap();
        assert_eq!(
            (member.email.as_str(), member.note.as_str()),
            (format!("e{number}@club.nl").as_str(), format!("n{number}").as_str())
        );
        // A save that landed is never made twice: one per page.
        assert_eq!(site.saves(&id), 2, "{id}");
    }
    connector.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paged_html_list_is_read_with_detail_pages_for_what_it_lacks() {
    let Some((site, _unused, shots)) = open_site(12).await else { return };
    site.set_page_size(5);
    site.update("KNVB0011", "note", "a note on the other page");
    let mut table = config(&site);
    table.list = member_table("email", "td.email");
    table.modified = None;
    let mut connector = BrowserConnector::open(table, shots.path().into()).unwrap();
    let page = connector
        .read_page(&ReadRequest { paths: vec!["email".into(), "note".into()], since: None }, None)
        .await
        .unwrap();
    assert_eq!(page.records.len(), 12, "three pages of the list");
    let eleven = page.records.iter().find(|record| record.id.as_str() == "KNVB0011").expect("member 11");
    assert_eq!(eleven.values, [json!("member11@club.nl"), json!("a note on the other page")]);
    assert!(
        page.records
            .iter()
            .all(|record| record.values[0].as_str().is_some_and(|email| email.ends_with("@club.nl")))
    );
    connector.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_written_one_after_another_all_land() {
    let Some((site, mut connector, _shots)) = open_site(21).await else { return };
    site.set_edit_delay(Duration::from_millis(20));
    // The first member starts the browser and logs in; the other twenty are timed.
    connector.apply(&[update("KNVB0021", &[("note", json!("first"))])]).await.unwrap();
    let writes =
        email_and_note_writes(1..=20, |number| (format!("timed{number}@club.nl"), format!("timed {number}")));
    let began = Instant::now();
    let results = connector.apply(&writes).await.unwrap();
    let each = began.elapsed() / 20;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(site.total_saves(), 41, "two pages a member, and the first one's");
    eprintln!("a member edit over two pages, no pacing: {} ms", each.as_millis());
    connector.close().await;
}

/// A member's fields as they matter, without its time and row version (which every save
/// moves) and with a text area's line breaks as a person typed them.
fn content(member: &Member) -> Member {
    Member {
        modified: jiff::Timestamp::UNIX_EPOCH,
        version: 0,
        remarks: member.remarks.replace("\r\n", "\n"),
        ..member.clone()
    }
}

/// A time to the minute, as a site that shows minutes holds it.
fn to_the_minute(time: jiff::Timestamp) -> jiff::Timestamp {
    jiff::Timestamp::from_second(time.as_second().div_euclid(60) * 60).unwrap()
}

/// A site that is no longer convenient: forms built only on Edit (`mode`), numeric ids in
/// its addresses, an export without the other pages' fields nor `email2`, modification
/// times on a local clock to the minute; with four members of every kind of value.
async fn awkward_site(mode: FormMode) -> SiteServer {
    let site = SiteServer::start().await;
    site.set_edit_delay(Duration::from_millis(50));
    site.set_form_mode(mode);
    site.use_numeric_ids();
    site.leave_out_of_export(&["email2", "note", "remarks", "financial_block"]);
    site.show_local_times("Europe/Amsterdam");
    let members = [
        json!({"relation_code": "KNVB0001", "first_name": "Anna", "last_name": "de Vries", "email": "anna@club.nl",
               "email2": "", "mobile": "0612345678", "note": "", "remarks": "", "financial_block": false}),
        json!({"relation_code": "KNVB0002", "first_name": "Bram", "last_name": "Jansen", "email": "bram@club.nl",
               "email2": "bram@work.nl", "mobile": "", "note": "captain", "remarks": "line one\nline two",
               "financial_block": true}),
        json!({"relation_code": "KNVB0003", "first_name": "Cor", "last_name": "Smit", "email": "",
               "email2": "", "mobile": "", "note": "  spaced  ", "remarks": "", "financial_block": false}),
        json!({"relation_code": "KNVB0004", "first_name": "Dirk", "last_name": "Bakker", "email": "dirk@club.nl",
               "email2": "", "mobile": "", "note": "", "remarks": "", "financial_block": false}),
    ];
    for member in members {
        site.insert(member);
    }
    site
}

/// An [`awkward_site`] in form mode `mode`, a connector on it configured by [`awkward_config`]
/// (with `views`) and the directory of its screenshots; `None` (after saying so) when there is
/// no browser to run the connector in.
async fn open_awkward(
    mode: FormMode,
    views: bool,
) -> Option<(SiteServer, BrowserConnector, tempfile::TempDir)> {
    if !browser_available() {
        return None;
    }
    let site = awkward_site(mode).await;
    let (connector, screenshots) = open(awkward_config(&site, views));
    Some((site, connector, screenshots))
}

/// The configuration a user writes for [`awkward_site`]: `id` is the export's numeric `id`,
/// times in the site's format and zone; with `views`, fields are read from the read-only
/// view, otherwise from the form opened with Edit.
fn awkward_config(site: &SiteServer, views: bool) -> BrowserConfig {
    let mut config = config(site);
    config.id = "id".into();
    config.modified_format = Some("%d-%m-%Y %H:%M".into());
    config.time_zone = Some("Europe/Amsterdam".into());
    if !views {
        for page in &mut config.pages {
            for field in page.fields.values_mut() {
                field.view = None;
            }
        }
    }
    config
}

const PATHS: [&str; 6] = ["relation_code", "email", "email2", "note", "remarks", "financial_block"];

/// Every member as the connector should read it from `site`, in the site's order.
fn expected_records(site: &SiteServer) -> Vec<ConnectorRecord> {
    site.members()
        .iter()
        .map(|member| ConnectorRecord {
            id: RecordId::new(member.number.to_string()),
            values: PATHS
                .iter()
                .map(|path| match member.value(path).unwrap() {
                    Value::String(text) => json!(text.replace("\r\n", "\n")),
                    other => other,
                })
                .collect(),
            modified: Some(to_the_minute(member.modified)),
            deleted: false,
        })
        .collect()
}

fn read_request() -> ReadRequest {
    ReadRequest { paths: PATHS.iter().map(|path| (*path).to_string()).collect(), since: None }
}

/// Writes of `values` to member `id` with the values `read` from it as expected.
fn update_from(read: &ConnectorRecord, values: &[(&str, Value)]) -> Write {
    Write::Update {
        id: read.id.clone(),
        fields: values
            .iter()
            .map(|(path, value)| FieldWrite {
                path: (*path).into(),
                value: value.clone(),
                expected: Some(read.values[PATHS.iter().position(|known| known == path).unwrap()].clone()),
            })
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_built_only_on_edit_is_opened_read_written_and_verified_as_a_person_does() {
    if !browser_available() {
        return;
    }
    for (mode, views) in [(FormMode::Template, false), (FormMode::Fetched, true)] {
        eprintln!("form mode {mode:?}, views {views}");
        let site = awkward_site(mode).await;
        let (mut connector, _shots) = open(awkward_config(&site, views));
        site.clear_requests();
        // The first read starts the browser and logs in; the second is timed.
        connector.read_page(&read_request(), None).await.unwrap();
        site.clear_requests();
        let began = Instant::now();
        let page = connector.read_page(&read_request(), None).await.unwrap();
        eprintln!(
            "{mode:?}, views {views}: fields the export lacks read from 3 pages of 4 members: {} ms a member and page",
            began.elapsed().as_millis() / 12
        );
        assert_eq!(page.records, expected_records(&site), "{mode:?}");
        // One page load per member and page that holds a field the export lacks.
        let mut loads: BTreeMap<String, usize> = BTreeMap::new();
        for request in site.requests() {
            if request.method == "GET"
                && request.path.starts_with("/member/")
                && !request.path.ends_with("/form")
            {
                *loads.entry(request.path).or_default() += 1;
            }
        }
        let wanted: BTreeMap<String, usize> = site
            .members()
            .iter()
            .flat_map(|member| {
                ["general", "other", "financial"].map(|page| (format!("/member/{}/{page}", member.number), 1))
            })
            .collect();
        assert_eq!(loads, wanted, "{mode:?}");

        let before: Vec<Member> = site.members().iter().map(content).collect();
        let (two, three) = (&page.records[1], &page.records[2]);
        let began = Instant::now();
        let results = connector
            .apply(&[
                update_from(
                    two,
                    &[
                        ("email", json!("bram@new.nl")),
                        ("email2", json!("")),
                        ("note", json!("vice-captain")),
                        ("remarks", json!("one\ntwo\nthree")),
                        ("financial_block", json!(false)),
                    ],
                ),
                update_from(three, &[("note", json!("not spaced"))]),
            ])
            .await
            .unwrap();
        assert!(results.iter().all(Result::is_ok), "{mode:?}: {results:?}");
        eprintln!(
            "{mode:?}, views {views}: 4 pages saved (each looked at first, then opened, Edit, typed, saved, read back): {} ms a page",
            began.elapsed().as_millis() / 4
        );
        let mut after = before.clone();
        after[1].email = "bram@new.nl".into();
        after[1].email2 = String::new();
        after[1].note = "vice-captain".into();
        after[1].remarks = "one\ntwo\nthree".into();
        after[1].financial_block = false;
        after[2].note = "not spaced".into();
        assert_eq!(site.members().iter().map(content).collect::<Vec<_>>(), after, "{mode:?}");
        assert_eq!((site.saves("KNVB0002"), site.saves("KNVB0003")), (3, 1), "one save per page: {mode:?}");
        // And the connector reads what it wrote.
        let again = connector.read_page(&read_request(), None).await.unwrap();
        assert_eq!(again.records, expected_records(&site), "{mode:?}");

        // Verification reads what the site stored: a site that keeps less than it was sent,
        // and says "Saved", is found out.
        site.keep_notes_up_to(5);
        let four = &again.records[3];
        let results =
            connector.apply(&[update_from(four, &[("note", json!("a longer note"))])]).await.unwrap();
        match &results[0] {
            Err(ConnectorError::Rejected { message }) => assert!(
                message.contains("the site kept \"a lon\" for note, not \"a longer note\""),
                "{mode:?}: {message}"
            ),
            other => panic!("{mode:?}: expected the site's truncation to be found, got {other:?}"),
        }
        connector.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_second_page_moved_since_it_was_read_has_nothing_saved() {
    let Some((site, mut connector, _shots)) = open_awkward(FormMode::Template, true).await else { return };
    let read = connector.read_page(&read_request(), None).await.unwrap().records;
    // A person changes the second member's note (on the second page) after the read.
    site.update("KNVB0002", "note", "a person's note");
    let before: Vec<Member> = site.members().iter().map(content).collect();
    let results = connector
        .apply(&[update_from(
            &read[1],
            &[("email", json!("bram@new.nl")), ("note", json!("fieldsync's note"))],
        )])
        .await
        .unwrap();
    assert!(
        matches!(&results[0], Err(ConnectorError::TargetMoved { id }) if *id == read[1].id),
        "{results:?}"
    );
    assert_eq!(site.total_saves(), 0, "nothing of the member was saved");
    assert_eq!(site.members().iter().map(content).collect::<Vec<_>>(), before, "every member as it was");
    // The first page moved instead, and the write is of one page: refused as well.
    site.update("KNVB0003", "email", "cor@person.nl");
    let results =
        connector.apply(&[update_from(&read[2], &[("email", json!("cor@fieldsync.nl"))])]).await.unwrap();
    assert!(matches!(&results[0], Err(ConnectorError::TargetMoved { .. })), "{results:?}");
    assert_eq!(site.total_saves(), 0);
    assert_eq!(site.member("KNVB0003").unwrap().email, "cor@person.nl");
    // Read again, the same write goes through and keeps the person's note.
    let fresh = connector.read_page(&read_request(), None).await.unwrap().records;
    let results =
        connector.apply(&[update_from(&fresh[1], &[("email", json!("bram@new.nl"))])]).await.unwrap();
    assert!(results[0].is_ok(), "{results:?}");
    let bram = site.member("KNVB0002").unwrap();
    assert_eq!((bram.email.as_str(), bram.note.as_str()), ("bram@new.nl", "a person's note"));
    connector.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sites_refusal_of_a_stale_row_version_is_target_moved_and_the_persons_edit_stands() {
    if !browser_available() {
        return;
    }
    // The refusal recognised by its own element, by its text, and not at all.
    let settings: [(Option<&str>, Option<&str>); 3] =
        [(Some("#form-error.moved"), None), (None, Some("changed by someone else")), (None, None)];
    for (moved, moved_text) in settings {
        let site = awkward_site(FormMode::Fetched).await;
        site.use_row_versions();
        let mut config = awkward_config(&site, true);
        for page in &mut config.pages {
            page.moved = moved.map(str::to_string);
            page.moved_text = moved_text.map(str::to_string);
        }
        let (mut connector, _shots) = open(config);
        let read = connector.read_page(&read_request(), None).await.unwrap().records;
        // While the form is open, a person changes the member's second address and saves.
        site.edit_before_next_save("KNVB0001", "email2", "anna@person.nl");
        let results =
            connector.apply(&[update_from(&read[0], &[("email", json!("anna@new.nl"))])]).await.unwrap();
        assert_eq!(site.moved_refusals(), 1, "the site refused the stale form");
        let anna = site.member("KNVB0001").unwrap();
        assert_eq!(
            (anna.email.as_str(), anna.email2.as_str()),
            ("anna@club.nl", "anna@person.nl"),
            "the person's edit stands and nothing else was saved"
        );
        assert_eq!(site.total_saves(), 0);
        if moved.is_none() && moved_text.is_none() {
            match &results[0] {
                Err(ConnectorError::Rejected { message }) => assert!(message.contains(MOVED), "{message}"),
                other => panic!("unrecognised, the refusal is the site's message: {other:?}"),
            }
            connector.close().await;
            continue;
        }
        assert!(
            matches!(&results[0], Err(ConnectorError::TargetMoved { id }) if *id == read[0].id),
            "{moved:?} {moved_text:?}: {results:?}"
        );
        // Read again and merged again, the write lands beside the person's edit.
        let fresh = connector.read_page(&read_request(), None).await.unwrap().records;
        assert_eq!(fresh[0].values[2], json!("anna@person.nl"));
        let results =
            connector.apply(&[update_from(&fresh[0], &[("email", json!("anna@new.nl"))])]).await.unwrap();
        assert!(results[0].is_ok(), "{results:?}");
        let anna = site.member("KNVB0001").unwrap();
        assert_eq!((anna.email.as_str(), anna.email2.as_str()), ("anna@new.nl", "anna@person.nl"));
        assert_eq!(site.total_saves(), 1);
        connector.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modification_times_on_a_local_clock_are_read_in_their_zone_and_one_that_cannot_be_read_is_named() {
    let Some((site, mut connector, shots)) = open_awkward(FormMode::Hidden, true).await else { return };
    let records = connector.read_page(&read_request(), None).await.unwrap().records;
    assert_eq!(records, expected_records(&site));
    connector.close().await;

    let first = site.members()[0].clone();
    let shown = site.shown_time(first.modified);
    for format in [None, Some("%Y-%m-%d %H:%M")] {
        let mut config = awkward_config(&site, true);
        config.modified_format = format.map(str::to_string);
        let mut connector = BrowserConnector::open(config, shots.path().into()).unwrap();
        let error = connector.read_page(&read_request(), None).await.unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, ConnectorError::Malformed { .. }), "{message}");
        assert!(
            message.contains(&format!("{shown:?}"))
                && message.contains("line 2, column `modified`")
                && message.contains(&format!("member {}", first.number))
                && message.contains("/members/export.csv"),
            "the value and where: {message}"
        );
        connector.close().await;
    }
    // The same from a paged HTML list: the member and the cell are named.
    let mut table = awkward_config(&site, true);
    table.modified_format = None;
    table.list = member_table("modified", "td.modified");
    let mut connector = BrowserConnector::open(table, shots.path().into()).unwrap();
    let message = connector.read_page(&read_request(), None).await.unwrap_err().to_string();
    assert!(
        message.contains(&format!("{shown:?}"))
            && message.contains(&format!("member {}, cell `td.modified`", first.number)),
        "{message}"
    );
    connector.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_a_members_page_lacks_fails_the_read_naming_it_and_check_names_what_is_read_from_pages() {
    let Some((site, mut connector, shots)) = open_awkward(FormMode::Template, false).await else { return };
    let records = connector.read_page(&read_request(), None).await.unwrap().records;
    assert_eq!(records, expected_records(&site), "every member as the site holds them");
    // Regression: a field one member's page lacks was read as empty, which the engine takes
    // for a value a person cleared, and clears on the other side. The read now fails, naming
    // the member, the field, its selector and the page, and yields no value at all.
    site.leave_off_page("KNVB0003", "note");
    let error = connector.read_page(&read_request(), None).await.unwrap_err();
    assert!(!error.is_retryable(), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("field note of member")
            && message.contains("`#note` is not on")
            && message.contains(&format!("/member/{}/other", records[2].id)),
        "{message}"
    );
    // Writing it is refused, naming the field and the page.
    let results = connector.apply(&[update_from(&records[2], &[("note", json!("x"))])]).await.unwrap();
    let message = results[0].as_ref().unwrap_err().to_string();
    assert!(
        message.contains("`#note` is not on")
            && message.contains(&format!("/member/{}/other", records[2].id)),
        "{message}"
    );
    let paths: Vec<String> = PATHS.iter().map(|path| (*path).to_string()).collect();
    let probe = connector.check(&paths).await.unwrap();
    assert_eq!(probe.records, Some(4));
    assert!(
        probe.target.contains("one page load per member and page")
            && probe.target.contains("email2 from /member/{id}/general")
            && probe.target.contains("note, remarks from /member/{id}/other")
            && probe.target.contains("financial_block from /member/{id}/financial"),
        "{}",
        probe.target
    );
    connector.close().await;
    // A selector with a typo is found by `check` on the first member's page.
    let mut typo = awkward_config(&site, false);
    typo.pages[1].fields.get_mut("note").unwrap().selector = "#note-typo".into();
    let mut connector = BrowserConnector::open(typo, shots.path().into()).unwrap();
    let error = connector.check(&paths).await.unwrap_err().to_string();
    assert!(error.contains("`#note-typo` is not on") && error.contains("/other"), "{error}");
    connector.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_only_on_the_members_pages_is_looked_up_there() {
    if !browser_available() {
        return;
    }
    let site = awkward_site(FormMode::Template).await;
    site.leave_out_of_export(&["relation_code", "email2", "note", "remarks", "financial_block"]);
    let mut config = awkward_config(&site, true);
    config.pages[0].fields.insert(
        "relation_code".into(),
        Field {
            selector: "#relation_code".into(),
            kind: FieldKind::Text,
            view: Some("#view-relation_code".into()),
        },
    );
    let (mut connector, _shots) = open(config);
    let found = connector
        .lookup(
            &["email".to_string()],
            &Lookup::Key { path: "relation_code".into(), values: vec!["KNVB0003".into(), "KNVB0009".into()] },
        )
        .await
        .unwrap();
    let cor = site.member("KNVB0003").unwrap();
    assert_eq!(
        found,
        [ConnectorRecord {
            id: RecordId::new(cor.number.to_string()),
            values: vec![json!(cor.email)],
            modified: Some(to_the_minute(cor.modified)),
            deleted: false,
        }]
    );
    connector.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn djangos_change_list_is_read_across_its_pages_with_each_players_change_form() {
    if !browser_available() {
        return;
    }
    let Some(django) = DjangoServer::start(&DjangoOptions { players: 150, ..DjangoOptions::default() })
    else {
        return;
    };
    // The README's configuration of Django's admin (100 players a page of the change list).
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = &readme[readme.find("Django's own admin site is such a web admin").expect("the example")..];
    let block = &section[section.find("```toml\n").unwrap() + 8..];
    let block = &block[..block.find("```").unwrap()];
    let text = block
        .replace("[connectors.admin]\n", "")
        .replace("[[connectors.admin.pages]]", "[[pages]]")
        .replace("https://club.example", &django.url())
        .replace("${ADMIN_USER}", django.user())
        .replace("${ADMIN_PASSWORD}", django.password())
        .replace("kind = \"browser\"\n", "");
    let config: BrowserConfig = toml::from_str(&text).unwrap_or_else(|error| panic!("{error}"));
    let (mut connector, _shots) = open(config);
    let page = connector
        .read_page(&ReadRequest { paths: vec!["federation_id".into()], since: None }, None)
        .await
        .unwrap();
    let mut read: Vec<(String, Value)> = page
        .records
        .iter()
        .map(|record| (record.id.as_str().to_string(), record.values[0].clone()))
        .collect();
    read.sort_by(|one, other| one.0.cmp(&other.0));
    let mut stored: Vec<(String, Value)> = django
        .query("SELECT id, federation_id FROM club_player")
        .iter()
        .map(|row| (row["id"].as_i64().unwrap().to_string(), row["federation_id"].clone()))
        .collect();
    stored.sort_by(|one, other| one.0.cmp(&other.0));
    assert_eq!(read, stored, "every player once, from both pages of the change list");
    let pages: Vec<String> = django
        .requests()
        .iter()
        .filter(|request| request.method == "GET" && request.path.starts_with("/admin/club/player/?"))
        .map(|request| request.path.clone())
        .collect();
    assert_eq!(pages.len(), 1, "one more page, and not `Show all`: {pages:?}");

    // Players looked up by id: their fields from each one's change form.
    let paths: Vec<String> =
        ["federation_id", "email", "mobile", "active", "notes"].map(String::from).to_vec();
    let ids: Vec<RecordId> = stored.iter().step_by(37).map(|(id, _)| RecordId::new(id.clone())).collect();
    let mut found = connector.lookup(&paths, &Lookup::Ids(ids.clone())).await.unwrap();
    found.sort_by(|one, other| one.id.as_str().cmp(other.id.as_str()));
    let mut expected: Vec<ConnectorRecord> = ids
        .iter()
        .map(|id| {
            let row = &django.query(&format!(
                "SELECT federation_id, email, mobile, active, notes FROM club_player WHERE id = {}",
                id.as_str()
            ))[0];
            ConnectorRecord {
                id: id.clone(),
                values: vec![
                    row["federation_id"].clone(),
                    row["email"].clone(),
                    row["mobile"].clone(),
                    json!(row["active"].as_i64() == Some(1)),
                    row["notes"].clone(),
                ],
                modified: None,
                deleted: false,
            }
        })
        .collect();
    expected.sort_by(|one, other| one.id.as_str().cmp(other.id.as_str()));
    assert_eq!(found, expected);
    connector.close().await;
}
