//! The rest connector against a real Django REST Framework API (`testkit::django`, Debian's
//! Django and Django REST Framework): the conformance suite with the `drf` preset, writes
//! verified by reading Django's own database, empty values as the serializer takes them, a
//! stale version refused as target-moved, and `etag` refused against an API without ETags.

use std::collections::BTreeMap;

use crate::connector::update_one;
use crate::site_fixture::SiteFixture;
use fieldsync_connector::testkit::django::{DjangoOptions, DjangoServer};
use fieldsync_connector::testkit::{self, Fixture, RejectedValue, TestPaths, TestRecord};
use fieldsync_connector::{Connector, ConnectorError, FieldWrite, Lookup, ReadRequest, Write};
use fieldsync_connector_rest::{Auth, KeyParam, Preset, RestConfig, RestConnector, Secret};
use fieldsync_model::RecordId;
use serde_json::{Value, json};

/// The `drf` preset on the site's players, as a user would configure it.
fn config(site: &DjangoServer) -> RestConfig {
    let mut config = RestConfig::new(&site.players_url());
    config.preset = Some(Preset::Drf);
    config.auth = Some(Auth::Header {
        name: "Authorization".into(),
        value: Secret::new(format!("Token {}", site.token())),
    });
    config.key_param = Some(KeyParam {
        name: "federation_id__in".into(),
        path: Some("/federation_id".into()),
        join: Some(",".into()),
        max: None,
    });
    config.version = Some("/version".into());
    config.create = Some(fieldsync_connector_rest::Create {
        unique: Some("/federation_id".into()),
        ..Default::default()
    });
    config
}

/// The suite's three fields on a player: the key is `federation_id`, the name the free text
/// `notes`, the e-mail `last_name` (Django's `EmailField` refuses the suite's non-ASCII
/// address, which is the site's rule and not the connector's).
fn paths() -> TestPaths {
    TestPaths { key: "/federation_id".into(), name: "/notes".into(), email: "/last_name".into() }
}

/// The Django site for the suite. Edits are saved through the model and then stamped, since
/// `updated_after` is asked to the second.
impl Fixture for SiteFixture<DjangoServer> {
    type Connector = RestConnector;

    async fn open(&mut self, records: &[TestRecord]) -> RestConnector {
        let players: Vec<Value> = records
            .iter()
            .map(|record| json!({"federation_id": record.key, "first_name": "Speler", "last_name": record.email, "notes": record.name}))
            .collect();
        let before = self.fill_stamp();
        self.site.python(&format!(
            "import json, datetime\n\
             Player.objects.all().delete()\n\
             Player.objects.bulk_create(Player(**fields) for fields in json.loads({players:?}))\n\
             Player.objects.update(updated_at=datetime.datetime.fromisoformat({before:?}))",
            players = Value::from(players).to_string(),
            before = before.strftime("%Y-%m-%dT%H:%M:%S+00:00").to_string(),
        ));
        let mut config = config(&self.site);
        config.page_size = Some(40);
        // The suite's creates write three fields; the site also wants a first name.
        config
            .create
            .get_or_insert_with(Default::default)
            .defaults
            .insert("/first_name".into(), json!("Speler"));
        RestConnector::open(&config).expect("a valid configuration")
    }

    async fn edit(&mut self, key: &str, path: &str, value: Value) {
        let at = self.edit_stamp();
        let field = path.trim_start_matches('/');
        self.site.python(&format!(
            "import json, datetime\n\
             player = Player.objects.get(federation_id={key:?})\n\
             setattr(player, {field:?}, json.loads({value:?}))\n\
             player.save()\n\
             Player.objects.filter(pk=player.pk).update(updated_at=datetime.datetime.fromisoformat({at:?}))",
            value = value.to_string(),
            at = at.strftime("%Y-%m-%dT%H:%M:%S+00:00").to_string(),
        ));
    }

    fn paths(&self) -> TestPaths {
        paths()
    }

    fn rejected_value(&self) -> Option<RejectedValue> {
        Some(RejectedValue { path: "/email".into(), value: json!("someone@invalid.example") })
    }

    fn typed_paths(&self) -> Option<testkit::TypedPaths> {
        Some(testkit::TypedPaths {
            number: "/shirt_number".into(),
            flag: "/active".into(),
            list: "/tags".into(),
        })
    }
}

#[tokio::test]
async fn conforms_against_a_real_django_rest_framework_api() {
    let Some(site) = DjangoServer::start(&DjangoOptions::default()) else { return };
    let mut fixture = SiteFixture::new(site);
    testkit::run_all(&mut fixture, &["sequence_read"]).await;
}

/// Every player as Django's database holds it, by federation id.
fn stored(site: &DjangoServer) -> BTreeMap<String, serde_json::Map<String, Value>> {
    site.players()
        .into_iter()
        .map(|player| (player["federation_id"].as_str().unwrap().to_string(), player))
        .collect()
}

