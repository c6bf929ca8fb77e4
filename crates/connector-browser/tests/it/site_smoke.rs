//! The fixture admin site itself, spoken to with plain HTTP/1.1 requests (no browser): the
//! login and sessions, the member list and its CSV export, the member pages and their forms,
//! validation, the faults it injects and the request log.

use std::fmt::Write as _;
use std::io;
use std::time::{Duration, Instant};

use fieldsync_connector_browser::testkit::site::{EXPORT_COLUMNS, Page, SiteServer, percent_encode};
use jiff::Timestamp;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ---------------------------------------------------------------------------------------------
// A minimal HTTP client
// ---------------------------------------------------------------------------------------------

/// An answer: its status, headers (names in lower case) and body.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    /// The first value of a header, when it was sent.
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    /// The `Location` header of a redirect.
    fn location(&self) -> &str {
        self.header("location").unwrap_or_else(|| panic!("a Location header: {self:?}"))
    }
}

/// Sends one request on a new connection (`Connection: close`) to the site at `base`
/// (`http://host:port`): a GET, or a POST with a form body when `form` is given.
async fn send(
    base: &str,
    path: &str,
    cookie: Option<&str>,
    form: Option<&[(&str, &str)]>,
) -> io::Result<Reply> {
    let host = base.strip_prefix("http://").expect("an http:// URL");
    let mut stream = TcpStream::connect(host).await?;
    let method = if form.is_some() { "POST" } else { "GET" };
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if let Some(cookie) = cookie {
        let _ = write!(request, "Cookie: {cookie}\r\n");
    }
    let body = form.map(encode_form).unwrap_or_default();
    if form.is_some() {
        let _ = write!(
            request,
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        );
    }
    request.push_str("\r\n");
    request.push_str(&body);
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    Ok(parse_reply(&raw))
}

fn parse_reply(raw: &[u8]) -> Reply {
    let split = raw.windows(4).position(|window| window == b"\r\n\r\n").expect("the end of the headers");
    let head = std::str::from_utf8(&raw[..split]).expect("headers in ASCII");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("a status line");
    let status = status_line.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status code");
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked =
        headers.iter().any(|(name, value)| name == "transfer-encoding" && value.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Reply { status, headers, body: String::from_utf8(body).expect("a UTF-8 body") }
}

/// The body of a `Transfer-Encoding: chunked` answer.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let end = raw.windows(2).position(|window| window == b"\r\n").expect("a chunk size line");
        let size_text = std::str::from_utf8(&raw[..end]).expect("a chunk size in ASCII");
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or_default().trim(), 16)
            .expect("a chunk size in hexadecimal");
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[end + 2..end + 2 + size]);
        raw = &raw[end + 2 + size + 2..];
    }
}

fn encode_form(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (index, (name, value)) in pairs.iter().enumerate() {
        if index > 0 {
            out.push('&');
        }
        out.push_str(&percent_encode(name, b""));
        out.push('=');
        out.push_str(&percent_encode(value, b""));
    }
    out
}

/// A visitor of the site: its base URL and, once logged in, its session cookie.
struct Visitor {
    base: String,
    cookie: Option<String>,
}

impl Visitor {
    fn new(site: &SiteServer) -> Visitor {
        Visitor { base: site.base_url(), cookie: None }
    }

    /// A visitor logged in with the site's credentials.
    async fn logged_in(site: &SiteServer) -> Visitor {
        let mut visitor = Visitor::new(site);
        let (user, password) = site.credentials();
        let reply =
            visitor.post("/login", &[("username", &user), ("password", &password), ("next", "")]).await;
        assert_eq!(reply.status, 303, "a login redirects: {reply:?}");
        visitor.cookie = Some(session_of(&reply).expect("a session cookie"));
        visitor
    }

    async fn get(&self, path: &str) -> Reply {
        send(&self.base, path, self.cookie.as_deref(), None).await.expect("an answer")
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Reply {
        send(&self.base, path, self.cookie.as_deref(), Some(form)).await.expect("an answer")
    }
}

/// `session=<token>` from a `Set-Cookie` header of the right shape.
fn session_of(reply: &Reply) -> Option<String> {
    let cookie = reply.header("set-cookie")?;
    let (pair, attributes) = cookie.split_once("; ")?;
    let token = pair.strip_prefix("session=")?;
    (attributes == "HttpOnly; Path=/" && !token.is_empty()).then(|| pair.to_owned())
}

// ---------------------------------------------------------------------------------------------
// Reading the pages
// ---------------------------------------------------------------------------------------------

/// The start tag of the element whose `id` is `id`, such as `<input type="text" id="email" ..>`.
fn tag<'b>(body: &'b str, id: &str) -> Option<&'b str> {
    let needle = format!(" id=\"{id}\"");
    let at = body.find(&needle)?;
    let start = body[..at].rfind('<')?;
    let end = at + body[at..].find('>')? + 1;
    Some(&body[start..end])
}

