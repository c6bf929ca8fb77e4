//! `fieldsync-bench rest`: creates against a real WordPress and a real Django REST Framework
//! site, by `fieldsync run` from a club's SQLite table and by a plain HTTP client sending the
//! same requests (method, URL, headers, auth, JSON bodies) with the same concurrency, each on
//! a fresh server. Prints wall time, requests and the ratio, and checks that both left the
//! server holding the same records.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use fieldsync_app::members::{link_toml, member_fields_toml, sqlite_connector_toml};
use fieldsync_connector::testkit::django::{DjangoOptions, DjangoServer};
use fieldsync_connector::testkit::wordpress::WordPress;
use rusqlite::params;
use serde_json::{Value, json};

use crate::generate::Member;

/// The most sub-requests WordPress takes in one `/batch/v1` call (`rest_get_max_batch_size`).
const WORDPRESS_BATCH: usize = 25;

/// What to measure.
#[derive(Debug, clap::Args)]
pub struct RestSettings {
    /// How many members to create.
    #[arg(long, default_value_t = 1_200)]
    pub members: u64,
    /// The servers: `wordpress`, `django`.
    #[arg(long, value_delimiter = ',', default_values_t = ["wordpress".to_string(), "django".to_string()])]
    pub servers: Vec<String>,
    /// Runs of each measurement, each on a fresh server (the median is shown).
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Requests at once, for both clients (the rest connector's `concurrency`).
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// The generator's seed.
    #[arg(long, default_value_t = crate::scenario::SEED)]
    pub seed: u64,
    /// The `fieldsync` binary to measure (default: next to this program).
    #[arg(long)]
    pub fieldsync: Option<PathBuf>,
}

/// The two clients, and whether writes go in batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Client {
    Plain,
    Fieldsync,
    PlainBatch,
    FieldsyncBatch,
    /// Django without `key_param`: look-ups by key read the listing instead.
    FieldsyncListing,
}

impl Client {
    fn name(self) -> &'static str {
        match self {
            Client::Plain => "plain client",
            Client::Fieldsync => "fieldsync",
            Client::PlainBatch => "plain client, batches of 25",
            Client::FieldsyncBatch => "fieldsync, `batch` of 25",
            Client::FieldsyncListing => "fieldsync, no `key_param`",
        }
    }

    fn batched(self) -> bool {
        matches!(self, Client::PlainBatch | Client::FieldsyncBatch)
    }
}

/// One measurement.
#[derive(Clone, Debug)]
struct Measured {
    wall: Duration,
    /// Requests the server logged.
    requests: usize,
    /// The records the server holds afterwards, by link key, as compared between clients.
    stored: BTreeMap<String, Value>,
}

