//! `fieldsync-bench hooks`: the latency from an accepted webhook to both sides holding the
//! value, through a `fieldsync serve` process between a club's SQLite table and another side
//! holding the same `--members` members: a federation register in SQLite (`sqlite`), or a real
//! Django REST Framework site (`django`, `testkit::django`). At each rate of `--rates`,
//! `--hooks` webhooks are sent at that steady rate, each after an edit of one club member and
//! naming it (so that the service makes targeted runs; `--unnamed` leaves the member out, and
//! each webhook makes an incremental run); the time from sending the webhook to the other side
//! holding the edited value is measured for each, and its p50, p99 and maximum printed, with
//! how many did not arrive within a minute (the rates after one where some did not are not
//! measured: the latency has climbed).

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use fieldsync_connector::testkit::django::{DjangoOptions, DjangoServer};
use rusqlite::{OptionalExtension as _, params};

use crate::generate;

/// The HMAC secret the benchmark's club signs its webhooks with.
const SECRET: &str = "bench-webhook-secret-2026";

/// How long one webhook may take to reach the other side before it is counted as late.
const PATIENCE: Duration = Duration::from_secs(60);

/// What `fieldsync-bench hooks` measures.
#[derive(Debug, clap::Args)]
pub struct HookSettings {
    /// Members in the link.
    #[arg(long, default_value_t = 100_000)]
    pub members: u64,
    /// Webhooks sent at each rate.
    #[arg(long, default_value_t = 1_000)]
    pub hooks: usize,
    /// Webhooks a second, one measurement each.
    #[arg(long, value_delimiter = ',', default_values_t = [10.0, 50.0])]
    pub rates: Vec<f64>,
    /// The other side: `sqlite` (a federation register), `django` (a real Django site).
    #[arg(long, value_delimiter = ',', default_values_t = ["sqlite".to_string(), "django".to_string()])]
    pub sides: Vec<String>,
    /// Webhooks that do not name the member changed: each makes an incremental run.
    #[arg(long)]
    pub unnamed: bool,
    /// The generator's seed.
    #[arg(long, default_value_t = crate::scenario::SEED)]
    pub seed: u64,
    /// The `fieldsync` binary to measure (default: next to this program).
    #[arg(long)]
    pub fieldsync: Option<PathBuf>,
}

/// Runs the measurement for every pair of sides at every rate, and prints a line for each.
pub fn run(settings: &HookSettings) -> Result<()> {
    let fieldsync = crate::fieldsync_binary(settings.fieldsync.as_deref())?;
    for sides in &settings.sides {
        let dir = tempfile::tempdir()?;
        let work = dir.path();
        let link = match sides.as_str() {
            "sqlite" => Link::sqlite(work, settings)?,
            "django" => Link::django(work, settings)?,
            other => bail!("unknown sides {other:?}: sqlite or django"),
        };
        let records = if settings.unnamed { "" } else { ", records = \"/member\"" };
        let config = link.config.replacen(
            "[connectors.club]\n",
            &format!(
                "[connectors.club]\nwebhook = {{ secret = \"{SECRET}\", signature = {{ header = \"X-Hub-Signature-256\", \
                 prefix = \"sha256=\", encoding = \"hex\" }}, rate = \"100000/1s\"{records} }}\n"
            ),
            1,
        ) + "\n[server]\nlisten = \"127.0.0.1:0\"\n";
        std::fs::write(work.join("fieldsync.toml"), config)?;
        let started = Instant::now();
        let status = Command::new(&fieldsync)
            .current_dir(work)
            .args(["run", "--json"])
            .envs(link.env.iter().map(|(name, value)| (name, value)))
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("the first sync failed: {status}");
        }
        println!(
            "club (SQLite) and {sides}: {} members, first sync {:.1} s",
            settings.members,
            started.elapsed().as_secs_f64()
        );
        measure(&fieldsync, work, &link, settings)?;
    }
    Ok(())
}

/// The link the webhooks are sent for: the club's table and where each member's e-mail
/// address arrives on the other side.
struct Link {
    config: String,
    /// The environment the configuration's secrets come from.
    env: Vec<(String, String)>,
    /// The club's SQLite file.
    club: PathBuf,
    /// A member's id by its place in the club's table (`?1`).
    nth: &'static str,
    /// Sets the e-mail address (`?1`) and modification time (`?2`, as `modified` writes it) of
    /// the member `?3`.
    edit: &'static str,
    /// Modification times as the club's table writes them.
    modified: fn(jiff::Timestamp) -> rusqlite::types::Value,
    /// The other side's SQLite file, and its e-mail address of a member (`?1`).
    arrival: (PathBuf, &'static str),
    /// The Django site, kept up for the measurement.
    _site: Option<DjangoServer>,
}

impl Link {
    /// A federation register and a club table of generated members (`fieldsync-bench run`'s).
    fn sqlite(work: &Path, settings: &HookSettings) -> Result<Self> {
        generate::write_members(
            &work.join("left.db"),
            &work.join("right.db"),
            settings.members,
            settings.seed,
            false,
        )?;
        Ok(Link {
            config: generate::config(),
            env: Vec::new(),
            club: work.join("right.db"),
            nth: "SELECT federation_id FROM people LIMIT 1 OFFSET ?1",
            edit: "UPDATE people SET mail = ?1, modified = ?2 WHERE federation_id = ?3",
            modified: |at| at.as_millisecond().into(),
            arrival: (work.join("left.db"), "SELECT email FROM members WHERE ext_id = ?1"),
            _site: None,
        })
    }

