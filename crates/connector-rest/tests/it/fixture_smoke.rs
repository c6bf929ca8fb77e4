//! The fixture server itself, spoken to with plain HTTP requests: each style's paging,
//! records, writes and errors, the faults it injects, authentication, the request log, and a
//! stop and restart on the same port.

use std::time::{Duration, Instant};

use crate::fixture::{Auth, FixtureServer, Style};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

/// A request of these tests, sent.
trait Answer {
    /// Sends the request and waits for its answer, which must come.
    async fn answer(self) -> reqwest::Response;
}

impl Answer for reqwest::RequestBuilder {
    async fn answer(self) -> reqwest::Response {
        self.send().await.expect("an answer")
    }
}

/// A client that uses no proxy from the environment.
fn client() -> Client {
    // reqwest is built without a default TLS provider; plain HTTP still needs one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::builder().no_proxy().build().expect("an HTTP client")
}

/// A GET answered with a JSON body: its status, headers and body.
async fn get_json(client: &Client, url: &str) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let response = client.get(url).answer().await;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.json().await.expect("a JSON body");
    (status, headers, body)
}

/// GETs `url`, which the API refuses with a 400 whose body names `code`; returns the body.
async fn get_refused(client: &Client, url: &str, code: &str) -> Value {
    let (status, _, body) = get_json(client, url).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {body}");
    assert_eq!(body["code"], code, "{url}");
    body
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    headers.get(name).and_then(|value| value.to_str().ok()).unwrap_or_default()
}

fn ids(records: &Value) -> Vec<i64> {
    records
        .as_array()
        .expect("an array of records")
        .iter()
        .map(|record| record["id"].as_i64().expect("an id"))
        .collect()
}

#[tokio::test]
async fn wordpress_pages_carry_totals_and_a_page_past_the_end_is_refused() {
    let server = FixtureServer::start(Style::WordPress).await;
    for n in 1..=5 {
        server.insert(json!({ "title": format!("Person {n}"), "knvb_id": format!("K{n}") }));
    }
    let client = client();
    let list = server.list_url();

    let (status, headers, body) =
        get_json(&client, &format!("{list}?page=1&per_page=2&orderby=id&order=asc&context=edit")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "x-wp-total"), "5");
    assert_eq!(header(&headers, "x-wp-totalpages"), "3");
    assert!(header(&headers, "link").contains("page=2"), "a next link: {headers:?}");
    assert_eq!(ids(&body), [1, 2]);
    assert_eq!(body[0]["title"], json!({ "raw": "Person 1", "rendered": "Person 1" }));
    assert_eq!(body[0]["meta"]["knvb_id"], "K1");
    assert_eq!(body[0]["status"], "publish");
    assert_eq!(body[0]["modified_gmt"], "2026-01-01T10:00:00");
    assert_eq!(body[0]["modified"], "2026-01-01T11:00:00", "local time in Europe/Amsterdam");

    let (_, _, last) = get_json(&client, &format!("{list}?page=3&per_page=2&orderby=id&order=asc")).await;
    assert_eq!(ids(&last), [5]);
    assert!(last[0]["title"].get("raw").is_none(), "raw titles only with context=edit");

    let past =
        get_refused(&client, &format!("{list}?page=4&per_page=2"), "rest_post_invalid_page_number").await;
    assert_eq!(past["data"]["status"], 400);

    get_refused(&client, &format!("{list}?per_page=101"), "rest_invalid_param").await;
}

#[tokio::test]
async fn wordpress_modified_after_is_strict_and_equal_times_are_ordered_by_id() {
    let server = FixtureServer::start(Style::WordPress).await;
    let first = server.insert(json!({ "title": "First" }));
    server.advance_secs(1);
    let second = server.insert(json!({ "title": "Second" }));
    let third = server.insert(json!({ "title": "Third" }));
    server.advance_secs(1);
    let fourth = server.insert(json!({ "title": "Fourth" }));
    server.advance_secs(1);
    server.update(first, json!({ "email": "first@example.org" }));

    let client = client();
    let list = server.list_url();
    let (_, _, all) = get_json(&client, &format!("{list}?orderby=modified&order=asc")).await;
    assert_eq!(ids(&all), [second, third, fourth, first], "by modified, then id");

    // 10:00:01 UTC, written without an offset: only what was modified after it.
    let (_, _, after) =
        get_json(&client, &format!("{list}?orderby=modified&order=asc&modified_after=2026-01-01T10:00:01"))
            .await;
    assert_eq!(ids(&after), [fourth, first]);
    let (_, _, zoned) = get_json(
        &client,
        &format!("{list}?orderby=modified&order=asc&modified_after=2026-01-01T11:00:01%2B01:00"),
    )
    .await;
    assert_eq!(ids(&zoned), [fourth, first], "an offset is honoured");

    get_refused(&client, &format!("{list}?modified_after=yesterday"), "rest_invalid_param").await;
}

