//! The dashboard of `fieldsync serve` in a real headless Chromium (chromedriver, `fantoccini`):
//! an operator logs in, sees a link with open reviews (a conflict, with each side's change time,
//! and a delete against an edit, showing the record), decides the conflict in the page, runs the link
//! from the page and finds the decision applied on its run's page and on the other side; a
//! `read` token sees no buttons, no values, and its forged POST gets 403; a POST without the
//! CSRF token is refused; the chart has a bar a day. Screenshots of every page go to
//! `target/screenshots/dashboard`.
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use fieldsync_connector_browser::{Browser, BrowserOptions};
use serde_json::json;

use crate::serve::{OPERATE_TOKEN, PATIENCE, READ_TOKEN, Service};
use crate::support::{browser_available, exec, fieldsync, query, setup};

/// Where the screenshots go: CI keeps this folder.
fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots/dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The browser on a page of the service: opens `path`, waits for `ready` (a CSS selector)
/// and checks that no token is in the page.
struct Pages<'a> {
    client: &'a Client,
    service: &'a Service,
}

impl Pages<'_> {
    async fn open(&self, path: &str, ready: &str) -> String {
        self.client.goto(&format!("{}{path}", self.service.base)).await.unwrap();
        self.ready(ready).await
    }

    /// Waits for `ready` on the page now shown; its source, checked for tokens.
    async fn ready(&self, ready: &str) -> String {
        let found = self.client.wait().at_most(PATIENCE).for_element(Locator::Css(ready)).await;
        let source = self.client.source().await.unwrap();
        assert!(found.is_ok(), "{ready} is not on the page:\n{source}");
        for token in [OPERATE_TOKEN, READ_TOKEN] {
            assert!(!source.contains(token), "a token is in the page:\n{source}");
        }
        source
    }

    /// The element `selector` finds on the page shown, failing when there is none.
    async fn element(&self, selector: &str) -> fantoccini::elements::Element {
        self.client.find(Locator::Css(selector)).await.unwrap_or_else(|_| panic!("no {selector}"))
    }

    /// Clicks `selector` and waits for `ready` on the page it leads to.
    async fn click(&self, selector: &str, ready: &str) -> String {
        self.element(selector).await.click().await.unwrap();
        self.ready(ready).await
    }

    async fn count(&self, selector: &str) -> usize {
        self.client.find_all(Locator::Css(selector)).await.unwrap().len()
    }

    /// The attribute `name` of the element `selector`, failing when it has none.
    async fn attr(&self, selector: &str, name: &str) -> String {
        let value = self.element(selector).await.attr(name).await.unwrap();
        value.unwrap_or_else(|| panic!("{selector} has no {name}"))
    }

    async fn text(&self, selector: &str) -> String {
        self.element(selector).await.text().await.unwrap()
    }

    /// Types `text` into the field `selector`.
    async fn type_into(&self, selector: &str, text: &str) {
        self.element(selector).await.send_keys(text).await.unwrap();
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
    }

    async fn log_in(&self, token: &str) {
        self.open("/login", "#token").await;
        self.type_into("#token", token).await;
        self.click("#login", "section.link").await;
    }

    /// The session cookie and the CSRF token of the page shown, for requests the page would
    /// not make.
    async fn session(&self) -> (String, String) {
        let cookie = self.client.get_named_cookie("fieldsync_session").await.unwrap();
        let csrf = self.attr("input[name=csrf]", "value").await;
        (cookie.value().to_string(), csrf)
    }
}

