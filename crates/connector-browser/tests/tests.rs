//! The browser connector in headless Chromium against the fixture admin site: the conformance
//! suite first, then logins, expiring sessions, a site that stops answering, rejections.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fieldsync_connector::testkit::{self, Fixture, RejectedValue, TestPaths, TestRecord};
use fieldsync_connector::{Connector, ConnectorError, FieldWrite, Lookup, ReadRequest, Write};
use fieldsync_connector_browser::{
    Browser, BrowserConfig, BrowserConnector, BrowserOptions, Field, FieldKind, Listing, Login, MemberPage,
    Secret,
};
use fieldsync_model::RecordId;
use serde_json::{Value, json};
use support::site::SiteServer;

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

fn field(selector: &str) -> Field {
    Field { selector: selector.into(), kind: FieldKind::Text }
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
        pages: vec![
            page(
                "general",
                &[
                    ("email", field("#email")),
                    ("email2", field("#email2")),
                    ("mobile", field("#mobile")),
                    ("phone", field("#phone")),
                ],
            ),
            page("other", &[("note", field("#note")), ("remarks", field("#remarks"))]),
            page(
                "financial",
                &[(
                    "financial_block",
                    Field { selector: "#financial_block".into(), kind: FieldKind::Checkbox },
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
        &["incremental_read", "conditional_update", "create", "delete", "typed_values"],
    )
    .await;
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

/// A site with `count` members and a connector on it.
async fn site(count: usize) -> (SiteServer, BrowserConnector, tempfile::TempDir) {
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
    let screenshots = tempfile::tempdir().unwrap();
    let connector = BrowserConnector::open(config(&site), screenshots.path().into()).unwrap();
    (site, connector, screenshots)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_is_written_page_by_page_only_where_it_differs_and_read_back() {
    if !browser_available() {
        return;
    }
    let (site, mut connector, _shots) = site(3).await;
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
    if !browser_available() {
        return;
    }
    let (site, mut connector, _shots) = site(50).await;
    site.set_edit_delay(Duration::from_millis(20));
    site.expire_sessions_after(Some(5));
    let writes: Vec<Write> = (1..=50)
        .map(|number| {
            update(
                &format!("KNVB{number:04}"),
                &[
                    ("email", json!(format!("edited{number}@club.nl"))),
                    ("note", json!(format!("note {number}"))),
                ],
            )
        })
        .collect();
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
    if !browser_available() {
        return;
    }
    let (site, mut connector, shots) = site(3).await;
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
    if !browser_available() {
        return;
    }
    let (site, _connector, shots) = site(1).await;
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
    if !browser_available() {
        return;
    }
    let (site, mut connector, _shots) = site(6).await;
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
    if !browser_available() {
        return;
    }
    // Sessions of three requests: some saves go through and their answer lands on the login
    // page, others are lost with the session. Both look the same from the browser.
    let (site, mut connector, _shots) = site(6).await;
    site.set_edit_delay(Duration::from_millis(20));
    site.expire_sessions_after(Some(3));
    let writes: Vec<Write> = (1..=6)
        .map(|number| {
            update(
                &format!("KNVB{number:04}"),
                &[("email", json!(format!("e{number}@club.nl"))), ("note", json!(format!("n{number}")))],
            )
        })
        .collect();
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
    if !browser_available() {
        return;
    }
    let (site, _unused, shots) = site(12).await;
    site.set_page_size(5);
    site.update("KNVB0011", "note", "a note on the other page");
    let mut table = config(&site);
    table.list = Listing::Table {
        url: "/members".into(),
        rows: "tr.member".into(),
        id_attribute: "data-id".into(),
        cells: [("email".to_string(), "td.email".to_string())].into(),
        next: Some("#next-page".into()),
    };
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
    if !browser_available() {
        return;
    }
    let (site, mut connector, _shots) = site(21).await;
    site.set_edit_delay(Duration::from_millis(20));
    // The first member starts the browser and logs in; the other twenty are timed.
    connector.apply(&[update("KNVB0021", &[("note", json!("first"))])]).await.unwrap();
    let writes: Vec<Write> = (1..=20)
        .map(|number| {
            update(
                &format!("KNVB{number:04}"),
                &[
                    ("email", json!(format!("timed{number}@club.nl"))),
                    ("note", json!(format!("timed {number}"))),
                ],
            )
        })
        .collect();
    let began = Instant::now();
    let results = connector.apply(&writes).await.unwrap();
    let each = began.elapsed() / 20;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(site.total_saves(), 41, "two pages a member, and the first one's");
    eprintln!("a member edit over two pages, no pacing: {} ms", each.as_millis());
    connector.close().await;
}