#[tokio::test]
async fn wordpress_writes_replace_meta_per_key_and_always_move_modified() {
    let server = FixtureServer::start(Style::WordPress).await;
    let id = server.insert(json!({
        "title": "Ann Smith",
        "meta": {
            "email": "ann@example.org",
            "mobile": "0612345678",
            "contact_info": [{ "type": "email", "value": "ann@example.org" }, { "type": "phone", "value": "010-1234567" }],
        },
    }));
    let client = client();
    let item = server.item_url(id);

    server.advance_secs(5);
    let response = client
        .post(&item)
        .json(&json!({ "meta": { "mobile": "0687654321", "contact_info": [{ "type": "email", "value": "new@example.org" }] } }))
.answer()
.await;
    assert_eq!(response.status(), StatusCode::OK);
    let post: Value = response.json().await.expect("a post");
    assert_eq!(post["meta"]["email"], "ann@example.org", "keys not written are kept");
    assert_eq!(post["meta"]["mobile"], "0687654321");
    assert_eq!(
        post["meta"]["contact_info"],
        json!([{ "type": "email", "value": "new@example.org" }]),
        "arrays are replaced whole"
    );
    assert_eq!(post["modified_gmt"], "2026-01-01T10:00:05");
    assert_eq!(server.writes(id), 1);

    // The same values again: nothing changes but the modification time.
    server.advance_secs(5);
    let same = client.put(&item).json(&json!({ "meta": { "mobile": "0687654321" } })).answer().await;
    assert_eq!(same.status(), StatusCode::OK);
    let record = server.record(id).expect("the post");
    assert_eq!(record["modified_gmt"], "2026-01-01T10:00:10");
    assert_eq!(record["meta"]["mobile"], "0687654321");
    assert_eq!(server.writes(id), 2);

    // A person's edit is not a write.
    server.update(id, json!({ "mobile": "0600000000", "title": "Ann Jones" }));
    assert_eq!(server.writes(id), 2);
    assert_eq!(server.record(id).expect("the post")["title"]["raw"], "Ann Jones");

    let created = client
        .post(server.list_url())
        .json(&json!({ "status": "publish", "title": "Bob & Co", "meta": { "knvb_id": "K2" } }))
        .answer()
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.expect("a post");
    assert_eq!(created["title"], json!({ "raw": "Bob & Co", "rendered": "Bob &#038; Co" }));
    assert_eq!(created["meta"]["knvb_id"], "K2");

    let missing = client.get(server.item_url(999)).answer().await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let missing: Value = missing.json().await.expect("an error");
    assert_eq!(missing["code"], "rest_post_invalid_id");
}

#[tokio::test]
async fn wordpress_delete_trashes_first_and_deletes_with_force() {
    let server = FixtureServer::start(Style::WordPress).await;
    let id = server.insert(json!({ "title": "Ann" }));
    let client = client();
    let item = server.item_url(id);

    let trashed: Value = client.delete(&item).answer().await.json().await.expect("a post");
    assert_eq!(trashed["status"], "trash");
    let (_, _, listed) = get_json(&client, &format!("{}?status=any", server.list_url())).await;
    assert_eq!(ids(&listed), Vec::<i64>::new(), "status=any leaves the trash out");

    let again = client.delete(&item).answer().await;
    assert_eq!(again.status(), StatusCode::GONE);

    let deleted: Value =
        client.delete(format!("{item}?force=true")).answer().await.json().await.expect("a body");
    assert_eq!(deleted["deleted"], true);
    assert_eq!(deleted["previous"]["id"], id);
    assert!(server.record(id).is_none());
    assert_eq!(server.writes(id), 2);
}