    /// A real Django site seeded with the members, and a club table holding the same.
    fn django(work: &Path, settings: &HookSettings) -> Result<Self> {
        let options = DjangoOptions {
            players: usize::try_from(settings.members)?,
            seed: settings.seed,
            ..DjangoOptions::default()
        };
        let site = DjangoServer::start(&options).context("a real Django site cannot start here")?;
        // Seeded a moment ago, every player would count as changed since the first sync's cursor,
        // and a run reading the site incrementally would list them all: the players were last
        // changed two hours ago, as most of a real site's were.
        let seeded = rusqlite::Connection::open(site.database())?;
        seeded.execute("UPDATE club_player SET updated_at = datetime('now', '-2 hours')", [])?;
        drop(seeded);
        let club = rusqlite::Connection::open(work.join("club.db"))?;
        club.execute_batch(
            "CREATE TABLE members (federation_id TEXT PRIMARY KEY, first_name TEXT, last_name TEXT, email TEXT,
                                   mobile TEXT, birth_date TEXT, active INTEGER, updated_at TEXT NOT NULL);",
        )?;
        club.execute("ATTACH DATABASE ?1 AS site", params![site.database().to_string_lossy()])?;
        let hour_ago = (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1)).to_string();
        club.execute(
            "INSERT INTO members SELECT federation_id, first_name, last_name, email, mobile, birth_date, active, ?1
             FROM site.club_player",
            params![hour_ago],
        )?;
        Ok(Link {
            config: crate::rest::django_config(&site, 4, true),
            env: vec![("DRF_TOKEN".into(), site.token().into())],
            club: work.join("club.db"),
            nth: "SELECT federation_id FROM members LIMIT 1 OFFSET ?1",
            edit: "UPDATE members SET email = ?1, updated_at = ?2 WHERE federation_id = ?3",
            modified: |at| at.to_string().into(),
            arrival: (site.database(), "SELECT email FROM club_player WHERE federation_id = ?1"),
            _site: Some(site),
        })
    }
}