/// Runs every measurement and prints the table.
///
/// # Errors
///
/// When a server does not start, a client fails, or the clients leave different records.
pub fn run(settings: &RestSettings) -> Result<()> {
    let fieldsync = crate::fieldsync_binary(settings.fieldsync.as_deref())?;
    let members: Vec<Member> = (0..settings.members)
        .map(|index| {
            let mut member = Member::generate(settings.seed, index);
            // WordPress's `is_email` takes ASCII addresses only (Zoë's would be refused).
            member.email = member.email.replace('ë', "e");
            member
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    println!(
        "| server | client | members | wall (min–max) | requests | requests/s | members/s | against the plain client |"
    );
    println!("|---|---|---:|---|---:|---:|---:|---:|");
    for server in &settings.servers {
        let clients: &[Client] = match server.as_str() {
            "wordpress" => &[Client::Plain, Client::Fieldsync, Client::PlainBatch, Client::FieldsyncBatch],
            "django" => &[Client::Plain, Client::Fieldsync, Client::FieldsyncListing],
            other => bail!("unknown server {other:?}: `wordpress` or `django`"),
        };
        let mut plain_wall: BTreeMap<bool, f64> = BTreeMap::new();
        let mut reference: Option<BTreeMap<String, Value>> = None;
        for &client in clients {
            let mut samples = Vec::new();
            for _ in 0..settings.runs {
                let measured = runtime.block_on(measure(server, client, &members, settings, &fieldsync))?;
                check_stored(&measured, &members, &mut reference, server, client)?;
                samples.push(measured);
            }
            samples.sort_by_key(|sample| sample.wall);
            let median = samples[samples.len() / 2].clone();
            let wall = median.wall.as_secs_f64();
            if matches!(client, Client::Plain | Client::PlainBatch) {
                plain_wall.insert(client.batched(), wall);
            }
            let ratio = plain_wall
                .get(&client.batched())
                .map_or(String::new(), |plain| format!("{:.2}×", wall / plain));
            println!(
                "| {server} | {} | {} | {} ({}–{}) | {} | {:.0} | {:.0} | {ratio} |",
                client.name(),
                members.len(),
                seconds(median.wall),
                seconds(samples[0].wall),
                seconds(samples[samples.len() - 1].wall),
                median.requests,
                median.requests as f64 / wall,
                members.len() as f64 / wall,
            );
        }
    }
    Ok(())
}

fn seconds(duration: Duration) -> String {
    format!("{:.2} s", duration.as_secs_f64())
}

/// Every client must leave the server holding exactly the generated members, the same as the
/// first client did.
fn check_stored(
    measured: &Measured,
    members: &[Member],
    reference: &mut Option<BTreeMap<String, Value>>,
    server: &str,
    client: Client,
) -> Result<()> {
    if measured.stored.len() != members.len() {
        bail!(
            "{server}, {}: the server holds {} records, not {}",
            client.name(),
            measured.stored.len(),
            members.len()
        );
    }
    match reference {
        None => *reference = Some(measured.stored.clone()),
        Some(reference) => {
            for (key, record) in reference.iter() {
                if measured.stored.get(key) != Some(record) {
                    bail!(
                        "{server}, {}: member {key} is stored as {:?}, the first client stored {record}",
                        client.name(),
                        measured.stored.get(key)
                    );
                }
            }
        }
    }
    Ok(())
}

/// One measurement on a fresh server.
async fn measure(
    server: &str,
    client: Client,
    members: &[Member],
    settings: &RestSettings,
    fieldsync: &Path,
) -> Result<Measured> {
    match server {
        "wordpress" => {
            let Some(site) = WordPress::start().await else { bail!("a real WordPress cannot start here") };
            let before = site.requests().len();
            let wall = match client {
                Client::Plain | Client::PlainBatch => {
                    let auth = Auth::Basic { user: site.user().into(), password: site.app_password().into() };
                    let bodies: Vec<Value> = members.iter().map(wordpress_body).collect();
                    let batch = client.batched().then(|| {
                        (format!("{}/wp-json/batch/v1", site.site_url()), "/wp/v2/people".to_string())
                    });
                    plain(&site.base_url(), &auth, &bodies, settings.concurrency, batch).await?
                }
                Client::Fieldsync | Client::FieldsyncBatch | Client::FieldsyncListing => {
                    let config = wordpress_config(&site, settings.concurrency, client.batched());
                    let env = [("WP_USER", site.user()), ("WP_APP_PASSWORD", site.app_password())];
                    run_fieldsync(fieldsync, &config, members, "knvb_id", &env)?
                }
            };
            let requests = site.requests().len() - before;
            let stored = wordpress_stored(&site).await?;
            Ok(Measured { wall, requests, stored })
        }
        "django" => {
            let site = DjangoServer::start(&DjangoOptions::default())
                .context("a real Django site cannot start here")?;
            let before = site.requests().len();
            let wall = match client {
                Client::Plain | Client::PlainBatch => {
                    let auth = Auth::Token(site.token().into());
                    let bodies: Vec<Value> = members.iter().map(django_body).collect();
                    plain(&site.players_url(), &auth, &bodies, settings.concurrency, None).await?
                }
                Client::Fieldsync | Client::FieldsyncBatch | Client::FieldsyncListing => {
                    let config =
                        django_config(&site, settings.concurrency, client != Client::FieldsyncListing);
                    run_fieldsync(
                        fieldsync,
                        &config,
                        members,
                        "federation_id",
                        &[("DRF_TOKEN", site.token())],
                    )?
                }
            };
            let requests = site.requests().len() - before;
            let stored = site
                .players()
                .into_iter()
                .map(|mut player| {
                    for name in ["id", "updated_at", "version"] {
                        player.remove(name);
                    }
                    let key = player["federation_id"].as_str().unwrap_or_default().to_string();
                    (key, Value::Object(player))
                })
                .collect();
            Ok(Measured { wall, requests, stored })
        }
        other => bail!("unknown server {other:?}"),
    }
}

/// A member's mobile number as fieldsync writes it (E.164).
fn mobile(member: &Member) -> String {
    format!("+316{}", member.mobile)
}

fn birth_date(member: &Member) -> String {
    let (year, month, day) = member.birth;
    format!("{year:04}-{month:02}-{day:02}")
}

/// The body of a WordPress create, as the rest connector with the `wordpress` preset and the
/// configuration of [`wordpress_config`] sends it.
fn wordpress_body(member: &Member) -> Value {
    json!({
        "status": "publish",
        "title": format!("{} {}", member.first_name, member.last_name),
        "meta": {
            "knvb_id": member.ext_id,
            "first_name": member.first_name,
            "last_name": member.last_name,
            "email": member.email,
            "birth_date": birth_date(member),
            "contact_info": [{ "type": "mobile", "value": mobile(member) }],
        },
    })
}

/// The body of a Django create, as the rest connector with the `drf` preset sends it.
fn django_body(member: &Member) -> Value {
    json!({
        "federation_id": member.ext_id,
        "first_name": member.first_name,
        "last_name": member.last_name,
        "email": member.email,
        "mobile": mobile(member),
        "birth_date": birth_date(member),
        "active": member.active,
    })
}

fn wordpress_config(site: &WordPress, concurrency: usize, batch: bool) -> String {
    let batch = if batch { "batch = { url = \"/wp-json/batch/v1\", size = 25 }\n" } else { "" };
    let site_settings = format!(
        r#"preset = "wordpress"
base_url = "{base}"
auth = {{ basic = {{ user = "${{WP_USER}}", password = "${{WP_APP_PASSWORD}}" }} }}
concurrency = {concurrency}
create = {{ unique = "/meta/knvb_id", templates = {{ "/title" = "{{/meta/first_name}} {{/meta/last_name}}" }} }}
{batch}"#,
        base = site.base_url(),
    );
    club_to_rest_config(
        ("knvb_id", "/meta/knvb_id"),
        "site",
        &site_settings,
        &[
            ("first_name", "/meta/first_name"),
            ("last_name", "/meta/last_name"),
            ("email", "/meta/email"),
            ("mobile", "/meta/contact_info[type=mobile]/value"),
            ("birth_date", "/meta/birth_date"),
        ],
    )
}

/// The club table (`club.db`) and the Django site's players, keyed by `federation_id`, with
/// `concurrency` requests at once and, with `key_param`, counterparts found by `federation_id__in`.
pub(crate) fn django_config(site: &DjangoServer, concurrency: usize, key_param: bool) -> String {
    let key_param = if key_param {
        "key_param = { name = \"federation_id__in\", path = \"/federation_id\", join = \",\" }\n"
    } else {
        ""
    };
    let backend_settings = format!(
        r#"preset = "drf"
base_url = "{url}"
auth = {{ header = {{ name = "Authorization", value = "Token ${{DRF_TOKEN}}" }} }}
concurrency = {concurrency}
{key_param}create = {{ unique = "/federation_id" }}
version = "/version"
"#,
        url = site.players_url(),
    );
    club_to_rest_config(
        ("federation_id", "/federation_id"),
        "backend",
        &backend_settings,
        &[
            ("first_name", "/first_name"),
            ("last_name", "/last_name"),
            ("email", "/email"),
            ("mobile", "/mobile"),
            ("birth_date", "/birth_date"),
            ("active", "/active"),
        ],
    )
}

/// The configuration of both clients' runs: the club's member table (left, keyed by
/// `keys.0`) creating members in the rest connector `rest` (right, keyed by `keys.1`) whose
/// settings after its `kind` are `rest_settings`, with the member fields `fields` (each its
/// name, which is the club's column too, and its path in the rest connector).
fn club_to_rest_config(
    keys: (&str, &str),
    rest: &str,
    rest_settings: &str,
    fields: &[(&str, &str)],
) -> String {
    let fields: Vec<(&str, &str, &str)> = fields.iter().map(|&(name, path)| (name, name, path)).collect();
    format!(
        "state = \"sqlite://state.db\"\n\n{club}modified_format = \"rfc3339\"\n\n\
         [connectors.{rest}]\nkind = \"rest\"\n{rest_settings}\n{link}creates = \"left_to_right\"\n{fields}",
        club = sqlite_connector_toml("club", "club.db", "members", keys.0, "updated_at"),
        link = link_toml("members", "club", rest, keys, "club"),
        fields = member_fields_toml("members", &fields),
    )
}

/// Writes the club's table and the configuration to a fresh directory, runs `fieldsync run`
/// there, and returns its wall time, process start to exit.
fn run_fieldsync(
    fieldsync: &Path,
    config: &str,
    members: &[Member],
    key: &str,
    env: &[(&str, &str)],
) -> Result<Duration> {
    let dir = tempfile::Builder::new().prefix("fieldsync-bench-rest-").tempdir()?;
    let club = rusqlite::Connection::open(dir.path().join("club.db"))?;
    club.execute_batch(&format!(
        "CREATE TABLE members ({key} TEXT PRIMARY KEY, first_name TEXT, last_name TEXT, email TEXT,
                               mobile TEXT, birth_date TEXT, active INTEGER, updated_at TEXT NOT NULL);"
    ))?;
    let transaction = club.unchecked_transaction()?;
    {
        let mut insert =
            transaction.prepare("INSERT INTO members VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")?;
        let at = (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1)).to_string();
        for member in members {
            insert.execute(params![
                member.ext_id,
                member.first_name,
                member.last_name,
                member.email,
                format!("06-{}", member.mobile),
                birth_date(member),
                i64::from(member.active),
                at
            ])?;
        }
    }
    transaction.commit()?;
    drop(club);
    std::fs::write(dir.path().join("fieldsync.toml"), config)?;
    let started = Instant::now();
    let output = Command::new(fieldsync)
        .current_dir(dir.path())
        .args(["run", "--json"])
        .envs(env.iter().copied())
        .env_remove("FIELDSYNC_CONFIG")
        .output()
        .with_context(|| format!("running {}", fieldsync.display()))?;
    let wall = started.elapsed();
    let report: Value = serde_json::from_slice(&output.stdout).with_context(|| {
        format!("fieldsync's report is not JSON: {}", String::from_utf8_lossy(&output.stderr))
    })?;
    let done = report[0]["stats"]["writes_done"].as_u64();
    if !output.status.success() || done != Some(members.len() as u64) {
        bail!("fieldsync run ended {} with {done:?} writes done: {report}", output.status);
    }
    Ok(wall)
}

