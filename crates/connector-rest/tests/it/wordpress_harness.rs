//! The WordPress test harness works: a real site comes up, and its people endpoint behaves as
//! the rest connector's tests expect (meta fields, paging headers, modified-time filters,
//! whole replacement of `contact_info`, a 400 for a bad email, a 401 for a wrong password).

use fieldsync_connector::testkit::wordpress::WordPress;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A client for plain HTTP; reqwest is built without a TLS provider of its own.
fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// Sends `request` with the site's application password and returns the status, the
/// headers and the JSON body.
async fn send(
    wp: &WordPress,
    request: reqwest::RequestBuilder,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let response =
        request.basic_auth(wp.user(), Some(wp.app_password())).send().await.expect("the site answers");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.json().await.expect("a JSON body");
    (status, headers, body)
}

fn header(headers: &reqwest::header::HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .expect("an ASCII header")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_wordpress_serves_people_over_rest() {
    let Some(wp) = WordPress::start().await else { return };
    eprintln!("WordPress started in {:.2?} at {}", wp.started_in(), wp.site_url());
    let http = client();
    let base = wp.base_url();

    // Create, with every kind of meta field.
    let contact_info = json!([
        { "type": "email", "value": "jan.work@example.com" },
        { "type": "phone", "value": "+31 20 123 4567" },
    ]);
    let (status, _, created) = send(
        &wp,
        http.post(&base).json(&json!({
            "title": "Jan Jansen",
            "status": "publish",
            "meta": {
                "knvb_id": "ABC1234",
                "first_name": "Jan",
                "last_name": "Jansen",
                "email": "jan@example.com",
                "mobile": "+31 6 12345678",
                "birth_date": "1990-05-17",
                "financial_block": true,
                "contact_info": contact_info,
            },
        })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_u64().expect("the new person's id");

    // Read back in the edit context.
    let person_url = format!("{base}/{id}");
    let (status, _, person) = send(&wp, http.get(&person_url).query(&[("context", "edit")])).await;
    assert_eq!(status, StatusCode::OK, "{person}");
    assert_eq!(person["title"]["raw"], "Jan Jansen");
    assert_eq!(person["status"], "publish");
    let meta = &person["meta"];
    assert_eq!(meta["knvb_id"], "ABC1234");
    assert_eq!(meta["email"], "jan@example.com");
    assert_eq!(meta["email2"], "", "an unset string field reads as empty");
    assert_eq!(meta["financial_block"], true);
    assert_eq!(meta["contact_info"], contact_info);
    assert!(person["modified_gmt"].is_string(), "{person}");

    // Two more, to page through three people two at a time in order of modification.
    for name in ["Piet Pietersen", "Klaas Klaassen"] {
        let (status, _, body) =
            send(&wp, http.post(&base).json(&json!({ "title": name, "status": "publish" }))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let page = |number: &'static str| {
        http.get(&base).query(&[
            ("per_page", "2"),
            ("orderby", "modified"),
            ("order", "asc"),
            ("context", "edit"),
            ("page", number),
        ])
    };
    let (status, headers, first) = send(&wp, page("1")).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(header(&headers, "X-WP-Total"), "3");
    assert_eq!(header(&headers, "X-WP-TotalPages"), "2");
    assert_eq!(first.as_array().expect("a list").len(), 2);
    let (_, _, second) = send(&wp, page("2")).await;
    assert_eq!(second.as_array().expect("a list").len(), 1);

    // modified_after is honoured (WordPress ignores parameters it does not know).
    let (status, _, all) =
        send(&wp, http.get(&base).query(&[("modified_after", "2000-01-01T00:00:00")])).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(all.as_array().expect("a list").len(), 3);
    let (_, _, none) = send(&wp, http.get(&base).query(&[("modified_after", "2999-01-01T00:00:00")])).await;
    assert_eq!(none, json!([]));

    // An update replaces contact_info whole and leaves other fields alone.
    let replaced = json!([{ "type": "mobile", "value": "+31 6 87654321" }]);
    let (status, _, updated) =
        send(&wp, http.post(&person_url).json(&json!({ "meta": { "contact_info": replaced } }))).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    let (_, _, person) = send(&wp, http.get(&person_url).query(&[("context", "edit")])).await;
    assert_eq!(person["meta"]["contact_info"], replaced);
    assert_eq!(person["meta"]["email"], "jan@example.com");

    // An invalid email is refused with a 400 that names the field, and nothing is written.
    let (status, _, refused) = send(
        &wp,
        http.post(&person_url).json(&json!({ "title": "Changed", "meta": { "email": "not an address" } })),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert_eq!(refused["code"], "rest_invalid_param");
    let message = refused["message"].as_str().expect("an error message");
    assert!(message.contains("email"), "{message}");
    let (_, _, person) = send(&wp, http.get(&person_url).query(&[("context", "edit")])).await;
    assert_eq!(person["title"]["raw"], "Jan Jansen");
    assert_eq!(person["meta"]["email"], "jan@example.com");

    // A wrong password is a 401 wherever the request needs a user: a write, or a read in the
    // edit context. WordPress 6.1 answers a plain read with a wrong password as an anonymous
    // one (published people, public fields), so a client that must know that its credentials
    // work reads with context=edit.
    let wrong =
        |request: reqwest::RequestBuilder| request.basic_auth(wp.user(), Some("wrong password")).send();
    let edit_read = wrong(http.get(&base).query(&[("context", "edit")])).await.expect("the site answers");
    assert_eq!(edit_read.status(), StatusCode::UNAUTHORIZED);
    let write = wrong(http.post(&base).json(&json!({ "title": "Nobody" }))).await.expect("the site answers");
    assert_eq!(write.status(), StatusCode::UNAUTHORIZED);
    let plain_read = wrong(http.get(&base)).await.expect("the site answers");
    assert_eq!(plain_read.status(), StatusCode::OK, "WordPress 6.1 reads as anonymous");

    // Delete for good.
    let (status, _, deleted) = send(&wp, http.delete(&person_url).query(&[("force", "true")])).await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(deleted["deleted"], true, "{deleted}");
    let (status, _, gone) = send(&wp, http.get(&person_url)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{gone}");

    // The setup helpers.
    let ids = wp.create_people(3).await;
    assert_eq!(ids.len(), 3);
    let rows = wp
        .sql(&format!(
            "SELECT meta_value FROM {}postmeta WHERE post_id = {} AND meta_key = 'knvb_id'",
            wp.table_prefix(),
            ids[2]
        ))
        .await;
    assert_eq!(rows, vec![json!({ "meta_value": "FS00003" })]);
}
