//! The real Django club site of `testkit::django` comes up as documented: seeded players that
//! look like a Dutch club's, the API's paging, auth, null refusal, e-mail validation and stale
//! versions, the admin's login page, direct reads and a person's edit through the model, the
//! request log, and nothing left running after drop.

#![cfg(feature = "testkit")]

use std::io::{Read as _, Write as _};
use std::net::TcpStream;

use fieldsync_connector::testkit::django::{DjangoOptions, DjangoServer};
use serde_json::Value as Json;

/// One HTTP/1.0 request to the site (no client library here): the status and the body.
fn request(
    server: &DjangoServer,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<&Json>,
) -> (u16, String) {
    let address = server.url().trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&address).expect("the site accepts connections");
    let body = body.map(Json::to_string).unwrap_or_default();
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: {address}\r\nAccept: application/json\r\n");
    if let Some(token) = auth {
        head.push_str(&format!("Authorization: Token {token}\r\n"));
    }
    if !body.is_empty() {
        head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body.as_bytes()))
        .expect("a request sent");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("an answer");
    let status = answer.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status line");
    let body = answer.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, body)
}

fn json(text: &str) -> Json {
    serde_json::from_str(text).unwrap_or_else(|error| panic!("not JSON ({error}): {text}"))
}

#[test]
fn the_django_site_serves_its_api_and_admin_and_is_gone_after_drop() {
    let options = DjangoOptions { user: "clubadmin".into(), players: 80, ..DjangoOptions::default() };
    let Some(server) = DjangoServer::start(&options) else { return };
    let token = server.token().to_owned();

    // The seeded players, read straight from the file, look like a Dutch club's.
    let players = server.players();
    assert_eq!(players.len(), 80);
    let mobile_ok = |mobile: &str| {
        let digits = |text: &str| text.len() == 8 && text.bytes().all(|byte| byte.is_ascii_digit());
        mobile.is_empty()
            || mobile.strip_prefix("+316").is_some_and(digits)
            || mobile.strip_prefix("06-").is_some_and(digits)
    };
    for player in &players {
        let mobile = player["mobile"].as_str().expect("a mobile is text");
        assert!(mobile_ok(mobile), "{mobile:?} is not a Dutch mobile number");
        assert!(player["tags"].is_array(), "tags {:?} are not a list", player["tags"]);
    }
    let count =
        |test: &dyn Fn(&serde_json::Map<String, Json>) -> bool| players.iter().filter(|p| test(p)).count();
    assert!(count(&|p| p["email"] == "") > 0, "no player without an e-mail address");
    assert!(count(&|p| p["shirt_number"].is_null()) > 0, "no player without a shirt number");
    assert!(count(&|p| p["active"] == false) > 0, "no inactive player");
    assert!(count(&|p| p["mobile"].as_str().is_some_and(|m| m.starts_with("06-"))) > 0, "no 06- number");
    assert_eq!(players[0]["federation_id"], "FED00001");

    // The API pages with an absolute `next`, and refuses a wrong token.
    let (status, body) = request(&server, "GET", "/api/players/?page_size=30", Some(&token), None);
    assert_eq!(status, 200, "{body}");
    let page = json(&body);
    assert_eq!(page["count"], 80);
    assert_eq!(page["results"].as_array().map(Vec::len), Some(30));
    assert_eq!(page["next"], format!("{}?page=2&page_size=30", server.players_url()));
    let (status, _) = request(&server, "GET", "/api/players/", Some("not-the-token"), None);
    assert_eq!(status, 401);

    let first = &page["results"][0];
    let id = first["id"].as_i64().expect("an integer id");
    let item = format!("/api/players/{id}/");
    let (status, body) =
        request(&server, "PATCH", &item, Some(&token), Some(&serde_json::json!({"first_name": null})));
    assert_eq!(
        (status, json(&body)),
        (400, serde_json::json!({"first_name": ["This field may not be null."]}))
    );
    let refused = serde_json::json!({"email": "kees@invalid.example"});
    let (status, body) = request(&server, "PATCH", &item, Some(&token), Some(&refused));
    assert_eq!(status, 400);
    assert_eq!(json(&body)["email"][0], "E-mail addresses at invalid.example are not accepted.");

    // A write naming the current version lands and counts; naming it again is stale (409).
    let version = first["version"].as_i64().expect("a version");
    let write = serde_json::json!({"mobile": "06-12345678", "version": version});
    let (status, body) = request(&server, "PATCH", &item, Some(&token), Some(&write));
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["version"], version + 1);
    let (status, body) = request(&server, "PATCH", &item, Some(&token), Some(&write));
    assert_eq!(status, 409, "{body}");

    // A person's edit through the model moves the version and the time, seen in the file.
    let before = server.query(&format!("SELECT version, updated_at FROM club_player WHERE id = {id}"));
    server.python(&format!("p = Player.objects.get(pk={id}); p.last_name = 'van Dijk'; p.save()"));
    let after =
        server.query(&format!("SELECT last_name, version, updated_at FROM club_player WHERE id = {id}"));
    assert_eq!(after[0]["last_name"], "van Dijk");
    assert_eq!(after[0]["version"], version + 2);
    assert_ne!(after[0]["updated_at"], before[0]["updated_at"]);
    let since = "/api/players/?updated_after=".to_owned()
        + &before[0]["updated_at"].as_str().unwrap().replace(' ', "T")
        + "Z";
    let (status, body) = request(&server, "GET", &since, Some(&token), None);
    assert_eq!(status, 200, "{body}");
    let recent: Vec<i64> =
        json(&body)["results"].as_array().unwrap().iter().map(|p| p["id"].as_i64().unwrap()).collect();
    assert_eq!(recent, vec![id], "updated_after from the last write's time");

    // The admin's login page carries its CSRF token.
    let (status, body) = request(&server, "GET", "/admin/login/", None, None);
    assert_eq!(status, 200);
    assert!(body.contains("csrfmiddlewaretoken"), "no CSRF token on the login page");

    // The site logged every request; exactly the four writes may have changed something.
    let changing: Vec<_> = server.requests().into_iter().filter(|request| request.changes()).collect();
    assert_eq!(changing.len(), 4, "{changing:?}");
    assert!(changing.iter().all(|request| request.method == "PATCH" && request.path == item));
    assert_eq!(changing.iter().map(|request| request.status).collect::<Vec<_>>(), vec![400, 400, 200, 409]);

    let address = server.url().trim_start_matches("http://").to_owned();
    let directory = server.database().parent().expect("a directory").to_path_buf();
    drop(server);
    assert!(TcpStream::connect(&address).is_err(), "the site still answers after drop");
    assert!(!directory.exists(), "the site's directory outlived it");
}