#[tokio::test]
async fn writes_to_django_are_verified_by_what_its_database_holds() {
    let Some(site) = DjangoServer::start(&DjangoOptions { players: 5, ..DjangoOptions::default() }) else {
        return;
    };
    let mut connector = RestConnector::open(&config(&site)).expect("a valid configuration");
    let before = stored(&site);
    let id = before["FED00002"]["id"].as_i64().unwrap();
    let paths: Vec<String> = [
        "/federation_id",
        "/first_name",
        "/email",
        "/birth_date",
        "/shirt_number",
        "/active",
        "/tags",
        "/mobile",
    ]
    .map(String::from)
    .to_vec();
    let field = |path: &str, value: Value| FieldWrite { path: path.into(), value, expected: None };
    let update = Write::Update {
        id: RecordId::new(id.to_string()),
        fields: vec![
            field("/first_name", json!("Zoë")),
            field("/email", Value::Null),
            field("/birth_date", json!("2001-02-03")),
            field("/shirt_number", Value::Null),
            field("/active", json!(false)),
            field("/tags", json!(["keeper", "jeugd"])),
            field("/mobile", json!("")),
        ],
    };
    let create = Write::Create {
        fields: vec![
            field("/federation_id", json!("NEW00001")),
            field("/first_name", json!("Sem")),
            field("/last_name", json!("van 't Hof")),
            field("/email", Value::Null),
            field("/birth_date", Value::Null),
            field("/mobile", json!("+31612345678")),
        ],
    };
    let results = connector.apply(&[update, create]).await.expect("applied");
    let created = results[1].as_ref().expect("the create landed").id.clone();
    assert!(results[0].is_ok(), "{results:?}");

    // What the connector verifies with (the writes' answers) ...
    let verified = connector
        .lookup(&paths, &Lookup::Ids(vec![RecordId::new(id.to_string()), created.clone()]))
        .await
        .expect("a lookup");
    // ... is what Django's database holds, read straight from its file.
    let after = stored(&site);
    for record in &verified {
        let key = record.values[0].as_str().unwrap();
        let row = &after[key];
        let from_file: Vec<Value> =
            paths.iter().map(|path| row[path.trim_start_matches('/')].clone()).collect();
        assert_eq!(record.values, from_file, "player {key}: the verification's values and the database's");
    }
    let updated = &after["FED00002"];
    assert_eq!(updated["first_name"], "Zoë");
    assert_eq!(updated["email"], "", "a cleared e-mail is the empty text the serializer takes");
    assert_eq!(updated["mobile"], "");
    assert_eq!(updated["shirt_number"], Value::Null, "a cleared number is null");
    assert_eq!(updated["birth_date"], "2001-02-03");
    assert_eq!(updated["active"], false);
    assert_eq!(updated["tags"], json!(["keeper", "jeugd"]));
    assert_eq!(updated["version"], before["FED00002"]["version"].as_i64().unwrap() + 1);
    let new = &after["NEW00001"];
    assert_eq!((new["email"].clone(), new["birth_date"].clone()), (json!(""), Value::Null));
    assert!(
        site.requests().iter().all(|request| request.status < 400),
        "a write was refused: {:?}",
        site.requests()
    );
    // Every other player is as it was.
    for (key, player) in &before {
        if key != "FED00002" {
            assert_eq!(&after[key], player, "player {key} changed");
        }
    }
}

#[tokio::test]
async fn a_stale_version_is_refused_by_django_and_is_target_moved() {
    let Some(site) = DjangoServer::start(&DjangoOptions { players: 3, ..DjangoOptions::default() }) else {
        return;
    };
    let mut connector = RestConnector::open(&config(&site)).expect("a valid configuration");
    assert!(connector.capabilities().conditional_writes, "a checked version is a conditional write");
    let player = stored(&site)["FED00001"].clone();
    let id = player["id"].as_i64().unwrap();
    // A person saves the player right after the connector read it, before its write arrives.
    site.edit_after_read(id, &json!({"last_name": "Changed By Hand"}));
    let write = update_one(id, "/first_name", json!("Not Written"), Some(player["first_name"].clone()));
    let results = connector.apply(&[write]).await.expect("applied");
    assert!(site.edited_after_read(), "the person's edit did not happen");
    assert!(matches!(results[0], Err(ConnectorError::TargetMoved { .. })), "{results:?}");
    let after = stored(&site)["FED00001"].clone();
    assert_eq!(after["last_name"], "Changed By Hand", "the person's edit stands");
    assert_eq!(after["first_name"], player["first_name"], "nothing of the stale write landed");
    let refused: Vec<u16> =
        site.requests().iter().filter(|request| request.changes()).map(|request| request.status).collect();
    assert_eq!(refused, vec![409], "Django itself refused the write");
}