/// A form POST to `path` with the session `cookie`: its status and body, redirects not followed.
async fn forged_post(service: &Service, path: &str, cookie: &str, form: &[(&str, &str)]) -> (u16, String) {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let body = form.iter().map(|(name, value)| format!("{name}={value}")).collect::<Vec<_>>().join("&");
    let response = client
        .post(format!("{}{path}", service.base))
        .header("cookie", format!("fieldsync_session={cookie}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_decides_a_review_and_runs_the_link_in_the_page_and_a_reader_only_reads() {
    if !browser_available() {
        return;
    }
    let (dir, left, right) = setup("conflicts = { strategy = \"review\" }", 12);
    let cli = fieldsync(dir.path());
    assert_eq!(cli.run("first sync", &["run", "--json"]).report()["stats"]["writes_done"], json!(0));
    // Both sides change M001's address: a conflict held for review. M004's new address the
    // right side refuses: a write that fails.
    exec(
        &left,
        "UPDATE members SET email = 'left.choice@club.nl', updated_at = datetime('now') WHERE id = 'M001'",
    );
    exec(
        &right,
        "UPDATE people SET mail = 'right.choice@club.nl', modified = datetime('now') WHERE number = 'M001'",
    );
    exec(&left, "UPDATE members SET email = 'no-at-sign', updated_at = datetime('now') WHERE id = 'M004'");
    // M002 is deleted on the left and its phone changed on the right: a delete held for review.
    exec(&left, "DELETE FROM members WHERE id = 'M002'");
    exec(&right, "UPDATE people SET phone = '0699999999', modified = datetime('now') WHERE number = 'M002'");
    let held = cli.run("the conflict and the delete", &["run", "--full", "--json"]).report();
    assert_eq!(held["stats"]["reviews_open"], json!(2), "{held:#}");

    let service = Service::start(dir.path());
    let browser = Browser::start(&BrowserOptions { window_size: (1280, 1000), ..BrowserOptions::default() })
        .await
        .expect("Chromium starts");
    let client = browser.client();
    let pages = Pages { client, service: &service };

    // Without a session, a page goes to the login.
    pages.open("/reviews", "form.login").await;
    pages.screenshot("login").await;
    pages.log_in(OPERATE_TOKEN).await;
    assert_eq!(pages.text("section.link[data-link=members] a.reviews").await, "2 open");
    // The chart: four series, a bar for each of the last 30 days; today's reviews held count
    // the conflict.
    assert_eq!(pages.count("svg.chart").await, 4);
    for series in ["writes", "conflicts", "reviews", "failures"] {
        assert_eq!(pages.count(&format!("svg.chart[data-series={series}] rect.bar")).await, 30, "{series}");
    }
    let today = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date().to_string();
    let today_bar = format!("svg.chart[data-series=reviews] rect.bar[data-day='{today}']");
    let reviews_today: u64 = pages.attr(&today_bar, "data-value").await.parse().unwrap();
    assert!(reviews_today >= 1, "the conflict held today");
    pages.screenshot("overview").await;

    // The queue shows the held conflict with both values; its page decides it.
    let queue = pages.open("/reviews", "table.reviews").await;
    assert!(queue.contains("left.choice@club.nl") && queue.contains("right.choice@club.nl"), "{queue}");
    // Each present side's change time beside its value: both of the conflict's, the right
    // side's of the delete (the left has no record).
    assert_eq!(pages.count("table.reviews tr[data-key='M001'] small.changed").await, 2);
    assert_eq!(pages.count("table.reviews tr[data-key='M002'] td.right small.changed").await, 1);
    assert_eq!(pages.count("table.reviews tr[data-key='M002'] td.left small.changed").await, 0);
    pages.screenshot("reviews").await;
    // The delete shows the record the right side still holds, which a delete would remove.
    let kept = pages.text("table.reviews tr[data-key='M002'] td.right").await;
    assert!(kept.contains("email: member2@club.nl · mobile: 0699999999"), "{kept}");
    let review = pages.click("table.reviews tr[data-key='M001'] a[href^='/reviews/']", "#keep-left").await;
    assert!(review.contains("conflict: both sides changed it and the strategy is review"), "{review}");
    // Beside each side's value, when that side changed it (the rows' modification times).
    let left_changed = query(&left, "SELECT updated_at FROM members WHERE id = 'M001'");
    let right_changed = query(&right, "SELECT modified FROM people WHERE number = 'M001'");
    let (left_value, right_value) = (pages.text("dd.left").await, pages.text("dd.right").await);
    assert!(left_value.contains(&format!("changed {left_changed} UTC")), "{left_value}");
    assert!(right_value.contains(&format!("changed {right_changed} UTC")), "{right_value}");
    let review_path = client.current_url().await.unwrap().path().to_string();
    pages.type_into("#decided-value", "decided@club.nl").await;
    let decided = pages.click("#keep-value", "p.notice").await;
    assert_eq!(pages.text("#status").await, "resolved");
    assert!(
        decided.contains("decided by token \"ops\""),
        "the decision is audited with the token's name:\n{decided}"
    );
    pages.screenshot("review").await;

    // A POST without the form's CSRF token is refused; with it, the same POST is taken.
    let (cookie, csrf) = pages.session().await;
    let (status, body) = forged_post(&service, "/reviews/resolve", &cookie, &[("keep", "left")]).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("CSRF"), "{body}");
    let wrong = [("keep", "left"), ("csrf", "not-the-token")];
    assert_eq!(forged_post(&service, "/reviews/resolve", &cookie, &wrong).await.0, 403);
    let (status, body) =
        forged_post(&service, "/reviews/resolve", &cookie, &[("keep", "left"), ("csrf", &csrf)]).await;
    assert_eq!(
        status, 303,
        "with its CSRF token the same form is taken (no review ticked: nothing decided):\n{body}"
    );

    // Planned first: the plan shows the decided value, and nothing is written.
    pages.open("/", "section.link").await;
    let plan = pages.click("section.link[data-link=members] button.plan", "form.actions button.run").await;
    assert!(plan.contains("Nothing was written") && plan.contains("decided@club.nl"), "{plan}");
    assert_eq!(query(&right, "SELECT mail FROM people WHERE number = 'M001'"), "right.choice@club.nl");
    pages.screenshot("plan").await;

    // Run from the page; its run applies the decision.
    let last_run =
        service.get("/api/runs?limit=1", OPERATE_TOKEN).await.1["items"][0]["id"].as_i64().unwrap();
    pages.click("form.actions button.run", "p.notice").await;
    let started = Instant::now();
    let run = loop {
        let (_, runs) = service.get("/api/runs?limit=1", OPERATE_TOKEN).await;
        let newest = &runs["items"][0];
        if newest["id"].as_i64().unwrap() > last_run && newest["status"] != "running" {
            break newest["id"].as_i64().unwrap();
        }
        assert!(
            started.elapsed() < PATIENCE,
            "the run asked for in the page did not end:\n{}",
            service.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    pages.open("/runs", "table.runs").await;
    pages.screenshot("runs").await;
    pages.click(&format!("tr[data-run='{run}'] a"), "dl.run").await;
    pages.type_into("#key", "M001").await;
    let run_page = pages.click("form.filter button", "table.audit").await;
    assert_eq!(
        pages.count("table.audit tbody tr:not([data-key='M001'])").await,
        0,
        "the search keeps M001's entries"
    );
    let written = client.find_all(Locator::Css("table.audit tr[data-key='M001'] td.value")).await.unwrap();
    let mut values = Vec::new();
    for cell in written {
        values.push(cell.text().await.unwrap());
    }
    assert!(values.iter().any(|value| value.contains("decided@club.nl")), "{values:?}\n{run_page}");
    pages.screenshot("run").await;
    assert_eq!(query(&right, "SELECT mail FROM people WHERE number = 'M001'"), "decided@club.nl");
    assert_eq!(query(&left, "SELECT email FROM members WHERE id = 'M001'"), "decided@club.nl");

    // The review's page says which run applied the decision.
    pages.open(&review_path, "#applied").await;
    assert!(pages.text("#applied").await.contains(&format!("#{run}")));

    // The refused write waits in the outbox with the right side's message.
    let outbox = pages.open("/outbox", "table.outbox").await;
    assert!(outbox.contains("M004") && outbox.contains("CHECK constraint failed"), "{outbox}");
    pages.screenshot("outbox").await;

    // A phone's width: the same overview, one column.
    client.set_window_size(390, 844).await.unwrap();
    pages.open("/", "section.link").await;
    pages.screenshot("overview-phone").await;
    client.set_window_size(1280, 1000).await.unwrap();

    // A reader: no buttons, no values, and a forged POST with its own CSRF token gets 403.
    pages.click("form.logout button", "form.login").await;
    pages.log_in(READ_TOKEN).await;
    assert_eq!(pages.count("button.run, button.plan").await, 0);
    let queue = pages.open("/reviews?status=all", "table.reviews").await;
    assert!(!queue.contains("decided@club.nl") && !queue.contains("left.choice@club.nl"), "{queue}");
    assert!(queue.contains("•••"), "values are masked:\n{queue}");
    assert_eq!(pages.count("input[type=checkbox]").await, 0);
    pages.open(&review_path, "dl.review").await;
    assert_eq!(pages.count("form.decide").await, 0);
    let (cookie, csrf) = pages.session().await;
    let (status, body) = forged_post(&service, "/links/members/run", &cookie, &[("csrf", &csrf)]).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("may only read"), "{body}");
    let (status, _) = forged_post(
        &service,
        &format!("{review_path}/resolve"),
        &cookie,
        &[("csrf", &csrf), ("keep", "left")],
    )
    .await;
    assert_eq!(status, 403);
    pages.open("/", "section.link").await;
    pages.screenshot("overview-read-only").await;

    browser.close().await;
    assert_eq!(service.stop().code(), Some(0));
}
