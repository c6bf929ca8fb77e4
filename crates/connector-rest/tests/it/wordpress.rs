//! The rest connector against a real WordPress in the Europe/Amsterdam time zone (the
//! `wordpress` preset): the conformance suite, writes verified by reading WordPress's own
//! database, a post moved to the trash read as deleted, and a create WordPress answers with a
//! failure after it inserted the post, found by its key instead of sent again.

use crate::site_fixture::SiteFixture;
use fieldsync_connector::testkit::wordpress::WordPress;
use fieldsync_connector::testkit::{self, Fixture, RejectedValue, TestPaths, TestRecord};
use fieldsync_connector::{Connector, ConnectorError, FieldWrite, Lookup, ReadRequest, Write};
use fieldsync_connector_rest::{Auth, Create, Preset, RestConfig, RestConnector, Secret};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

const ZONE: &str = "Europe/Amsterdam";

/// The `wordpress` preset on the site's people, as the README configures it.
fn config(site: &WordPress) -> RestConfig {
    let mut config = RestConfig::new(&site.base_url());
    config.preset = Some(Preset::Wordpress);
    config.auth = Some(Auth::Basic { user: site.user().into(), password: Secret::new(site.app_password()) });
    config.create = Some(Create { unique: Some("/meta/knvb_id".into()), ..Default::default() });
    config.create.as_mut().unwrap().templates.insert("/title".into(), "{/meta/first_name}".into());
    config
}

fn paths() -> TestPaths {
    TestPaths {
        key: "/meta/knvb_id".into(),
        name: "/meta/first_name".into(),
        email: "/meta/contact_info[type=email]/value".into(),
    }
}

/// Stamps PHP code's posts with a time: `$stamp($id, $unix)` sets `post_modified_gmt` and the
/// local `post_modified` as WordPress would have written them at that instant.
const STAMP: &str = r#"
    $stamp = function ( $id, $unix ) {
        global $wpdb;
        $gmt = gmdate( 'Y-m-d H:i:s', $unix );
        $wpdb->update( $wpdb->posts, array( 'post_modified_gmt' => $gmt, 'post_modified' => get_date_from_gmt( $gmt ) ), array( 'ID' => $id ) );
        clean_post_cache( $id );
    };
"#;

/// The WordPress site for the suite, which keeps whole seconds. Posts and edits are made in PHP
/// and stamped with [`STAMP`].
impl Fixture for SiteFixture<WordPress> {
    type Connector = RestConnector;

    async fn open(&mut self, records: &[TestRecord]) -> RestConnector {
        let before = self.fill_stamp();
        let people: Vec<Value> =
            records.iter().map(|record| json!([record.key, record.name, record.email])).collect();
        let code = format!(
            "{STAMP}
            foreach ( get_posts( array( 'post_type' => 'person', 'post_status' => 'any,trash', 'numberposts' => -1, 'fields' => 'ids' ) ) as $id ) {{
                wp_delete_post( $id, true );
            }}
            foreach ( $input['people'] as $person ) {{
                $id = wp_insert_post( array(
                    'post_type' => 'person', 'post_status' => 'publish', 'post_title' => $person[1],
                    'meta_input' => array(
                        'knvb_id' => $person[0], 'first_name' => $person[1],
                        'contact_info' => array( array( 'type' => 'email', 'value' => $person[2] ) ),
                    ),
                ), true );
                if ( is_wp_error( $id ) ) {{ fwrite( STDERR, $id->get_error_message() ); exit( 1 ); }}
                $stamp( $id, $input['at'] );
            }}"
        );
        self.site.php_with(&code, &json!({"people": people, "at": before.as_second()})).await;
        let mut config = config(&self.site);
        config.page_size = Some(40);
        RestConnector::open(&config).expect("a valid configuration")
    }