#[tokio::test]
async fn etag_against_django_which_sends_none_fails_check() {
    let Some(site) = DjangoServer::start(&DjangoOptions { players: 2, ..DjangoOptions::default() }) else {
        return;
    };
    let mut config = config(&site);
    config.version = None;
    config.etag = Some(true);
    let mut connector = RestConnector::open(&config).expect("a valid configuration");
    let error = connector.check(&["/federation_id".to_string()]).await.expect_err("check must fail");
    assert!(error.to_string().contains("no ETag"), "{error}");
    config.etag = None;
    let mut connector = RestConnector::open(&config).expect("a valid configuration");
    let probe = connector.check(&["/federation_id".to_string()]).await.expect("check passes");
    assert!(!probe.capabilities.conditional_writes);
    assert_eq!(probe.records, Some(2));
    let read = connector
        .read_page(&ReadRequest { paths: vec!["/federation_id".into()], since: None }, None)
        .await
        .expect("a page");
    assert_eq!(read.records.len(), 2);
}

/// Look-ups by key through django-filter's `federation_id__in`, as the README configures them:
/// fifty keys a request, each request's answer read to its last page, every player asked for
/// found and no other, and a key holding the separator (which the API would split) found by
/// reading the listing.
#[tokio::test]
async fn look_ups_by_key_ask_django_for_fifty_keys_a_request() {
    let Some(site) = DjangoServer::start(&DjangoOptions { players: 130, ..DjangoOptions::default() }) else {
        return;
    };
    site.python("Player.objects.filter(federation_id='FED00007').update(federation_id='FED,0007')");
    let mut config = config(&site);
    // Each request's fifty players come in three pages.
    config.page_size = Some(20);
    let mut connector = RestConnector::open(&config).expect("a valid configuration");
    let mut asked: Vec<String> = (1..=120).map(|number| format!("FED{number:05}")).collect();
    asked.retain(|key| key != "FED00007");
    asked.push("FED,0007".into());
    asked.push("NOBODY00001".into());
    let before = site.requests().len();
    let found = connector
        .lookup(
            &["/last_name".to_string()],
            &Lookup::Key { path: "/federation_id".into(), values: asked.clone() },
        )
        .await
        .expect("looked up");

    let players = stored(&site);
    let expected: BTreeMap<String, Value> = asked
        .iter()
        .filter_map(|key| players.get(key))
        .map(|player| (player["id"].to_string(), player["last_name"].clone()))
        .collect();
    let got: BTreeMap<String, Value> =
        found.iter().map(|record| (record.id.to_string(), record.values[0].clone())).collect();
    assert_eq!(found.len(), got.len(), "no player found twice");
    assert_eq!(expected.len(), 120, "the seed has the players asked for");
    assert_eq!(got, expected, "each player asked for, read at the path asked, and no other");

    let requests = site.requests()[before..].to_vec();
    assert!(requests.iter().all(|request| request.method == "GET" && request.status == 200), "{requests:?}");
    let mut keys_asked = Vec::new();
    for request in &requests {
        let url = reqwest::Url::parse(&format!("http://site{}", request.path)).expect("a logged path");
        for (_, value) in url.query_pairs().filter(|(name, _)| name == "federation_id__in") {
            let keys: Vec<String> = value.split(',').map(str::to_string).collect();
            assert!(keys.len() <= 50, "{} keys in one request: {}", keys.len(), request.path);
            if url.query_pairs().all(|(name, value)| name != "page" || value == "1") {
                keys_asked.extend(keys);
            }
        }
    }
    keys_asked.sort();
    let mut joinable: Vec<String> = asked.iter().filter(|key| !key.contains(',')).cloned().collect();
    joinable.sort();
    assert_eq!(keys_asked, joinable, "every key without a comma asked once, by the parameter");
    let listing_pages = requests.iter().filter(|request| !request.path.contains("federation_id__in")).count();
    assert_eq!(listing_pages, 7, "the key with a comma: the listing of 130 players, 20 a page: {requests:?}");
    // 120 keys by the parameter, 50, 50 and 20 a request, whose 50, 50 and 19 players come in
    // 3, 3 and 1 pages.
    assert_eq!(requests.len() - listing_pages, 7, "{requests:?}");

    // The parameter's plain form asks for one key a request, by its exact filter.
    config.key_param = Some("federation_id".into());
    let mut connector = RestConnector::open(&config).expect("a valid configuration");
    let before = site.requests().len();
    let asked: Vec<String> = ["FED00011", "FED00012", "FED00013", "NOBODY00002"].map(String::from).to_vec();
    let found = connector
        .lookup(&["/last_name".to_string()], &Lookup::Key { path: "/federation_id".into(), values: asked })
        .await
        .expect("looked up");
    let mut got: Vec<String> = found.iter().map(|record| record.id.to_string()).collect();
    got.sort();
    let mut expected: Vec<String> =
        ["FED00011", "FED00012", "FED00013"].iter().map(|key| players[*key]["id"].to_string()).collect();
    expected.sort();
    assert_eq!(got, expected);
    let requests = site.requests()[before..].to_vec();
    assert_eq!(requests.len(), 4, "{requests:?}");
    assert!(requests.iter().all(|request| request.path.contains("federation_id=")), "{requests:?}");
}