/// The value of an attribute of a start tag (`Some("")` for one without a value), unescaped.
fn attr(tag: &str, name: &str) -> Option<String> {
    let with_value = format!(" {name}=\"");
    if let Some(at) = tag.find(&with_value) {
        let rest = &tag[at + with_value.len()..];
        return Some(unescape(&rest[..rest.find('"')?]));
    }
    let bare = [format!(" {name}>"), format!(" {name} ")];
    bare.iter().any(|bare| tag.contains(bare.as_str())).then(String::new)
}

/// The text inside the element whose `id` is `id` (up to its first child or end tag),
/// unescaped.
fn text(body: &str, id: &str) -> Option<String> {
    let open = tag(body, id)?;
    let start = body.find(open)? + open.len();
    let end = start + body[start..].find('<')?;
    Some(unescape(&body[start..end]))
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// The `data-id` of every member row of a list page, in order.
fn row_ids(body: &str) -> Vec<String> {
    body.split("<tr class=\"member\" data-id=\"")
        .skip(1)
        .map(|rest| rest[..rest.find('"').expect("the end of data-id")].to_owned())
        .collect()
}

/// A member with every field filled, in values that need quoting in the CSV export (a comma,
/// quotes, line breaks) and escaping in HTML (`&`, `<`, quotes), and a leading line break in
/// the remarks that a textarea would drop.
fn anna() -> serde_json::Value {
    json!({
        "relation_code": "ABC123X",
        "first_name": "Anna",
        "last_name": "O'Brien & <Co>",
        "email": "anna@example.org",
        "email2": "anna@work.example",
        "mobile": "+31 6 12345678",
        "phone": "020 123 4567",
        "note": "note \"quoted\"",
        "remarks": "\nfirst line, with a comma\nsecond \"<line>\"",
        "financial_block": true,
    })
}

fn ms(t: Timestamp) -> i64 {
    t.as_millisecond()
}

// ---------------------------------------------------------------------------------------------
// Login and sessions
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn pages_without_a_session_redirect_to_the_login_which_leads_back() {
    let site = SiteServer::start().await;
    let id = site.insert(json!({ "first_name": "Anna" }));
    let visitor = Visitor::new(&site);

    let reply = visitor.get("/members?page=2").await;
    assert_eq!(reply.status, 303);
    assert_eq!(reply.location(), "/login?next=/members%3Fpage%3D2");
    assert!(reply.header("set-cookie").is_none(), "no session without a login");

    for path in [Page::General.path(&id), "/members/export.csv".to_owned(), "/".to_owned()] {
        let reply = visitor.get(&path).await;
        assert_eq!(reply.status, 303, "{path}");
        assert!(reply.location().starts_with("/login?next="), "{path}: {}", reply.location());
    }

    let login = visitor.get("/login?next=%2Fmembers%3Fpage%3D2").await;
    assert_eq!(login.status, 200);
    let form = tag(&login.body, "login").expect("form#login");
    assert_eq!(attr(form, "method").as_deref(), Some("post"));
    assert_eq!(attr(form, "action").as_deref(), Some("/login"));
    assert_eq!(
        attr(tag(&login.body, "username").expect("input#username"), "name").as_deref(),
        Some("username")
    );
    let password = tag(&login.body, "password").expect("input#password");
    assert_eq!(attr(password, "type").as_deref(), Some("password"));
    assert!(tag(&login.body, "login-submit").is_some(), "button#login-submit");
    assert!(login.body.contains("<input type=\"hidden\" name=\"next\" value=\"/members?page=2\">"));
    assert!(tag(&login.body, "login-error").is_none(), "no error before a try");

    let (user, password) = site.credentials();
    let reply = visitor
        .post("/login", &[("username", &user), ("password", &password), ("next", "/members?page=2")])
        .await;
    assert_eq!(reply.status, 303);
    assert_eq!(reply.location(), "/members?page=2");
    let cookie = session_of(&reply).expect("session=<token>; HttpOnly; Path=/");
    assert_eq!(site.logins(), 1);

    let visitor = Visitor { base: site.base_url(), cookie: Some(cookie) };
    let list = visitor.get("/members").await;
    assert_eq!(list.status, 200);
    assert_eq!(row_ids(&list.body), [id]);
}

#[tokio::test]
async fn a_login_leads_only_to_a_path_on_the_site() {
    let site = SiteServer::start().await;
    let (user, password) = site.credentials();
    let visitor = Visitor::new(&site);
    for (next, expected) in
        [("", "/members"), ("//elsewhere.example/", "/members"), ("https://elsewhere.example/", "/members")]
    {
        let reply =
            visitor.post("/login", &[("username", &user), ("password", &password), ("next", next)]).await;
        assert_eq!(reply.status, 303, "next={next}");
        assert_eq!(reply.location(), expected, "next={next}");
    }
    let reply = visitor.post("/login", &[("username", &user), ("password", &password)]).await;
    assert_eq!(reply.location(), "/members", "no next at all");
    assert_eq!(site.logins(), 4);
}

#[tokio::test]
async fn wrong_credentials_show_the_login_again_with_an_error() {
    let site = SiteServer::start().await;
    let (user, password) = site.credentials();
    let visitor = Visitor::new(&site);

    for (user, password) in [(user.as_str(), "wrong"), ("someone", password.as_str()), ("", "")] {
        let reply =
            visitor.post("/login", &[("username", user), ("password", password), ("next", "/members")]).await;
        assert_eq!(reply.status, 200);
        assert!(reply.header("set-cookie").is_none(), "no session for {user:?}");
        assert_eq!(text(&reply.body, "login-error").as_deref(), Some("Invalid username or password"));
        assert_eq!(attr(tag(&reply.body, "login-error").unwrap(), "class").as_deref(), Some("error"));
        assert!(reply.body.contains("name=\"next\" value=\"/members\""), "next is kept for the next try");
    }
    assert_eq!(site.logins(), 0);
    assert_eq!(site.failed_logins(), 3);

    let forged = Visitor { base: site.base_url(), cookie: Some("session=0123456789abcdef".to_owned()) };
    assert_eq!(forged.get("/members").await.status, 303, "a session the site did not make is no session");
}

#[tokio::test]
async fn a_session_expires_after_its_requests_and_a_form_posted_then_is_lost() {
    let site = SiteServer::start().await;
    let id = site.insert(json!({ "email": "old@example.org" }));
    site.expire_sessions_after(Some(2));
    let visitor = Visitor::logged_in(&site).await;
    let page = Page::General.path(&id);

    assert_eq!(visitor.get("/members").await.status, 200, "request 1");
    assert_eq!(visitor.get(&page).await.status, 200, "request 2");
    let before = site.member(&id).unwrap();
    let reply = visitor.post(&page, &[("email", "new@example.org")]).await;
    assert_eq!(reply.status, 303, "request 3 exceeds the session");
    assert_eq!(reply.location(), format!("/login?next={page}"), "the login leads back to the form's page");
    assert_eq!(site.member(&id).unwrap(), before, "the lost form changed nothing, not even the time");
    assert_eq!(site.lost_posts(), 1);
    assert_eq!(site.saves(&id), 0);
    let logged = site.requests().pop().unwrap();
    assert_eq!((logged.method.as_str(), logged.session, logged.lost), ("POST", false, true));

    assert_eq!(visitor.get(&page).await.status, 303, "the expired session is gone");
    let expired = visitor;

    let visitor = Visitor::logged_in(&site).await;
    let reply = visitor.post(&page, &[("email", "new@example.org")]).await;
    assert_eq!(reply.status, 303);
    assert_eq!(reply.location(), page);
    assert_eq!(site.member(&id).unwrap().email, "new@example.org");
    assert_eq!(site.saves(&id), 1);
    assert_eq!(site.lost_posts(), 1);
    assert_eq!(site.logins(), 2);

    site.expire_sessions_after(None);
    for _ in 0..5 {
        assert_eq!(visitor.get("/members").await.status, 200, "sessions no longer expire");
    }
    assert_eq!(expired.get("/members").await.status, 303, "an expired session does not come back");
}

#[tokio::test]
async fn expire_all_sessions_and_logout_end_sessions() {
    let site = SiteServer::start().await;
    let first = Visitor::logged_in(&site).await;
    let second = Visitor::logged_in(&site).await;
    assert_ne!(first.cookie, second.cookie, "each login has its own session");
    assert_eq!(first.get("/members").await.status, 200);
    assert_eq!(second.get("/members").await.status, 200);

    site.expire_all_sessions();
    assert_eq!(first.get("/members").await.status, 303);
    assert_eq!(second.get("/members").await.status, 303);

    let third = Visitor::logged_in(&site).await;
    assert_eq!(third.get("/members").await.status, 200);
    let reply = third.get("/logout").await;
    assert_eq!((reply.status, reply.location()), (303, "/login"));
    assert_eq!(third.get("/members").await.status, 303, "logged out");
    assert_eq!(site.logins(), 3);
}

// ---------------------------------------------------------------------------------------------
// The list and the export
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_member_list_is_paged() {
    let site = SiteServer::start().await;
    let ids: Vec<String> = (1..=30)
        .map(|n| {
            site.insert(json!({
                "first_name": format!("First{n}"),
                "last_name": "Last",
                "email": format!("m{n}@example.org"),
            }))
        })
        .collect();
    assert_eq!(ids[0], "KNVB0001");
    assert_eq!(ids[29], "KNVB0030");
    let visitor = Visitor::logged_in(&site).await;

    let first = visitor.get("/members").await;
    assert_eq!(first.status, 200);
    assert_eq!(row_ids(&first.body), ids[..25], "25 a page by default, in insertion order");
    assert_eq!(text(&first.body, "total").as_deref(), Some("30"));
    assert_eq!(
        attr(tag(&first.body, "next-page").expect("a next page"), "href").as_deref(),
        Some("/members?page=2")
    );
    assert!(tag(&first.body, "prev-page").is_none());
    assert!(first.body.contains(
        "<tr class=\"member\" data-id=\"KNVB0001\"><td class=\"relation-code\">KNVB0001</td>\
         <td class=\"name\"><a href=\"/member/KNVB0001/general\">First1 Last</a></td>\
         <td class=\"email\">m1@example.org</td>"
    ));
    assert!(first.body.contains("<table id=\"members\">"));

    let second = visitor.get("/members?page=2").await;
    assert_eq!(row_ids(&second.body), ids[25..]);
    assert!(tag(&second.body, "next-page").is_none(), "the last page has no next page");
    assert_eq!(attr(tag(&second.body, "prev-page").unwrap(), "href").as_deref(), Some("/members?page=1"));
    assert_eq!(row_ids(&visitor.get("/members?page=3").await.body), Vec::<String>::new());
    assert_eq!(visitor.get("/members?page=0").await.status, 400);

    site.set_page_size(10);
    let third = visitor.get("/members?page=3").await;
    assert_eq!(row_ids(&third.body), ids[20..]);
    assert!(tag(&third.body, "next-page").is_none(), "30 members fill exactly three pages of 10");
    let page_two = visitor.get("/members?page=2").await;
    assert_eq!(attr(tag(&page_two.body, "next-page").unwrap(), "href").as_deref(), Some("/members?page=3"));
}

#[tokio::test]
async fn the_csv_export_holds_every_member_with_its_modification_time() {
    let site = SiteServer::start().await;
    let anna = site.insert(anna());
    let bob = site.insert(json!({ "first_name": "Bob" }));
    assert_eq!(anna, "ABC123X");
    let visitor = Visitor::logged_in(&site).await;

    let reply = visitor.get("/members/export.csv").await;
    assert_eq!(reply.status, 200);
    assert!(
        reply.header("content-type").unwrap().starts_with("text/csv"),
        "{:?}",
        reply.header("content-type")
    );
    assert_eq!(reply.header("content-disposition"), Some("attachment; filename=\"members.csv\""));

    let mut reader = csv::Reader::from_reader(reply.body.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(header, EXPORT_COLUMNS);
    let rows: Vec<Vec<String>> =
        reader.records().map(|row| row.unwrap().iter().map(str::to_owned).collect()).collect();
    assert_eq!(rows.len(), 2);
    let held = site.member(&anna).unwrap();
    assert_eq!(
        rows[0][..10],
        [
            "ABC123X",
            "Anna",
            "O'Brien & <Co>",
            "anna@example.org",
            "anna@work.example",
            "+31 6 12345678",
            "020 123 4567",
            "note \"quoted\"",
            "\nfirst line, with a comma\nsecond \"<line>\"",
            "1"
        ]
    );
    let modified: Timestamp = rows[0][10].parse().expect("an ISO 8601 time");
    assert_eq!(modified, held.modified, "the time to the millisecond");
    assert!(
        rows[0][10].ends_with('Z') && rows[0][10].len() == "2026-01-01T10:00:00.123Z".len(),
        "{}",
        rows[0][10]
    );
    assert_eq!(rows[1][0], bob);
    assert_eq!(rows[1][9], "0");
    assert_eq!(rows[1][3], "", "fields left out are empty");
}

// ---------------------------------------------------------------------------------------------
// Member pages and their forms
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_member_page_shows_its_values_read_only_and_a_hidden_disabled_form() {
    let site = SiteServer::start().await;
    let mut anna = anna();
    anna["email2"] = json!("");
    let id = site.insert(anna);
    let visitor = Visitor::logged_in(&site).await;

    let general = visitor.get(&Page::General.path(&id)).await;
    assert_eq!(general.status, 200);
    let body = &general.body;
    assert_eq!(attr(tag(body, "member").unwrap(), "data-id").as_deref(), Some(id.as_str()));
    assert_eq!(text(body, "member-name").as_deref(), Some("Anna O'Brien & <Co>"));
    assert_eq!(text(body, "view-relation_code").as_deref(), Some(id.as_str()));
    let modified = text(body, "view-modified").unwrap();
    assert_eq!(modified.parse::<Timestamp>().unwrap(), site.member(&id).unwrap().modified);
    assert_eq!(text(body, "view-last_name").as_deref(), Some("O'Brien & <Co>"));
    for (field, value) in [
        ("email", "anna@example.org"),
        ("email2", ""),
        ("mobile", "+31 6 12345678"),
        ("phone", "020 123 4567"),
    ] {
        assert_eq!(text(body, &format!("view-{field}")).as_deref(), Some(value), "view-{field}");
        let input = tag(body, field).unwrap_or_else(|| panic!("input#{field}"));
        assert!(input.starts_with("<input "), "{input}");
        assert_eq!(attr(input, "type").as_deref(), Some("text"));
        assert_eq!(attr(input, "name").as_deref(), Some(field));
        assert_eq!(attr(input, "value").as_deref(), Some(value), "{field}");
        assert!(attr(input, "disabled").is_some(), "{field} is disabled until Edit: {input}");
    }
    assert!(tag(body, "note").is_none(), "general holds only its own fields");
    let form = tag(body, "edit-form").unwrap();
    assert_eq!(attr(form, "method").as_deref(), Some("post"));
    assert_eq!(attr(form, "action").as_deref(), Some(Page::General.path(&id).as_str()));
    assert!(attr(form, "hidden").is_some(), "the form is hidden until Edit: {form}");
    let form_at = body.find(form).unwrap();
    let save_at = body.find(tag(body, "save").unwrap()).unwrap();
    assert!(
        save_at > form_at && save_at < form_at + body[form_at..].find("</form>").unwrap(),
        "save is in the form"
    );
    assert!(attr(tag(body, "save").unwrap(), "disabled").is_some());
    let edit = tag(body, "edit").unwrap();
    assert_eq!(text(body, "edit").as_deref(), Some("Edit"));
    assert_eq!(attr(edit, "data-delay-ms").as_deref(), Some("300"), "the default delay");
    assert!(body.contains("setTimeout(") && body.contains("form.hidden = false"), "the Edit script");
    assert!(tag(body, "view").is_some_and(|view| attr(view, "hidden").is_none()), "the view is shown");
    assert!(tag(body, "saved").is_none() && tag(body, "form-error").is_none());
    for page in Page::ALL {
        let tab = tag(body, &format!("tab-{}", page.name())).unwrap();
        assert_eq!(attr(tab, "href"), Some(page.path(&id)));
    }

    let other = visitor.get(&Page::Other.path(&id)).await.body;
    assert_eq!(text(&other, "view-note").as_deref(), Some("note \"quoted\""));
    assert_eq!(
        text(&other, "view-remarks").as_deref(),
        Some("\nfirst line, with a comma\nsecond \"<line>\"")
    );
    assert_eq!(attr(tag(&other, "note").unwrap(), "value").as_deref(), Some("note \"quoted\""));
    let textarea = tag(&other, "remarks").unwrap();
    assert!(textarea.starts_with("<textarea ") && attr(textarea, "disabled").is_some(), "{textarea}");
    // The parser drops one newline right after <textarea>: the value starts after it.
    assert_eq!(text(&other, "remarks").as_deref(), Some("\n\nfirst line, with a comma\nsecond \"<line>\""));
    assert!(tag(&other, "email").is_none(), "other holds only its own fields");

    let financial = visitor.get(&Page::Financial.path(&id)).await.body;
    let view = tag(&financial, "view-financial_block").unwrap();
    assert_eq!(attr(view, "type").as_deref(), Some("checkbox"));
    assert!(attr(view, "checked").is_some() && attr(view, "disabled").is_some(), "{view}");
    let checkbox = tag(&financial, "financial_block").unwrap();
    assert_eq!(attr(checkbox, "name").as_deref(), Some("financial_block"));
    assert!(attr(checkbox, "checked").is_some() && attr(checkbox, "disabled").is_some(), "{checkbox}");

    site.update(&id, "financial_block", false);
    site.set_edit_delay(Duration::from_millis(1500));
    let financial = visitor.get(&Page::Financial.path(&id)).await.body;
    assert!(attr(tag(&financial, "view-financial_block").unwrap(), "checked").is_none());
    assert!(attr(tag(&financial, "financial_block").unwrap(), "checked").is_none());
    assert_eq!(attr(tag(&financial, "edit").unwrap(), "data-delay-ms").as_deref(), Some("1500"));
}

#[tokio::test]
async fn a_saved_form_changes_only_its_page_shows_saved_once_and_moves_the_time() {
    let site = SiteServer::start().await;
    let id = site.insert(json!({
        "email": "old@example.org",
        "mobile": "0600000000",
        "note": "keep me",
    }));
    let other = site.insert(json!({ "email": "other@example.org" }));
    let visitor = Visitor::logged_in(&site).await;
    let page = Page::General.path(&id);
    let before = site.member(&id).unwrap();

    let reply = visitor
        .post(
            &page,
            &[
                ("email", "new@example.org"),
                ("email2", "second@example.org"),
                ("mobile", "+31612345678"),
                ("phone", ""),
                ("note", "from the wrong page"),
            ],
        )
        .await;
    assert_eq!(reply.status, 303);
    assert_eq!(reply.location(), page);
    let after = site.member(&id).unwrap();
    assert_eq!(after.email, "new@example.org");
    assert_eq!(after.email2, "second@example.org");
    assert_eq!(after.mobile, "+31612345678");
    assert_eq!(after.phone, "");
    assert_eq!(after.note, "keep me", "a field of another page is not saved");
    assert!(after.modified > before.modified, "{} > {}", after.modified, before.modified);
    assert_eq!((site.saves(&id), site.saves(&other), site.total_saves()), (1, 0, 1));

    let shown = visitor.get(&page).await;
    assert_eq!(text(&shown.body, "saved").as_deref(), Some("Saved"));
    assert_eq!(attr(tag(&shown.body, "saved").unwrap(), "class").as_deref(), Some("flash"));
    assert_eq!(text(&shown.body, "view-email").as_deref(), Some("new@example.org"));
    assert!(tag(&visitor.get(&page).await.body, "saved").is_none(), "the notice is shown once");

    let reply = visitor.post(&page, &[("mobile", "0611111111")]).await;
    assert_eq!(reply.status, 303);
    let last = site.member(&id).unwrap();
    assert_eq!(last.mobile, "0611111111");
    assert_eq!(last.email, "new@example.org", "a text field left out of the form is kept");
    assert!(ms(last.modified) > ms(after.modified), "two saves are told apart");
    assert!(
        tag(&visitor.get(&Page::Other.path(&id)).await.body, "saved").is_none(),
        "only on the saved page"
    );
    assert_eq!(site.saves(&id), 2);
}

#[tokio::test]
async fn the_other_page_saves_note_and_remarks_as_received() {
    let site = SiteServer::start().await;
    let id = site.insert(json!({ "email": "keep@example.org" }));
    let visitor = Visitor::logged_in(&site).await;
    let remarks = "first line\r\nsecond <b>&amp;</b> line";

    let reply =
        visitor.post(&Page::Other.path(&id), &[("note", "  VOG 2026-01-15 "), ("remarks", remarks)]).await;
    assert_eq!(reply.status, 303);
    let member = site.member(&id).unwrap();
    assert_eq!(member.note, "  VOG 2026-01-15 ", "untrimmed");
    assert_eq!(member.remarks, remarks, "line breaks as received");
    assert_eq!(member.email, "keep@example.org");

    let page = visitor.get(&Page::Other.path(&id)).await.body;
    assert_eq!(text(&page, "view-remarks").as_deref(), Some(remarks), "escaped on the page, not interpreted");
    assert!(page.contains("second &lt;b&gt;&amp;amp;&lt;/b&gt; line"));
}

#[tokio::test]
async fn the_financial_checkbox_is_unchecked_when_the_form_leaves_it_out() {
    let site = SiteServer::start().await;
    let id = site.insert(json!({ "financial_block": true, "email": "keep@example.org" }));
    let visitor = Visitor::logged_in(&site).await;
    let page = Page::Financial.path(&id);

    assert_eq!(visitor.post(&page, &[]).await.status, 303);
    assert!(!site.member(&id).unwrap().financial_block, "absent means unchecked");
    let shown = visitor.get(&page).await.body;
    assert!(attr(tag(&shown, "view-financial_block").unwrap(), "checked").is_none());

    assert_eq!(visitor.post(&page, &[("financial_block", "1")]).await.status, 303);
    let member = site.member(&id).unwrap();
    assert!(member.financial_block);
    assert_eq!(member.email, "keep@example.org");
    let shown = visitor.get(&page).await.body;
    assert!(attr(tag(&shown, "view-financial_block").unwrap(), "checked").is_some());
    assert_eq!(site.saves(&id), 2);
}

#[tokio::test]
async fn an_invalid_email_is_refused_and_nothing_is_saved() {
    let site = SiteServer::start().await;
    let id =
        site.insert(json!({ "email": "old@example.org", "email2": "old2@example.org", "mobile": "0600" }));
    let visitor = Visitor::logged_in(&site).await;
    let page = Page::General.path(&id);
    let before = site.member(&id).unwrap();

    for (field, value) in
        [("email", "not-an-address"), ("email2", "two@@example.org"), ("email", "a b@example.org")]
    {
        let other = if field == "email" { "email2" } else { "email" };
        let reply = visitor
            .post(&page, &[(field, value), (other, "fine@example.org"), ("mobile", "0699999999")])
            .await;
        assert_eq!(reply.status, 200, "{field}={value}");
        assert_eq!(
            text(&reply.body, "form-error"),
            Some(format!("E-mail address is not valid: {value}")),
            "{field}={value}"
        );
        assert_eq!(attr(tag(&reply.body, "form-error").unwrap(), "class").as_deref(), Some("error"));
        let form = tag(&reply.body, "edit-form").unwrap();
        assert!(attr(form, "hidden").is_none(), "the form stays open: {form}");
        let input = tag(&reply.body, field).unwrap();
        assert_eq!(attr(input, "value").as_deref(), Some(value), "the value posted is shown");
        assert!(attr(input, "disabled").is_none(), "{input}");
        assert_eq!(attr(tag(&reply.body, "mobile").unwrap(), "value").as_deref(), Some("0699999999"));
        assert!(attr(tag(&reply.body, "view").unwrap(), "hidden").is_some());
        assert_eq!(site.member(&id).unwrap(), before, "nothing saved, not even the other fields or the time");
    }
    assert_eq!(site.saves(&id), 0);

    let reply = visitor.post(&page, &[("email", ""), ("email2", "ok@example.org")]).await;
    assert_eq!(reply.status, 303, "an empty address clears the field");
    assert_eq!(site.member(&id).unwrap().email, "");

    site.reject_invalid_email(false);
    let reply = visitor.post(&page, &[("email", "not-an-address")]).await;
    assert_eq!(reply.status, 303);
    assert_eq!(site.member(&id).unwrap().email, "not-an-address", "saved as it is when not checked");
    assert_eq!(site.saves(&id), 2);
}

#[tokio::test]
async fn unknown_members_and_pages_are_not_found() {
    let site = SiteServer::start().await;
    let id = site.insert(json!({}));
    let visitor = Visitor::logged_in(&site).await;

    let reply = visitor.get("/member/NOPE123/general").await;
    assert_eq!(reply.status, 404);
    assert_eq!(text(&reply.body, "not-found").as_deref(), Some("Not found"));
    assert_eq!(visitor.get(&format!("/member/{id}/elsewhere")).await.status, 404);
    assert_eq!(visitor.get("/nothing-here").await.status, 404);
    assert_eq!(visitor.post("/member/NOPE123/general", &[("email", "a@example.org")]).await.status, 404);
    assert_eq!(site.total_saves(), 0);
}

// ---------------------------------------------------------------------------------------------
// The test API, faults and the log
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_person_edit_moves_the_time_but_is_not_a_save() {
    let site = SiteServer::start().await;
    let id = site.insert(json!({ "first_name": "Anna", "email": "a@example.org" }));
    let inserted = site.member(&id).unwrap();

    site.update(&id, "email", "b@example.org");
    let first = site.member(&id).unwrap();
    site.update(&id, "remarks", "seen");
    let second = site.member(&id).unwrap();
    assert_eq!(second.email, "b@example.org");
    assert_eq!(second.remarks, "seen");
    assert_eq!(second.value("remarks"), Some(json!("seen")));
    assert_eq!(second.value("financial_block"), Some(json!(false)));
    assert!(
        inserted.modified < first.modified && first.modified < second.modified,
        "edits in one second differ"
    );
    assert_eq!(site.total_saves(), 0);

    let visitor = Visitor::logged_in(&site).await;
    let csv = visitor.get("/members/export.csv").await.body;
    let expected = second.value("modified").unwrap();
    assert!(csv.contains(expected.as_str().unwrap()), "the export shows the newest time: {csv}");

    assert!(site.remove(&id));
    assert!(!site.remove(&id));
    assert!(site.member(&id).is_none());
    assert!(site.members().is_empty());
    assert_eq!(visitor.get(&Page::General.path(&id)).await.status, 404);
}

#[tokio::test]
async fn refused_connections_come_back_on_the_same_port_with_the_data() {
    let site = SiteServer::start().await;
    let id = site.insert(json!({ "email": "a@example.org" }));
    let visitor = Visitor::logged_in(&site).await;
    let base = site.base_url();

    site.refuse_connections();
    let error = send(&base, "/login", None, None).await.expect_err("the port refuses connections");
    assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
    site.refuse_connections();

    site.accept_connections();
    assert_eq!(site.base_url(), base);
    let page = visitor.get(&Page::General.path(&id)).await;
    assert_eq!(page.status, 200, "the session survived");
    assert_eq!(text(&page.body, "view-email").as_deref(), Some("a@example.org"));
    site.accept_connections();
    assert_eq!(visitor.get("/members").await.status, 200);
}

#[tokio::test]
async fn slow_answers_take_at_least_the_delay() {
    let site = SiteServer::start().await;
    let visitor = Visitor::new(&site);
    site.slow(Duration::from_millis(400));
    let started = Instant::now();
    assert_eq!(visitor.get("/login").await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(400), "{:?}", started.elapsed());

    site.slow(Duration::ZERO);
    let started = Instant::now();
    assert_eq!(visitor.get("/login").await.status, 200);
    assert!(started.elapsed() < Duration::from_millis(400), "{:?}", started.elapsed());
}

#[tokio::test]
async fn the_request_log_records_method_path_session_form_and_status() {
    let site = SiteServer::start().await;
    let id = site.insert(json!({}));
    let anonymous = Visitor::new(&site);
    anonymous.get("/members?page=1").await;
    let visitor = Visitor::logged_in(&site).await;
    visitor.post(&Page::Other.path(&id), &[("note", "hello")]).await;
    visitor.get(&Page::Other.path(&id)).await;

    let log = site.requests();
    let summary: Vec<(&str, &str, bool, Option<u16>)> =
        log.iter().map(|r| (r.method.as_str(), r.path.as_str(), r.session, r.status)).collect();
    let other = Page::Other.path(&id);
    assert_eq!(
        summary,
        [
            ("GET", "/members?page=1", false, Some(303)),
            ("POST", "/login", false, Some(303)),
            ("POST", other.as_str(), true, Some(303)),
            ("GET", other.as_str(), true, Some(200)),
        ]
    );
    assert_eq!(log[1].form.iter().find(|(name, _)| name == "password").unwrap().1, "***", "no password kept");
    assert_eq!(log[2].form, [("note".to_owned(), "hello".to_owned())]);
    assert!(log.iter().all(|r| !r.lost));
    assert!(log.windows(2).all(|pair| pair[0].at <= pair[1].at));

    site.clear_requests();
    visitor.get("/members").await;
    assert_eq!(site.requests().len(), 1);
}