#[tokio::test]
async fn invalid_emails_are_refused_when_asked() {
    let wordpress = FixtureServer::start(Style::WordPress).await;
    let id = wordpress.insert(json!({ "title": "Ann", "email": "ann@example.org" }));
    wordpress.reject_invalid_email(true);
    let client = client();

    let refused = client
        .post(wordpress.item_url(id))
        .json(&json!({ "meta": { "email": "not an address" } }))
        .answer()
        .await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let refused: Value = refused.json().await.expect("an error");
    assert_eq!(
        refused,
        json!({
            "code": "rest_invalid_param",
            "message": "Invalid parameter(s): meta",
            "data": { "status": 400, "params": { "meta": "meta.email is not a valid email." } },
        })
    );
    let in_contacts = client
        .post(wordpress.item_url(id))
        .json(&json!({ "meta": { "contact_info": [{ "type": "email", "value": "ann@" }] } }))
        .answer()
        .await;
    assert_eq!(in_contacts.status(), StatusCode::BAD_REQUEST);
    assert_eq!(wordpress.writes(id), 0);
    assert_eq!(wordpress.record(id).expect("the post")["meta"]["email"], "ann@example.org");

    let drf = FixtureServer::start(Style::Drf).await;
    let member = drf.insert(json!({ "email": "ann@example.org" }));
    drf.reject_invalid_email(true);
    let refused =
        client.patch(drf.item_url(member)).json(&json!({ "email": "ann.example.org" })).answer().await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        refused.json::<Value>().await.expect("an error"),
        json!({ "email": ["Enter a valid email address."] })
    );
    let accepted =
        client.patch(drf.item_url(member)).json(&json!({ "email": "ann@example.com" })).answer().await;
    assert_eq!(accepted.status(), StatusCode::OK);
}

#[tokio::test]
async fn drf_next_links_are_absolute_and_walk_every_record() {
    let server = FixtureServer::start(Style::Drf).await;
    for n in 1..=5 {
        server.insert(json!({ "federation_id": format!("F{n}"), "first_name": "Ann" }));
        server.advance_secs(1);
    }
    let client = client();

    let mut url =
        format!("{}?page_size=2&ordering=updated_at&updated_after=2026-01-01T10:00:01Z", server.list_url());
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let (status, _, body) = get_json(&client, &url).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["count"], 4, "updated_after is inclusive");
        seen.extend(ids(&body["results"]));
        pages += 1;
        match body["next"].as_str() {
            Some(next) => {
                assert!(next.starts_with(&server.list_url()), "an absolute next: {next}");
                assert!(next.contains("page_size=2") && next.contains("ordering=updated_at"), "{next}");
                url = next.to_owned();
            }
            None => break,
        }
    }
    assert_eq!(seen, [2, 3, 4, 5]);
    assert_eq!(pages, 2);

    let (_, _, second) = get_json(&client, &format!("{}?page=2&page_size=2", server.list_url())).await;
    assert!(second["previous"].as_str().is_some_and(|previous| !previous.contains("page=")), "{second}");
    assert_eq!(second["results"][0]["updated_at"], "2026-01-01T10:00:02Z");
    let (status, _, invalid) = get_json(&client, &format!("{}?page=9", server.list_url())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(invalid, json!({ "detail": "Invalid page." }));
}

