//! Batch writes against a real WordPress (`batch = { url = "/wp-json/batch/v1" }`): creates go
//! in `/batch/v1` calls of `size` each, every create gets its own outcome, a member WordPress
//! refuses is refused alone while the others of its batch land, and each landed create is what
//! the site's database holds.

use fieldsync_connector::testkit::wordpress::WordPress;
use fieldsync_connector::{Connector, ConnectorError, FieldWrite, Lookup, Write};
use fieldsync_connector_rest::{Auth, Batch, Create, Preset, RestConfig, RestConnector, Secret};
use serde_json::{Value, json};

fn connector(site: &WordPress, size: usize) -> RestConnector {
    let mut config = RestConfig::new(&site.base_url());
    config.preset = Some(Preset::Wordpress);
    config.auth =
        Some(Auth::Basic { user: site.user().to_owned(), password: Secret::new(site.app_password()) });
    config.create = Some(Create { unique: Some("/meta/knvb_id".into()), ..Create::default() });
    config.batch = Some(Batch { url: "/wp-json/batch/v1".into(), size: Some(size) });
    RestConnector::open(&config).expect("the configuration is valid")
}

/// A create of member `number`; `email` as given.
fn create(number: usize, email: &str) -> Write {
    let field = |path: &str, value: Value| FieldWrite { path: path.into(), value, expected: None };
    Write::Create {
        fields: vec![
            field("/meta/knvb_id", json!(format!("NL{number:05}"))),
            field("/meta/first_name", json!(format!("Sanne{number}"))),
            field("/meta/last_name", json!("van der Meer")),
            field("/meta/email", json!(email)),
            field("/meta/contact_info[type=mobile]/value", json!(format!("+3161234{number:04}"))),
        ],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_go_in_batches_and_a_refused_member_is_refused_alone() {
    let Some(site) = WordPress::start().await else { return };
    let mut connector = connector(&site, 3);
    // Seven creates: batches of 3, 3 and 1; the fifth has an address WordPress refuses.
    let writes: Vec<Write> = (1..=7)
        .map(|number| {
            let email =
                if number == 5 { "not an address".to_owned() } else { format!("sanne{number}@club.nl") };
            create(number, &email)
        })
        .collect();
    let before = site.requests().len();
    let results = connector.apply(&writes).await.expect("the batches are sent");
    let requests: Vec<String> = site.requests()[before..].to_vec();

    // One listing for `create.unique`, then three batch calls and no single create.
    let posts: Vec<&String> = requests.iter().filter(|request| request.starts_with("POST")).collect();
    assert_eq!(posts.len(), 3, "{requests:#?}");
    assert!(posts.iter().all(|request| request.starts_with("POST /wp-json/batch/v1")), "{requests:#?}");

    let mut ids = Vec::new();
    for (number, result) in (1..=7).zip(&results) {
        match (number, result) {
            (5, Err(ConnectorError::Rejected { message })) => {
                assert!(message.contains("meta.email"), "{message}");
            }
            (5, other) => panic!("the refused member's create ended {other:?}"),
            (_, Ok(outcome)) => ids.push((number, outcome.id.clone())),
            (_, Err(error)) => panic!("member {number}: {error}"),
        }
    }

    // The site's database holds exactly the six members, each as written, published.
    let code = r#"
        $people = array();
        foreach ( get_posts( array( 'post_type' => 'person', 'post_status' => 'any', 'numberposts' => -1 ) ) as $post ) {
            $people[] = array(
                'id' => (string) $post->ID,
                'status' => $post->post_status,
                'knvb_id' => get_post_meta( $post->ID, 'knvb_id', true ),
                'first_name' => get_post_meta( $post->ID, 'first_name', true ),
                'email' => get_post_meta( $post->ID, 'email', true ),
                'contact_info' => get_post_meta( $post->ID, 'contact_info', true ),
            );
        }
        echo wp_json_encode( $people );
    "#;
    let people: Vec<Value> = serde_json::from_str(&site.php(code).await).expect("people as JSON");
    assert_eq!(people.len(), 6, "{people:#?}");
    for (number, id) in &ids {
        let person = people
            .iter()
            .find(|person| person["id"] == id.as_str())
            .unwrap_or_else(|| panic!("member {number} (record {id}) is not on the site"));
        assert_eq!(
            (&person["status"], &person["knvb_id"], &person["first_name"], &person["email"]),
            (
                &json!("publish"),
                &json!(format!("NL{number:05}")),
                &json!(format!("Sanne{number}")),
                &json!(format!("sanne{number}@club.nl"))
            )
        );
        assert_eq!(
            person["contact_info"],
            json!([{ "type": "mobile", "value": format!("+3161234{number:04}") }])
        );
    }

    // Verification by the write's response: each batch answer holds the stored record.
    let paths = vec!["/meta/email".to_owned(), "/meta/knvb_id".to_owned()];
    let ids_only = ids.iter().map(|(_, id)| id.clone()).collect();
    let before = site.requests().len();
    let verified = connector.lookup(&paths, &Lookup::Ids(ids_only)).await.expect("the look-up answers");
    assert_eq!(site.requests().len(), before, "verified from the batch answers, without requests");
    assert_eq!(verified.len(), 6);
    for record in verified {
        let person =
            people.iter().find(|person| person["id"] == record.id.as_str()).expect("a stored person");
        assert_eq!(record.values, vec![person["email"].clone(), person["knvb_id"].clone()]);
    }

    // A batch of creates whose link keys the site holds already sends nothing: `create.unique`.
    let again = connector.apply(&writes[..2]).await.expect("the look-up answers");
    assert!(
        again.iter().all(|result| matches!(result, Err(ConnectorError::AlreadyExists { .. }))),
        "{again:?}"
    );
}