/// How the plain client authenticates.
enum Auth {
    Basic { user: String, password: String },
    Token(String),
}

/// Sends one `POST` of each body to `url` (or, with `batch`, one `POST` of up to 25 of them as
/// WordPress batch requests to its URL, each at its path), `concurrency` at once, as the rest
/// connector does: the same headers, auth and JSON. Returns the time from the first request to
/// the last answer.
async fn plain(
    url: &str,
    auth: &Auth,
    bodies: &[Value],
    concurrency: usize,
    batch: Option<(String, String)>,
) -> Result<Duration> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client =
        reqwest::Client::builder().timeout(Duration::from_secs(30)).user_agent("fieldsync-bench").build()?;
    let requests: Vec<(String, Value)> = match &batch {
        None => bodies.iter().map(|body| (url.to_string(), body.clone())).collect(),
        Some((batch_url, path)) => bodies
            .chunks(WORDPRESS_BATCH)
            .map(|chunk| {
                let requests: Vec<Value> = chunk
                    .iter()
                    .map(|body| json!({ "method": "POST", "path": path, "body": body }))
                    .collect();
                (batch_url.clone(), json!({ "validation": "normal", "requests": requests }))
            })
            .collect(),
    };
    let requests = Arc::new(requests);
    let next = Arc::new(AtomicUsize::new(0));
    let auth = Arc::new(match auth {
        Auth::Basic { user, password } => (Some((user.clone(), password.clone())), None),
        Auth::Token(token) => (None, Some(format!("Token {token}"))),
    });
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, requests, next, auth) =
            (client.clone(), Arc::clone(&requests), Arc::clone(&next), Arc::clone(&auth));
        workers.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some((url, body)) = requests.get(index) else { return Ok::<(), anyhow::Error>(()) };
                let mut request =
                    client.post(url).header(reqwest::header::ACCEPT, "application/json").json(body);
                match &*auth {
                    (Some((user, password)), _) => request = request.basic_auth(user, Some(password)),
                    (None, Some(token)) => request = request.header(reqwest::header::AUTHORIZATION, token),
                    (None, None) => {}
                }
                let response = request.send().await?;
                let status = response.status();
                let text = response.text().await?;
                if !status.is_success() {
                    bail!("HTTP {status}: {}", text.chars().take(300).collect::<String>());
                }
                // A batch is answered 207 with each request's own status.
                if let Ok(answer) = serde_json::from_str::<Value>(&text)
                    && let Some(Value::Array(responses)) = answer.get("responses")
                    && let Some(failed) = responses.iter().find(|response| {
                        !response["status"].as_u64().is_some_and(|status| (200..300).contains(&status))
                    })
                {
                    bail!(
                        "a batch request failed: {}",
                        failed.to_string().chars().take(300).collect::<String>()
                    );
                }
            }
        });
    }
    while let Some(joined) = workers.join_next().await {
        joined??;
    }
    Ok(started.elapsed())
}

/// The site's people by `knvb_id`, as its database holds them: status, title, the meta fields.
async fn wordpress_stored(site: &WordPress) -> Result<BTreeMap<String, Value>> {
    let code = r#"
        $people = array();
        foreach ( get_posts( array( 'post_type' => 'person', 'post_status' => 'any', 'numberposts' => -1 ) ) as $post ) {
            $meta = array();
            foreach ( array( 'knvb_id', 'first_name', 'last_name', 'email', 'birth_date', 'contact_info' ) as $name ) {
                $meta[ $name ] = get_post_meta( $post->ID, $name, true );
            }
            $people[] = array( 'status' => $post->post_status, 'title' => $post->post_title, 'meta' => $meta );
        }
        echo wp_json_encode( $people );
    "#;
    let people: Vec<Value> =
        serde_json::from_str(&site.php(code).await).context("the site's people as JSON")?;
    let mut stored = BTreeMap::new();
    for person in people {
        let key = person["meta"]["knvb_id"].as_str().unwrap_or_default().to_string();
        if stored.insert(key.clone(), person).is_some() {
            bail!("two people with knvb_id {key}");
        }
    }
    Ok(stored)
}