#[tokio::test]
async fn drf_refuses_a_stale_if_match_and_answers_deletes_with_no_content() {
    let server = FixtureServer::start(Style::Drf).await;
    let id = server.insert(json!({ "federation_id": "F1", "email": "ann@example.org", "first_name": "Ann" }));
    let client = client();
    let item = server.item_url(id);
    assert!(item.ends_with(&format!("/api/members/{id}/")));

    let read = client.get(&item).answer().await;
    let etag = read.headers().get("etag").expect("an ETag").to_str().expect("text").to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "a quoted ETag: {etag}");

    server.update(id, json!({ "first_name": "Anna" }));
    let stale =
        client.patch(&item).header("if-match", &etag).json(&json!({ "email": "a@b.nl" })).answer().await;
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(stale.json::<Value>().await.expect("an error"), json!({ "detail": "Precondition failed." }));
    assert_eq!(server.writes(id), 0);

    let fresh = client.get(&item).answer().await;
    let etag = fresh.headers().get("etag").expect("an ETag").to_str().expect("text").to_owned();
    let patched =
        client.patch(&item).header("if-match", &etag).json(&json!({ "email": "a@b.nl" })).answer().await;
    assert_eq!(patched.status(), StatusCode::OK);
    let patched: Value = patched.json().await.expect("a record");
    assert_eq!(patched["email"], "a@b.nl");
    assert_eq!(patched["first_name"], "Anna", "PATCH keeps what it does not name");

    let put = client.put(&item).json(&json!({ "federation_id": "F1", "email": "c@d.nl" })).answer().await;
    let put: Value = put.json().await.expect("a record");
    assert!(put.get("first_name").is_none(), "PUT replaces every field: {put}");

    let deleted = client.delete(&item).answer().await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert!(deleted.bytes().await.expect("a body").is_empty());
    let gone = client.get(&item).answer().await;
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    assert_eq!(gone.json::<Value>().await.expect("an error"), json!({ "detail": "Not found." }));
    assert_eq!(server.writes(id), 3);

    let created = client.post(server.list_url()).json(&json!({ "federation_id": "F2" })).answer().await;
    assert_eq!(created.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn link_header_pages_and_naive_local_times() {
    let server = FixtureServer::start(Style::LinkHeader).await;
    for n in 1..=3 {
        server.insert(json!({ "key": format!("K{n}"), "email": format!("p{n}@example.org") }));
        server.advance_secs(60);
    }
    let client = client();

    let (_, headers, first) = get_json(&client, &format!("{}?per_page=2", server.list_url())).await;
    assert_eq!(first[0]["id"], "c-1");
    assert_eq!(first[0]["modified"], "2026-01-01 11:00:00", "naive Europe/Amsterdam time");
    let link = header(&headers, "link");
    assert!(link.contains("rel=\"next\"") && link.contains("rel=\"last\""), "{link}");
    let next = link
        .split(',')
        .find(|part| part.contains("rel=\"next\""))
        .and_then(|part| part.trim().strip_prefix('<'))
        .and_then(|part| part.split('>').next())
        .expect("a next link");
    assert!(next.starts_with("http://127.0.0.1:"), "{next}");

    let (_, headers, second) = get_json(&client, next).await;
    assert_eq!(second.as_array().map(Vec::len), Some(1));
    assert!(!header(&headers, "link").contains("rel=\"next\""), "no next on the last page");

    // 11:01 local is 10:01 UTC: the second record's time, included.
    let (_, _, since) =
        get_json(&client, &format!("{}?since=2026-01-01%2011:01:00", server.list_url())).await;
    let keys: Vec<&str> =
        since.as_array().expect("records").iter().filter_map(|r| r["key"].as_str()).collect();
    assert_eq!(keys, ["K2", "K3"]);

    let patched =
        client.patch(server.item_url(2)).json(&json!({ "email": "new@example.org" })).answer().await;
    assert_eq!(patched.status(), StatusCode::OK);
    assert_eq!(server.record(2).expect("the record")["key"], "K2", "a merge patch keeps other fields");
}

#[tokio::test]
async fn cursor_pages_to_the_end() {
    let server = FixtureServer::start(Style::Cursor).await;
    for n in 1..=5 {
        server.insert(json!({ "ext": format!("K{n}"), "fields": { "email": format!("p{n}@example.org") } }));
        server.advance_secs(1);
    }
    let client = client();

    let mut cursor: Option<String> = None;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let mut request =
            client.get(server.list_url()).query(&[("limit", "2"), ("updated_since", "1767261601")]);
        if let Some(cursor) = &cursor {
            request = request.query(&[("cursor", cursor)]);
        }
        let body: Value = request.answer().await.json().await.expect("a page");
        pages += 1;
        for record in body["data"].as_array().expect("data") {
            seen.push(record["ext"].as_str().expect("ext").to_owned());
            assert!(record["uuid"].as_str().is_some_and(|uuid| uuid.len() == 36), "{record}");
        }
        match body["meta"]["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ["K2", "K3", "K4", "K5"]);
    assert_eq!(pages, 2);
    assert_eq!(server.record(2).expect("a record")["updated"], 1_767_261_601);

    let invalid = client.get(format!("{}?cursor=zz", server.list_url())).answer().await;
    assert_eq!(invalid.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn offset_pages_shift_when_a_record_is_modified_while_paging() {
    let server = FixtureServer::start(Style::Offset).await;
    for n in 1..=4 {
        server.insert(json!({ "key": format!("K{n}") }));
        server.advance_secs(1);
    }
    let client = client();

    let (_, _, first) = get_json(&client, &format!("{}?offset=0&limit=2", server.list_url())).await;
    assert_eq!(first["total"], 4);
    assert_eq!(ids(&first["items"]), [1, 2]);
    assert_eq!(first["items"][0]["updated"], "2026-01-01T11:00:00+01:00");

    // Record 1 is modified between the pages: it moves to the end, and record 3 moves into
    // the first page, so the second page skips it.
    server.update(1, json!({ "key": "K1b" }));
    let (_, _, second) = get_json(&client, &format!("{}?offset=2&limit=2", server.list_url())).await;
    assert_eq!(ids(&second["items"]), [4, 1]);

    let (status, _, _) = get_json(&client, &format!("{}?limit=501", server.list_url())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn too_many_answers_429_with_retry_after_then_recovers() {
    let server = FixtureServer::start(Style::Drf).await;
    server.too_many(2, 3);
    let client = client();
    for _ in 0..2 {
        let response = client.get(server.list_url()).answer().await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(header(response.headers(), "retry-after"), "3");
    }
    let response = client.get(server.list_url()).answer().await;
    assert_eq!(response.status(), StatusCode::OK);
    let statuses: Vec<Option<u16>> = server.requests().iter().map(|request| request.status).collect();
    assert_eq!(statuses, [Some(429), Some(429), Some(200)]);
}

#[tokio::test]
async fn fail_every_fails_each_nth_request() {
    let server = FixtureServer::start(Style::Offset).await;
    server.fail_every(3, 503);
    let client = client();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(client.get(server.list_url()).answer().await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 503, 200, 200, 503]);
}

#[tokio::test]
async fn a_dropped_connection_gets_no_answer() {
    let server = FixtureServer::start(Style::Drf).await;
    server.drop_next(1);
    let client = client();
    let dropped = client.get(server.list_url()).send().await;
    assert!(dropped.is_err(), "no answer: {dropped:?}");
    let next = client.get(server.list_url()).answer().await;
    assert_eq!(next.status(), StatusCode::OK);
    let log = server.requests();
    assert_eq!(log.len(), 2);
    assert!(log[0].dropped && log[0].status.is_none());
    assert_eq!(log[1].status, Some(200));
}

#[tokio::test]
async fn a_malformed_list_answer_is_cut_json() {
    let server = FixtureServer::start(Style::WordPress).await;
    server.insert(json!({ "title": "Ann" }));
    server.malformed_next(1);
    let client = client();
    let cut = client.get(server.list_url()).answer().await;
    assert_eq!(cut.status(), StatusCode::OK);
    assert_eq!(header(cut.headers(), "x-wp-total"), "1");
    let text = cut.text().await.expect("a body");
    assert!(!text.is_empty() && serde_json::from_str::<Value>(&text).is_err(), "not JSON: {text}");
    let (_, _, whole) = get_json(&client, &server.list_url()).await;
    assert_eq!(ids(&whole), [1]);
}

#[tokio::test]
async fn slow_delays_every_answer() {
    let server = FixtureServer::start(Style::Cursor).await;
    server.slow(Duration::from_millis(200));
    let client = client();
    let started = Instant::now();
    let response = client.get(server.list_url()).answer().await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(200), "{:?}", started.elapsed());
}

#[tokio::test]
async fn change_after_read_edits_the_record_once_it_was_read() {
    let server = FixtureServer::start(Style::Drf).await;
    let id = server.insert(json!({ "first_name": "Ann" }));
    server.change_after_read(id, json!({ "first_name": "Anna" }));
    let client = client();

    let (_, _, listed) = get_json(&client, &server.list_url()).await;
    assert_eq!(listed["results"][0]["first_name"], "Ann", "the read sees the record before the edit");
    assert_eq!(server.record(id).expect("the record")["first_name"], "Anna");
    assert_eq!(server.writes(id), 0, "a person's edit");

    // Once only.
    server.update(id, json!({ "first_name": "Annie" }));
    let (_, _, again) = get_json(&client, &server.item_url(id)).await;
    assert_eq!(again["first_name"], "Annie");
    assert_eq!(server.record(id).expect("the record")["first_name"], "Annie");
}

#[tokio::test]
async fn auth_is_required_in_every_form() {
    let client = client();

    let server = FixtureServer::start(Style::WordPress).await;
    server.require_auth(Auth::Basic { user: "admin".to_owned(), password: "abcd efgh".to_owned() });
    let missing = client.get(server.list_url()).answer().await;
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(missing.json::<Value>().await.expect("an error")["data"]["status"], 401);
    let wrong = client.get(server.list_url()).basic_auth("admin", Some("wrong")).answer().await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.json::<Value>().await.expect("an error")["code"], "incorrect_password");
    let right = client.get(server.list_url()).basic_auth("admin", Some("abcd efgh")).answer().await;
    assert_eq!(right.status(), StatusCode::OK);

    let server = FixtureServer::start(Style::Drf).await;
    server.require_auth(Auth::Header { name: "Authorization".to_owned(), value: "Token abc".to_owned() });
    let missing = client.get(server.list_url()).answer().await;
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        missing.json::<Value>().await.expect("an error"),
        json!({ "detail": "Authentication credentials were not provided." })
    );
    let right = client.get(server.list_url()).header("authorization", "Token abc").answer().await;
    assert_eq!(right.status(), StatusCode::OK);

    let server = FixtureServer::start(Style::Cursor).await;
    server.require_auth(Auth::Bearer("t0ken".to_owned()));
    let wrong = client.get(server.list_url()).bearer_auth("other").answer().await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let right = client.get(server.list_url()).bearer_auth("t0ken").answer().await;
    assert_eq!(right.status(), StatusCode::OK);

    let server = FixtureServer::start(Style::Offset).await;
    server.require_auth(Auth::Query { name: "api_key".to_owned(), value: "k1".to_owned() });
    let missing = client.get(server.list_url()).answer().await;
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    let right = client.get(server.list_url()).query(&[("api_key", "k1")]).answer().await;
    assert_eq!(right.status(), StatusCode::OK);
    let log = server.requests();
    assert!(!log[0].authorization && log[1].path.contains("api_key=k1"));
}

#[tokio::test]
async fn stop_refuses_connections_and_restart_keeps_the_data_on_the_same_port() {
    let server = FixtureServer::start(Style::Offset).await;
    let id = server.insert(json!({ "key": "K1" }));
    let client = client();
    let base = server.base_url();
    assert_eq!(client.get(server.item_url(id)).answer().await.status(), StatusCode::OK);

    server.stop();
    let refused = client.get(server.item_url(id)).send().await;
    assert!(refused.is_err(), "no server: {refused:?}");

    server.insert(json!({ "key": "K2" }));
    server.restart();
    assert_eq!(server.base_url(), base);
    let (status, _, body) = get_json(&client, &server.list_url()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["total"], 2);
    assert_eq!(body["items"][0]["key"], "K1");
}

#[tokio::test]
async fn max_requests_in_window_counts_arrivals() {
    let server = FixtureServer::start(Style::LinkHeader).await;
    let client = client();
    for _ in 0..3 {
        client.get(server.list_url()).answer().await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..2 {
        client.get(server.list_url()).answer().await;
    }
    assert_eq!(server.requests().len(), 5);
    assert_eq!(server.max_requests_in_window(Duration::from_secs(10)), 5);
    assert_eq!(server.max_requests_in_window(Duration::from_millis(250)), 3);
    assert_eq!(server.max_requests_in_window(Duration::from_nanos(1)), 1);
    server.clear_requests();
    assert_eq!(server.max_requests_in_window(Duration::from_secs(10)), 0);
}