/// Starts `fieldsync serve` for `link` and measures each rate of `settings`.
fn measure(fieldsync: &Path, work: &Path, link: &Link, settings: &HookSettings) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut service = Service::start(fieldsync, work, &link.env)?;
    println!(
        "| webhooks/s asked | sent/s | sent | p50 | p99 | max | later than {}s | runs |",
        PATIENCE.as_secs()
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut offset = 0;
    for &rate in &settings.rates {
        let runs_before = runs(work)?;
        let sent = runtime.block_on(send_at(&service.base, link, settings, rate, offset));
        let (latencies, achieved) = sent.with_context(|| {
            let log = std::fs::read_to_string(work.join("serve.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            format!(
                "at {rate} webhooks a second; the service's log ends:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })?;
        offset += settings.hooks;
        let runs = runs(work)? - runs_before;
        let mut sorted = latencies;
        sorted.sort_by(f64::total_cmp);
        let at = |share: f64| {
            sorted[((sorted.len() as f64 * share).ceil() as usize).saturating_sub(1).min(sorted.len() - 1)]
        };
        let late = sorted.iter().filter(|latency| latency.is_infinite()).count();
        println!(
            "| {rate} | {achieved:.0} | {} | {} | {} | {} | {late} | {runs} |",
            sorted.len(),
            shown(at(0.50)),
            shown(at(0.99)),
            shown(sorted[sorted.len() - 1])
        );
        if late > 0 {
            println!("the latency climbed past {PATIENCE:?} at {rate} a second: no faster rate measured");
            break;
        }
    }
    service.stop();
    let state = rusqlite::Connection::open(work.join("state.db"))?;
    let mut statement = state.prepare("SELECT mode, count(*) FROM runs GROUP BY mode ORDER BY mode")?;
    let modes = statement
        .query_map([], |row| Ok(format!("{} {}", row.get::<_, i64>(1)?, row.get::<_, String>(0)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    println!("runs by mode, the first sync included: {}", modes.join(", "));
    Ok(())
}

/// Sends `settings.hooks` webhooks at `rate` a second, each after editing one club member
/// (members `offset`, `offset + 1`, … spread over the table), and waits for each to reach the
/// other side: the latencies in milliseconds (infinite for one later than `PATIENCE`), and the
/// rate the webhooks were sent at (lower than `rate` when the sender could not keep up).
async fn send_at(
    base: &str,
    link: &Link,
    settings: &HookSettings,
    rate: f64,
    offset: usize,
) -> Result<(Vec<f64>, f64)> {
    // reqwest is built without a TLS provider of its own; the service speaks plain HTTP.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut tasks = tokio::task::JoinSet::new();
    let club = generate::open(&link.club)?;
    let start = tokio::time::Instant::now();
    for number in 0..settings.hooks {
        tokio::time::sleep_until(start + interval.mul_f64(number as f64)).await;
        let index = (((offset + number) as u64 * 7_919) % settings.members) as i64;
        let id: String = club.query_row(link.nth, params![index], |row| row.get(0))?;
        let email = format!("hook{}.{number}@club.example", offset);
        club.execute(link.edit, params![email, (link.modified)(jiff::Timestamp::now()), id])?;
        let body = format!(r#"{{"member": "{id}", "seq": {}}}"#, offset + number);
        let signature = sign(&body);
        let sent = Instant::now();
        let response = http
            .post(format!("{base}/hooks/members/club"))
            .header("X-Hub-Signature-256", signature)
            .body(body)
            .send()
            .await
            .context("sending a webhook")?;
        if response.status().as_u16() != 202 {
            bail!("a webhook was answered {}", response.status());
        }
        let (other, query) = (link.arrival.0.clone(), link.arrival.1);
        tasks.spawn(async move { arrival(&other, query, &id, &email, sent).await });
    }
    let achieved = settings.hooks as f64 / start.elapsed().as_secs_f64();
    let mut latencies = Vec::with_capacity(settings.hooks);
    while let Some(latency) = tasks.join_next().await {
        latencies.push(latency??);
    }
    Ok((latencies, achieved))
}

/// Waits until the other side's file holds `email` for member `id` (`query`): the
/// milliseconds since `sent`; infinite when it does not within `PATIENCE`.
async fn arrival(other: &Path, query: &str, id: &str, email: &str, sent: Instant) -> Result<f64> {
    let connection = generate::open(other)?;
    connection.busy_timeout(Duration::from_secs(5))?;
    loop {
        let held: Option<String> = connection.query_row(query, params![id], |row| row.get(0)).optional()?;
        if held.as_deref() == Some(email) {
            return Ok(sent.elapsed().as_secs_f64() * 1000.0);
        }
        if sent.elapsed() > PATIENCE {
            return Ok(f64::INFINITY);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A latency as the table shows it.
fn shown(milliseconds: f64) -> String {
    if milliseconds.is_infinite() {
        format!("> {} s", PATIENCE.as_secs())
    } else {
        format!("{milliseconds:.0} ms")
    }
}

/// `sha256=<hex>` of `body` with `SECRET`.
fn sign(body: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    let tag = ring::hmac::sign(&key, body.as_bytes());
    let hex: String = tag.as_ref().iter().map(|byte| format!("{byte:02x}")).collect();
    format!("sha256={hex}")
}

/// How many runs the state store holds.
fn runs(work: &Path) -> Result<i64> {
    let state = rusqlite::Connection::open(work.join("state.db"))?;
    Ok(state.query_row("SELECT count(*) FROM runs", [], |row| row.get(0))?)
}

/// A `fieldsync serve` process in a work directory, its log in a file there: stopped with
/// SIGTERM, or killed when dropped (a measurement that failed before stopping it).
pub(crate) struct Serving {
    pub(crate) child: Child,
}

impl Serving {
    /// Starts `fieldsync serve` in `work` with `env`, its log in `log` there at `warn` (unless
    /// the benchmark's own `FIELDSYNC_LOG` asks for more) and its standard output to `stdout`.
    pub(crate) fn spawn(
        fieldsync: &Path,
        work: &Path,
        env: &[(String, String)],
        log: &str,
        stdout: Stdio,
    ) -> Result<Self> {
        let child = Command::new(fieldsync)
            .current_dir(work)
            .arg("serve")
            .envs(env.iter().map(|(name, value)| (name, value)))
            .env("FIELDSYNC_LOG", std::env::var("FIELDSYNC_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(stdout)
            .stderr(std::fs::File::create(work.join(log))?)
            .spawn()?;
        Ok(Self { child })
    }

    /// SIGTERM, and waits for the exit.
    pub(crate) fn stop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `fieldsync serve` in `work`, and the address it listens on.
struct Service {
    serving: Serving,
    base: String,
}

impl Service {
    fn start(fieldsync: &Path, work: &Path, env: &[(String, String)]) -> Result<Self> {
        let mut serving = Serving::spawn(fieldsync, work, env, "serve.log", Stdio::piped())?;
        let mut line = String::new();
        BufReader::new(serving.child.stdout.take().context("its output")?).read_line(&mut line)?;
        let base = line
            .trim()
            .strip_prefix("fieldsync serve: listening on ")
            .context("where it listens")?
            .to_string();
        Ok(Self { serving, base })
    }

    fn stop(&mut self) {
        self.serving.stop();
    }
}