    async fn edit(&mut self, key: &str, path: &str, value: Value) {
        let at = self.edit_stamp();
        let code = format!(
            "{STAMP}
            $ids = get_posts( array( 'post_type' => 'person', 'post_status' => 'any', 'fields' => 'ids',
                'meta_key' => 'knvb_id', 'meta_value' => $input['key'] ) );
            $id = $ids[0];
            if ( 'contact_info' === $input['meta'] ) {{
                $info = array_values( array_filter( (array) get_post_meta( $id, 'contact_info', true ), function ( $item ) {{ return 'email' !== $item['type']; }} ) );
                $info[] = array( 'type' => 'email', 'value' => $input['value'] );
                update_post_meta( $id, 'contact_info', $info );
            }} else {{
                update_post_meta( $id, $input['meta'], $input['value'] );
            }}
            wp_update_post( array( 'ID' => $id ) );
            $stamp( $id, $input['at'] );"
        );
        let meta =
            if path.contains("contact_info") { "contact_info" } else { path.trim_start_matches("/meta/") };
        self.site
            .php_with(&code, &json!({"key": key, "meta": meta, "value": value, "at": at.as_second()}))
            .await;
    }

    fn paths(&self) -> TestPaths {
        paths()
    }

    fn rejected_value(&self) -> Option<RejectedValue> {
        Some(RejectedValue { path: "/meta/email".into(), value: json!("not-an-email") })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conforms_against_a_real_wordpress_in_amsterdam_time() {
    let Some(site) = WordPress::start().await else { return };
    site.set_time_zone(ZONE).await;
    let mut fixture = SiteFixture::new(site);
    // WordPress sends no ETags and keeps no version: the engine re-reads before writing. The
    // test plugin registers no number meta field.
    testkit::run_all(&mut fixture, &["sequence_read", "conditional_update", "typed_values"]).await;
}

/// The people as WordPress's database holds them, by `knvb_id`: the post's id and status, the
/// first name, and `contact_info` as PHP stored it (serialised).
async fn stored(site: &WordPress) -> std::collections::BTreeMap<String, Value> {
    let rows = site
        .sql(
            "SELECT p.ID AS id, p.post_status AS status,
                    (SELECT meta_value FROM wp_postmeta WHERE post_id = p.ID AND meta_key = 'knvb_id') AS knvb_id,
                    (SELECT meta_value FROM wp_postmeta WHERE post_id = p.ID AND meta_key = 'first_name') AS first_name,
                    (SELECT meta_value FROM wp_postmeta WHERE post_id = p.ID AND meta_key = 'contact_info') AS contact_info
             FROM wp_posts p WHERE p.post_type = 'person'",
        )
        .await;
    let mut by_key = std::collections::BTreeMap::new();
    for row in rows {
        let key = row["knvb_id"].as_str().unwrap_or_default().to_string();
        let previous = by_key.insert(key.clone(), json!({"id": row["id"], "status": row["status"], "first_name": row["first_name"], "contact_info": row["contact_info"]}));
        assert!(previous.is_none(), "two people with knvb_id {key:?}");
    }
    by_key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_wordpress_are_verified_by_what_its_database_holds() {
    let Some(site) = WordPress::start().await else { return };
    site.set_time_zone(ZONE).await;
    site.create_people(3).await;
    let mut connector = RestConnector::open(&config(&site)).expect("a valid configuration");
    let all = ReadRequest { paths: vec![paths().key], since: None };
    let listed = connector.read_page(&all, None).await.expect("a page").records;
    let id = listed.iter().find(|record| record.values[0] == "FS00002").expect("FS00002").id.clone();
    let email = paths().email;
    let field = |path: &str, value: Value| FieldWrite { path: path.into(), value, expected: None };
    let writes = [
        Write::Update {
            id: id.clone(),
            fields: vec![field("/meta/first_name", json!("Zoë")), field(&email, json!("zoe@example.com"))],
        },
        Write::Create {
            fields: vec![
                field("/meta/knvb_id", json!("FS00009")),
                field("/meta/first_name", json!("Sem")),
                field(&email, Value::Null),
            ],
        },
    ];
    let results = connector.apply(&writes).await.expect("applied");
    let created = results[1].as_ref().expect("the create landed").id.clone();
    assert!(results[0].is_ok(), "{results:?}");
    let read = [paths().key, "/meta/first_name".to_string(), email.clone(), "/status".to_string()];
    let verified =
        connector.lookup(&read, &Lookup::Ids(vec![id.clone(), created.clone()])).await.expect("a lookup");

    // What the connector verifies with is what MariaDB holds, read straight from the tables.
    let people = stored(&site).await;
    for record in &verified {
        let key = record.values[0].as_str().unwrap();
        let row = &people[key];
        assert_eq!(record.values[1], row["first_name"], "{key}: first name");
        assert_eq!(record.values[3], row["status"], "{key}: status");
        assert_eq!(row["id"].as_str(), Some(record.id.as_str()), "{key}: id");
    }
    let contact_info = people["FS00002"]["contact_info"].as_str().unwrap_or_default();
    assert!(contact_info.contains("zoe@example.com"), "the new address is stored: {contact_info}");
    assert_eq!(people["FS00002"]["first_name"], "Zoë");
    let new = people["FS00009"]["contact_info"].as_str().unwrap_or_default();
    assert!(
        !new.contains("email") && !new.contains(";N;"),
        "no element, and no null, for an empty e-mail: {new:?}"
    );
    assert_eq!(people["FS00009"]["status"], "publish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_moved_to_the_trash_reads_as_deleted() {
    let Some(site) = WordPress::start().await else { return };
    site.set_time_zone(ZONE).await;
    let ids = site.create_people(3).await;
    let mut connector = RestConnector::open(&config(&site)).expect("a valid configuration");
    let since = Timestamp::now() - SignedDuration::from_secs(2);
    site.php_with("wp_trash_post( $input );", &json!(ids[1])).await;
    let request = ReadRequest { paths: vec![paths().key], since: None };
    let listed = connector.read_page(&request, None).await.expect("a page").records;
    assert_eq!(listed.len(), 3, "the trashed post is listed");
    let trashed =
        listed.iter().find(|record| record.id.as_str() == ids[1].to_string()).expect("the trashed post");
    assert!(trashed.deleted && listed.iter().filter(|record| record.deleted).count() == 1);
    let recent = connector
        .read_page(
            &ReadRequest { paths: vec![paths().key], since: Some(fieldsync_connector::Since::Time(since)) },
            None,
        )
        .await
        .expect("an incremental page")
        .records;
    assert!(
        recent.iter().any(|record| record.id == trashed.id && record.deleted),
        "an incremental read finds the trashing: {recent:?}"
    );
    let found =
        connector.lookup(&[paths().key], &Lookup::Ids(vec![trashed.id.clone()])).await.expect("a lookup");
    assert!(found[0].deleted, "a look-up finds the trashed post deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_wordpress_fails_after_inserting_the_post_is_found_by_its_key_not_sent_again() {
    // Issue 12, point 6: WordPress answered a create with an error after it had inserted the
    // post; sent again, the create made a duplicate.
    let Some(site) = WordPress::start().await else { return };
    site.set_time_zone(ZONE).await;
    site.fail_contact_info(true).await;
    let mut connector = RestConnector::open(&config(&site)).expect("a valid configuration");
    let email = paths().email;
    let field = |path: &str, value: Value| FieldWrite { path: path.into(), value, expected: None };
    let fields = vec![
        field("/meta/knvb_id", json!("FS00077")),
        field("/meta/first_name", json!("Daan")),
        field(&email, json!("daan@example.com")),
    ];
    let results = connector.apply(&[Write::Create { fields: fields.clone() }]).await.expect("applied");
    let people = stored(&site).await;
    assert_eq!(people.len(), 1, "one post, whatever the answer: {people:?}");
    let half_made = &people["FS00077"];
    assert!(
        !half_made["contact_info"].as_str().unwrap_or_default().contains("daan@example.com"),
        "the fault left the post half made"
    );
    let id = match &results[0] {
        Err(ConnectorError::AlreadyExists { id }) => id.clone(),
        other => panic!("a create WordPress made before failing gave {other:?}, not AlreadyExists"),
    };
    assert_eq!(half_made["id"].as_str(), Some(id.as_str()));

    // What the engine does next: the record is there, found by its key, and updated.
    site.fail_contact_info(false).await;
    let results = connector.apply(&[Write::Update { id: id.clone(), fields }]).await.expect("applied");
    assert!(results[0].is_ok(), "{results:?}");
    let people = stored(&site).await;
    assert_eq!(people.len(), 1);
    assert!(people["FS00077"]["contact_info"].as_str().unwrap_or_default().contains("daan@example.com"));
}
