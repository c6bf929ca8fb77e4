//! `fieldsync-bench postgres`: fieldsync between two PostgreSQL member tables loaded with COPY,
//! against the floor of PostgreSQL's own COPY and a server-side scan (the first sync, a
//! no-change full run, changes on both sides), and `fieldsync serve` bringing many links to
//! their first sync with one process and with several sharing a PostgreSQL state store. The
//! server is `testkit::postgres::PostgresServer`, which runs with `fsync` off.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use fieldsync_app::members::{link_toml, member_fields_toml};
use fieldsync_connector::testkit::postgres::{PostgresServer, SUPERUSER};

use crate::Sample;
use crate::generate::{self, AREA_CODES, MEMBER_FIELDS, Member};
use crate::hooks::Serving;
use crate::scenario::{measured, run_fieldsync, seconds, spread};

mod organisations;

/// How long the service scenario waits for every link's first sync before giving up.
const SERVE_PATIENCE: Duration = Duration::from_secs(45 * 60);

/// How often the service scenario reads the state store's `runs`.
const POLL: Duration = Duration::from_millis(500);

/// What `fieldsync-bench postgres` measures.
#[derive(Debug, clap::Args)]
pub struct PostgresSettings {
    /// Members in the pair of tables of the sync scenarios.
    #[arg(long, default_value_t = 1_000_000)]
    pub members: u64,
    /// Members changed on each side by the delta scenario (10 % of them on both sides, 1 %
    /// new members).
    #[arg(long, default_value_t = 1_000)]
    pub changes: u64,
    /// Runs of the repeatable measurements: the no-change full run, the delta and their floors
    /// (the first sync runs once per state store).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// The state stores of the sync scenarios: `sqlite`, `postgres`.
    #[arg(long, value_delimiter = ',', default_values_t = ["sqlite".to_string(), "postgres".to_string()])]
    pub states: Vec<String>,
    /// Links of the service scenario, each a pair of tables.
    #[arg(long, default_value_t = 300)]
    pub links: usize,
    /// Members of each link of the service scenario.
    #[arg(long, default_value_t = 2_000)]
    pub link_members: u64,
    /// `fieldsync serve` processes sharing the state store: one measurement each.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 3])]
    pub workers: Vec<usize>,
    /// `[server] max_concurrent_runs` of the service scenario (it holds across the processes).
    #[arg(long, default_value_t = 6)]
    pub max_concurrent_runs: usize,
    /// The parts to run: `sync`, `serve`, `organisations` (`--links` organisations of
    /// `--link-members` members on one `for_each` link, run by the first of `--workers`).
    #[arg(long, value_delimiter = ',', default_values_t = ["sync".to_string(), "serve".to_string()])]
    pub parts: Vec<String>,
    /// When to measure.
    #[command(flatten)]
    pub quiet: Quiet,
    /// The generator's seed.
    #[arg(long, default_value_t = crate::scenario::SEED)]
    pub seed: u64,
    /// Where the generated COPY files and the runs' directories go.
    #[arg(long, default_value = "target/bench/postgres")]
    pub dir: PathBuf,
    /// The `fieldsync` binary to measure (default: next to this program).
    #[arg(long)]
    pub fieldsync: Option<PathBuf>,
}

/// Runs the parts asked for and prints their tables.
///
/// # Errors
///
/// When PostgreSQL is missing, a load or a run fails, or a run writes other than it must.
pub fn run(settings: &PostgresSettings) -> Result<()> {
    let fieldsync = crate::fieldsync_binary(settings.fieldsync.as_deref())?;
    let bench = std::env::current_exe()?;
    std::fs::create_dir_all(&settings.dir)?;
    let dir = std::fs::canonicalize(&settings.dir)?;
    let server = PostgresServer::start().context("no PostgreSQL here: apt-get install postgresql")?;
    let psql = Psql::new(&server)?;
    let bench = Bench { settings, fieldsync, bench, dir, server: &server, psql };
    bench.describe()?;
    for part in &settings.parts {
        match part.as_str() {
            "sync" => bench.sync()?,
            "serve" => bench.serve()?,
            "organisations" => bench.organisations()?,
            other => bail!("unknown part {other:?}: sync, serve or organisations"),
        }
    }
    Ok(())
}

/// Everything a part needs.
struct Bench<'a> {
    settings: &'a PostgresSettings,
    fieldsync: PathBuf,
    bench: PathBuf,
    dir: PathBuf,
    server: &'a PostgresServer,
    psql: Psql,
}

/// One measured scenario of the sync part.
struct Measured {
    state: String,
    scenario: &'static str,
    changes: u64,
    engine: Vec<Sample>,
    /// Cores of the machine busy on average during each engine run (all processes).
    busy: Vec<f64>,
    /// The 1-minute load average when each engine run started.
    load: Vec<f64>,
    writes: u64,
    expected_writes: u64,
    /// The floor it is compared with, and what that floor is made of.
    floor: Vec<f64>,
    floor_name: &'static str,
}

/// One measured floor operation, by its name.
struct Floor {
    state: String,
    name: &'static str,
    walls: Vec<f64>,
}

/// Where the federation's table lives, and its spelling.
const LEFT_DDL: &str = "
CREATE OR REPLACE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN NEW.updated_at := now(); RETURN NEW; END $$;
CREATE TABLE {table} (
    ext_id text PRIMARY KEY,
    first_name text NOT NULL,
    last_name text NOT NULL,
    email text,
    phone text,
    mobile text,
    birth_date date,
    active boolean NOT NULL DEFAULT true,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX {table}_updated_at ON {table} (updated_at);
CREATE TRIGGER {table}_touched BEFORE UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
";

/// The club's table: its own identity key, the federation's number unique.
const RIGHT_DDL: &str = "
CREATE OR REPLACE FUNCTION touch_modified() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN NEW.modified := now(); RETURN NEW; END $$;
CREATE TABLE {table} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    federation_id text NOT NULL UNIQUE,
    given text,
    family text,
    mail text,
    tel text,
    gsm text,
    born date,
    is_active boolean,
    modified timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX {table}_modified ON {table} (modified);
CREATE TRIGGER {table}_touched BEFORE UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION touch_modified();
";

/// The columns a COPY file of each side holds, in order.
const LEFT_COLUMNS: &str =
    "ext_id, first_name, last_name, email, phone, mobile, birth_date, active, updated_at";
const RIGHT_COLUMNS: &str = "federation_id, given, family, mail, tel, gsm, born, is_active, modified";

impl Bench<'_> {
    /// Prints the machine, PostgreSQL's version and its durability settings.
    fn describe(&self) -> Result<()> {
        let machine = crate::scenario::machine();
        let version = self.psql.query("postgres", "SELECT version()")?;
        let settings = self.psql.query(
            "postgres",
            "SELECT string_agg(name || '=' || setting || coalesce(unit, ''), ', ' ORDER BY name) FROM pg_settings \
             WHERE name IN ('fsync', 'full_page_writes', 'synchronous_commit', 'shared_buffers', 'work_mem', \
             'max_wal_size', 'wal_level', 'max_connections')",
        )?;
        println!("the federation's text key: its primary key only (the database's collation, ICU `en`)");
        println!(
            "machine: {} cores ({}), {} of memory; {version}; {settings} (the test server: fsync off)",
            machine.get("cores").map_or("?", String::as_str),
            machine.get("cpu").map_or("?", String::as_str),
            machine.get("memory").map_or("?", String::as_str),
        );
        Ok(())
    }

    /// The federation's table `table`.
    fn left_ddl(&self, table: &str) -> String {
        LEFT_DDL.replace("{table}", table)
    }

    fn url(&self, database: &str) -> String {
        self.server.url(database)
    }

    /// Drops `database` and makes it again from `template` (by copying its files).
    fn fresh_database(&self, database: &str, template: Option<&str>) -> Result<()> {
        self.psql.query("postgres", &format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))?;
        let from =
            template.map_or(String::new(), |template| format!(" TEMPLATE {template} STRATEGY FILE_COPY"));
        self.psql.query("postgres", &format!("CREATE DATABASE {database}{from}"))?;
        Ok(())
    }

    /// Makes the databases `{prefix}_left_base` and `{prefix}_right_base` anew (after dropping
    /// those and the runs' `{prefix}_left`, `{prefix}_right` and `{prefix}_state`), with a pair
    /// of tables for each of `names`: `members_{name}` of `per` members drawn from the seed and
    /// the name's place on the left, an empty `people_{name}` on the right. The COPY files and
    /// scripts go to `data`.
    fn load_pairs(&self, prefix: &str, names: &[String], per: u64, data: &Path) -> Result<()> {
        std::fs::create_dir_all(data)?;
        for database in ["left_base", "right_base", "left", "right", "state"] {
            self.psql
                .query("postgres", &format!("DROP DATABASE IF EXISTS {prefix}_{database} WITH (FORCE)"))?;
        }
        let (left, right) = (format!("{prefix}_left_base"), format!("{prefix}_right_base"));
        self.server.create_database(&left);
        self.server.create_database(&right);
        let (mut left_script, mut right_script) = (String::new(), String::new());
        for (number, name) in names.iter().enumerate() {
            let file = data.join(format!("left-{name}.tsv"));
            write_link_file(&file, per, self.settings.seed.wrapping_add(number as u64 + 1))?;
            let table = format!("members_{name}");
            left_script.push_str(&self.left_ddl(&table));
            let _ = writeln!(left_script, "\\copy {table} ({LEFT_COLUMNS}) FROM '{}'", file.display());
            right_script.push_str(&RIGHT_DDL.replace("{table}", &format!("people_{name}")));
        }
        left_script.push_str("VACUUM (ANALYZE);\n");
        self.psql.script(&left, &left_script, &data.join("left.sql"))?;
        self.psql.script(&right, &right_script, &data.join("right.sql"))?;
        Ok(())
    }

    /// Makes a measured run's databases fresh (`left` and `right` copied from their `_base`
    /// templates, `state` empty) and its working directory `work` empty; returns the directory.
    fn fresh_run(&self, [left, right, state]: [&str; 3], work: &str) -> Result<PathBuf> {
        self.fresh_database(left, Some(&format!("{left}_base")))?;
        self.fresh_database(right, Some(&format!("{right}_base")))?;
        self.fresh_database(state, None)?;
        let work = self.dir.join(work);
        if work.exists() {
            std::fs::remove_dir_all(&work)?;
        }
        std::fs::create_dir_all(&work)?;
        Ok(work)
    }

    /// The sync part: the first sync, no-change full runs and deltas, for each state store.
    fn sync(&self) -> Result<()> {
        let members = self.settings.members;
        let data = self.dir.join(format!("members-{members}"));
        write_copy_files(&data, members, self.settings.seed)?;
        let started = Instant::now();
        for base in ["federation_base", "club_base", "federation", "club", "state"] {
            self.psql.query("postgres", &format!("DROP DATABASE IF EXISTS {base} WITH (FORCE)"))?;
        }
        self.server.create_database("federation_base");
        self.server.create_database("club_base");
        self.psql.query("federation_base", &self.left_ddl("members"))?;
        self.psql.query("club_base", &RIGHT_DDL.replace("{table}", "people"))?;
        self.psql.commands(
            "federation_base",
            &[format!("\\copy members ({LEFT_COLUMNS}) FROM '{}'", data.join("left.tsv").display())],
        )?;
        self.psql.query("federation_base", "VACUUM (ANALYZE) members")?;
        eprintln!(
            "{members} members loaded with COPY and analysed in {:.1} s",
            started.elapsed().as_secs_f64()
        );

        let mut rows = Vec::new();
        let mut floors = Vec::new();
        for state in &self.settings.states {
            self.sync_with(state, &data, &mut rows, &mut floors)?;
        }
        print_sync(members, &rows, &floors);
        Ok(())
    }

    fn sync_with(
        &self,
        state: &str,
        data: &Path,
        rows: &mut Vec<Measured>,
        floors: &mut Vec<Floor>,
    ) -> Result<()> {
        let settings = self.settings;
        let members = settings.members;
        let state_url = match state {
            "sqlite" => "sqlite://state.db".to_string(),
            "postgres" => format!("{}?schema=fieldsync", self.url("state")),
            other => bail!("unknown state store {other:?}: sqlite or postgres"),
        };
        let work = self.fresh_run(["federation", "club", "state"], &format!("work-{state}"))?;
        let mut config = format!(
            "# fieldsync-bench postgres: a federation register (left) and a club table (right).\nstate = \"{state_url}\"\n\n"
        );
        config.push_str(&pair_config(
            "members",
            ("federation", &self.url("federation"), "members"),
            ("club", &self.url("club"), "people"),
            None,
        ));
        std::fs::write(work.join("fieldsync.toml"), config)?;
        self.psql.query("postgres", "CHECKPOINT")?;

        // The first sync: every member created on the empty right side.
        let mut row = Measured::new(state, "initial_create", 0, "copy_out_left + copy_in");
        let load = self.settings.quiet.wait()?;
        let meter = CpuMeter::start()?;
        let (sample, (_, writes)) = run_fieldsync(&self.bench, &self.fieldsync, &work, false)?;
        row.record(sample, meter.cores()?, load, writes, members);
        eprintln!(
            "{state}: initial_create {} ({writes} writes, {} KiB)",
            seconds(sample.wall_ms),
            sample.rss_kib
        );
        let held: u64 = self.psql.query("club", "SELECT count(*) FROM people")?.parse()?;
        ensure!(held == members, "the club holds {held} members after the first sync, not {members}");
        // Its floor: reading the federation's table out, and a COPY of every member into an
        // empty copy of the club's table (its indexes and trigger included).
        let copy_out_left = self.copy_out("federation", "members", LEFT_COLUMNS, &work)?;
        let copy_in = self.copy_in(data, &work)?;
        row.floor.push(copy_out_left + copy_in);
        floors.push(Floor { state: state.into(), name: "copy_out_left", walls: vec![copy_out_left] });
        floors.push(Floor { state: state.into(), name: "copy_in", walls: vec![copy_in] });
        rows.push(row);

        // What autovacuum would do meanwhile, done before measuring.
        self.psql.query("federation", "VACUUM (ANALYZE)")?;
        self.psql.query("club", "VACUUM (ANALYZE)")?;
        if state == "postgres" {
            self.psql.query("state", "VACUUM (ANALYZE)")?;
        }
        self.psql.query("postgres", "CHECKPOINT")?;

        // No changes, read in full.
        let mut row = Measured::new(state, "nochange_full", 0, "copy_out_both");
        let mut out_left = Floor { state: state.into(), name: "copy_out_left", walls: Vec::new() };
        let mut out_right = Floor { state: state.into(), name: "copy_out_right", walls: Vec::new() };
        let mut scan = Floor { state: state.into(), name: "server_scan_both", walls: Vec::new() };
        for _ in 0..settings.runs {
            let load = self.settings.quiet.wait()?;
            let meter = CpuMeter::start()?;
            let (sample, (_, writes)) = run_fieldsync(&self.bench, &self.fieldsync, &work, true)?;
            row.record(sample, meter.cores()?, load, writes, 0);
            eprintln!(
                "{state}: nochange_full {} ({writes} writes, {} KiB)",
                seconds(sample.wall_ms),
                sample.rss_kib
            );
            let left = self.copy_out("federation", "members", LEFT_COLUMNS, &work)?;
            let right = self.copy_out("club", "people", RIGHT_COLUMNS, &work)?;
            out_left.walls.push(left);
            out_right.walls.push(right);
            row.floor.push(left + right);
            scan.walls.push(self.server_scan(&work)?);
        }
        rows.push(row);
        floors.extend([out_left, out_right, scan]);

        // Changes on both sides, read incrementally.
        let mut row = Measured::new(state, "delta_incremental", settings.changes, "");
        for run in 0..settings.runs {
            let load = self.settings.quiet.wait()?;
            let edits = Edits::new(members, settings.seed, settings.changes, run);
            self.psql.script("federation", &edits.left, &work.join("edits-left.sql"))?;
            self.psql.script("club", &edits.right, &work.join("edits-right.sql"))?;
            let meter = CpuMeter::start()?;
            let (sample, (_, writes)) = run_fieldsync(&self.bench, &self.fieldsync, &work, false)?;
            row.record(sample, meter.cores()?, load, writes, edits.expected_writes);
            eprintln!(
                "{state}: delta_incremental {} ({writes} writes, {} expected, {} KiB)",
                seconds(sample.wall_ms),
                edits.expected_writes,
                sample.rss_kib
            );
        }
        rows.push(row);
        Ok(())
    }

    /// `\copy (SELECT columns FROM table) TO '/dev/null'` in `database`: its wall time, ms.
    fn copy_out(&self, database: &str, table: &str, columns: &str, work: &Path) -> Result<f64> {
        let command = format!("\\copy (SELECT {columns} FROM {table}) TO '/dev/null'");
        Ok(self.psql.measured(&self.bench, database, &[command], work)?.wall_ms)
    }

    /// A COPY of every member, as the club spells them, into an empty table made like the
    /// club's (its indexes and trigger too), in the club's database: its wall time, ms.
    fn copy_in(&self, data: &Path, work: &Path) -> Result<f64> {
        self.psql.query("club", &RIGHT_DDL.replace("{table}", "floor_people"))?;
        let command =
            format!("\\copy floor_people ({RIGHT_COLUMNS}) FROM '{}'", data.join("right.tsv").display());
        let sample = self.psql.measured(&self.bench, "club", &[command], work)?;
        self.psql.query("club", "DROP TABLE floor_people")?;
        Ok(sample.wall_ms)
    }

    /// Both tables read on the server, every column hashed: its wall time, ms.
    fn server_scan(&self, work: &Path) -> Result<f64> {
        let mut total = 0.0;
        for (database, table) in [("federation", "members"), ("club", "people")] {
            let statement = format!("SELECT count(*), sum(hashtext(t::text)) FROM {table} t");
            total += self.psql.measured(&self.bench, database, &[statement], work)?.wall_ms;
        }
        Ok(total)
    }

    /// The service part: `links` links with their first sync due, brought there by 1 and by
    /// several `fieldsync serve` processes sharing a PostgreSQL state store.
    fn serve(&self) -> Result<()> {
        let settings = self.settings;
        let (links, per_link) = (settings.links, settings.link_members);
        let data = self.dir.join(format!("links-{links}x{per_link}"));
        let started = Instant::now();
        let names: Vec<String> = (0..links).map(|link| format!("{link:03}")).collect();
        self.load_pairs("serve", &names, per_link, &data)?;
        eprintln!(
            "{links} links of {per_link} members loaded with COPY in {:.1} s",
            started.elapsed().as_secs_f64()
        );

        let mut config = format!(
            "# fieldsync-bench postgres: {links} links, each a federation table and a club table.\nstate = \"{}?schema=fieldsync\"\n\n",
            self.url("serve_state")
        );
        for link in 0..links {
            config.push_str(&pair_config(
                &format!("members_{link:03}"),
                (&format!("federation_{link:03}"), &self.url("serve_left"), &format!("members_{link:03}")),
                (&format!("club_{link:03}"), &self.url("serve_right"), &format!("people_{link:03}")),
                Some("1h"),
            ));
            config.push('\n');
        }
        let _ = write!(
            config,
            "[server]\nlisten = \"127.0.0.1:0\"\nmax_concurrent_runs = {}\n",
            settings.max_concurrent_runs
        );

        let mut results = Vec::new();
        for &workers in &settings.workers {
            results.push(self.serve_with(workers, &config)?);
        }
        print_serve(settings, &results);
        Ok(())
    }

    fn serve_with(&self, workers: usize, config: &str) -> Result<Served> {
        let links = self.settings.links;
        let work =
            self.fresh_run(["serve_left", "serve_right", "serve_state"], &format!("serve-{workers}"))?;
        std::fs::write(work.join("fieldsync.toml"), config)?;
        // The state store's schema made and migrated before the clock starts.
        let status = Command::new(&self.fieldsync)
            .current_dir(&work)
            .args(["status", "--json"])
            .stdout(Stdio::null())
            .status()?;
        ensure!(status.success(), "fieldsync status failed: {status}");
        self.psql.query("postgres", "CHECKPOINT")?;

        let load = self.settings.quiet.wait()?;
        let meter = CpuMeter::start()?;
        let started = Instant::now();
        let mut processes = Vec::new();
        for worker in 0..workers {
            let log = format!("serve-{worker}.log");
            processes.push(Serving::spawn(&self.fieldsync, &work, &[], &log, Stdio::null())?);
        }
        let count = "SELECT count(DISTINCT link) FILTER (WHERE status = 'done') || ' ' || count(*) \
                     || ' ' || count(*) FILTER (WHERE status NOT IN ('done', 'running')) FROM fieldsync.runs";
        let (runs, unfinished) = loop {
            let counted = self.psql.query("serve_state", count)?;
            let numbers: Vec<u64> = counted.split(' ').map(str::parse).collect::<Result<_, _>>()?;
            if numbers[0] as usize >= links {
                break (numbers[1], numbers[2]);
            }
            for service in &mut processes {
                if let Some(status) = service.child.try_wait()? {
                    bail!("a fieldsync serve process ended early: {status}; see {}", work.display());
                }
            }
            if started.elapsed() > SERVE_PATIENCE {
                let activity = self.psql.query(
                    "postgres",
                    "SELECT state || ': ' || left(query, 200) FROM pg_stat_activity WHERE datname LIKE 'serve%'",
                )?;
                bail!(
                    "{counted} (links done, runs, runs not done) after {SERVE_PATIENCE:?}; the server is doing:\n{activity}"
                );
            }
            std::thread::sleep(POLL);
        };
        let wall = started.elapsed();
        let busy = meter.cores()?;
        let runs_at_end = self.runs_by_kind()?;
        let mut cpu = 0.0;
        let mut peak_kib = Vec::new();
        for service in &processes {
            let (cpu_ms, hwm) = process_figures(service.child.id())?;
            cpu += cpu_ms;
            peak_kib.push(hwm);
        }
        for service in &mut processes {
            service.stop();
        }
        let runs_after_stop = self.runs_by_kind()?;
        // A link whose schedule's one slot ran twice: more than one run that read both sides.
        let repeated: u64 = self
            .psql
            .query(
                "serve_state",
                "SELECT count(*) FROM (SELECT link FROM fieldsync.runs \
                 WHERE mode NOT IN ('deliver', 'targeted') AND status IN ('done', 'partial', 'guarded') \
                 GROUP BY link HAVING count(*) > 1) twice",
            )?
            .parse()?;
        let expected = links as u64 * self.settings.link_members;
        let mut sum = String::from("SELECT 0");
        for link in 0..links {
            let _ = write!(sum, " + (SELECT count(*) FROM people_{link:03})");
        }
        let held: u64 = self.psql.query("serve_right", &sum)?.parse()?;
        ensure!(
            held == expected,
            "the club tables hold {held} members after the first syncs, not {expected}"
        );
        eprintln!(
            "{workers} serve process(es): {links} first syncs in {:.1} s ({runs} runs, {unfinished} not done)",
            wall.as_secs_f64()
        );
        eprintln!(
            "runs by mode and status: {runs_at_end} at the last first sync; {runs_after_stop} once stopped"
        );
        Ok(Served {
            workers,
            wall,
            runs,
            unfinished,
            runs_at_end,
            runs_after_stop,
            repeated,
            busy,
            cpu_ms: cpu,
            peak_kib,
            load,
        })
    }

    /// The state store's runs counted by mode (`full`, `incremental`, `deliver` for an outbox
    /// retry, `targeted`) and status: `300 full done, 2 deliver running`. In this scenario
    /// nothing asks for a run and no webhook comes, so a `full` or `incremental` run is a
    /// scheduled slot's (or a probe's in its place), a `deliver` run an outbox retry's.
    fn runs_by_kind(&self) -> Result<String> {
        let rows = self.psql.query(
            "serve_state",
            "SELECT count(*) || ' ' || mode || ' ' || status FROM fieldsync.runs \
             GROUP BY mode, status ORDER BY count(*) DESC, mode, status",
        )?;
        Ok(rows.lines().collect::<Vec<_>>().join(", "))
    }
}

/// One measurement of the service part.
struct Served {
    workers: usize,
    wall: Duration,
    /// Rows of `runs`, and of them those that ended other than `done` (a run still going on
    /// counts in `runs` only).
    runs: u64,
    unfinished: u64,
    /// The runs by mode and status when every link had its first sync (`runs_by_kind`)…
    runs_at_end: String,
    /// …and once the processes stopped (a run going on then ends `cancelled`).
    runs_after_stop: String,
    /// Links with more than one run that read both sides: a slot run twice.
    repeated: u64,
    busy: f64,
    /// CPU time of the `fieldsync serve` processes, ms.
    cpu_ms: f64,
    /// Peak resident memory of each process, KiB.
    peak_kib: Vec<u64>,
    load: f64,
}

impl Measured {
    fn new(state: &str, scenario: &'static str, changes: u64, floor_name: &'static str) -> Self {
        Measured {
            state: state.to_string(),
            scenario,
            changes,
            engine: Vec::new(),
            busy: Vec::new(),
            load: Vec::new(),
            writes: 0,
            expected_writes: 0,
            floor: Vec::new(),
            floor_name,
        }
    }

    /// Keeps a run's figures, after checking that it wrote what it had to.
    fn record(&mut self, sample: Sample, busy: f64, load: f64, writes: u64, expected: u64) {
        self.engine.push(sample);
        self.busy.push(busy);
        self.load.push(load);
        self.writes = writes;
        self.expected_writes = expected;
        if writes != expected {
            eprintln!("WRONG: {} {} wrote {writes}, not {expected}", self.state, self.scenario);
        }
    }
}

/// `[connectors.LEFT]`, `[connectors.RIGHT]` and `[links.LINK]` (with the member fields) for a
/// federation table and a club table, each given as its connector's name, its database's URL
/// and its table; `every` puts the link on a schedule.
fn pair_config(
    link: &str,
    left: (&str, &str, &str),
    right: (&str, &str, &str),
    every: Option<&str>,
) -> String {
    let (left_name, left_url, left_table) = left;
    let (right_name, right_url, right_table) = right;
    let fields = member_fields_toml(link, &MEMBER_FIELDS);
    let every = every.map_or(String::new(), |every| format!("every = \"{every}\"\n"));
    format!(
        "[connectors.{left_name}]\nkind = \"postgres\"\nurl = \"{left_url}\"\ntable = \"{left_table}\"\nkey = \"ext_id\"\nmodified = \"updated_at\"\n\n\
         [connectors.{right_name}]\nkind = \"postgres\"\nurl = \"{right_url}\"\ntable = \"{right_table}\"\nkey = \"id\"\nmodified = \"modified\"\n\n\
         {}{}{every}{fields}",
        link_toml(link, left_name, right_name, ("ext_id", "federation_id"), left_name),
        generate::POLICIES,
    )
}

/// Writes `left.tsv` (the federation's spelling) and `right.tsv` (the club's) of `count`
/// members to `data`, in COPY's text format, unless they are there.
fn write_copy_files(data: &Path, count: u64, seed: u64) -> Result<()> {
    let done = data.join(".complete");
    if done.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(data)?;
    let started = Instant::now();
    let mut left = std::io::BufWriter::new(std::fs::File::create(data.join("left.tsv"))?);
    let mut right = std::io::BufWriter::new(std::fs::File::create(data.join("right.tsv"))?);
    let mut line = String::new();
    for index in 0..count {
        let member = Member::generate(seed, index);
        let at = generate::base_time(index, count);
        line.clear();
        left_line(&mut line, &member, at);
        std::io::Write::write_all(&mut left, line.as_bytes())?;
        line.clear();
        right_line(&mut line, &member, at);
        std::io::Write::write_all(&mut right, line.as_bytes())?;
    }
    std::io::Write::flush(&mut left)?;
    std::io::Write::flush(&mut right)?;
    std::fs::write(done, "")?;
    eprintln!("{count} members generated in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The COPY file of one link of the service part: `count` members drawn from `seed`.
fn write_link_file(file: &Path, count: u64, seed: u64) -> Result<()> {
    let mut out = String::new();
    for index in 0..count {
        left_line(&mut out, &Member::generate(seed, index), generate::base_time(index, count));
    }
    std::fs::write(file, out)?;
    Ok(())
}

/// A member as the federation spells it, a line of COPY's text format (`LEFT_COLUMNS`).
fn left_line(line: &mut String, member: &Member, at: jiff::Timestamp) {
    let (area, number) = member.phone;
    let phone = format!("0{} {number}", AREA_CODES[area]);
    copy_line(line, member, &member.left_email(), &phone, &format!("06-{}", member.mobile), at);
}

/// A member as the club spells it, a line of COPY's text format (`RIGHT_COLUMNS`).
fn right_line(line: &mut String, member: &Member, at: jiff::Timestamp) {
    let (area, number) = member.phone;
    let phone = format!("+31{}{number}", AREA_CODES[area]);
    copy_line(line, member, &member.email, &phone, &format!("+316{}", member.mobile), at);
}

/// A member as a line of COPY's text format, in the columns both sides have in the same
/// order, with the side's own spelling of `email`, `phone` and `mobile`.
fn copy_line(
    line: &mut String,
    member: &Member,
    email: &str,
    phone: &str,
    mobile: &str,
    at: jiff::Timestamp,
) {
    let (year, month, day) = member.birth;
    let _ = writeln!(
        line,
        "{}\t{}\t{}\t{}\t{phone}\t{mobile}\t{year:04}-{month:02}-{day:02}\t{}\t{at}",
        copy_text(&member.ext_id),
        copy_text(&member.first_name),
        copy_text(&member.last_name),
        copy_text(email),
        if member.active { 't' } else { 'f' },
    );
}

/// `text` escaped for COPY's text format.
fn copy_text(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\t', "\\t").replace('\n', "\\n").replace('\r', "\\r")
}

/// `text` as an SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// One delta: SQL for each side and the writes fieldsync must make for it. Of `per_side`
/// members changed on each side, a tenth are the same members renamed differently on both
/// (conflicts: last-write-wins, within the grace, so the federation wins: one write each), a
/// hundredth are new members (a create each on the other side), and the rest are each side's
/// own renames and new e-mail addresses (a write each on the other side).
struct Edits {
    left: String,
    right: String,
    expected_writes: u64,
}

impl Edits {
    fn new(members: u64, seed: u64, per_side: u64, run: usize) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed ^ (run as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
        let conflicts = per_side / 10;
        let creates = per_side / 100;
        let own = per_side - conflicts - creates;
        let wanted = usize::try_from((conflicts + 2 * own).min(members)).unwrap_or(usize::MAX);
        let mut picked = std::collections::BTreeSet::new();
        let mut order = Vec::with_capacity(wanted);
        while order.len() < wanted {
            let index = rng.u64(..members);
            if picked.insert(index) {
                order.push(index);
            }
        }
        let mut order = order.into_iter();
        let shared: Vec<u64> = order.by_ref().take(conflicts as usize).collect();
        let mut sides = [String::from("BEGIN;\n"), String::from("BEGIN;\n")];
        for (side, sql) in sides.iter_mut().enumerate() {
            let (table, key, family, mail) = if side == 0 {
                ("members", "ext_id", "last_name", "email")
            } else {
                ("people", "federation_id", "family", "mail")
            };
            for &index in &shared {
                let member = Member::generate(seed, index);
                let name =
                    format!("{} {}{run}", member.last_name, if side == 0 { "Links" } else { "Rechts" });
                let _ = writeln!(
                    sql,
                    "UPDATE {table} SET {family} = {} WHERE {key} = {};",
                    literal(&name),
                    literal(&member.ext_id)
                );
            }
            for (n, index) in order.by_ref().take(own as usize).enumerate() {
                let member = Member::generate(seed, index);
                let (column, value) = if n % 2 == 0 {
                    (family, format!("{}-{}", member.last_name, rng.u32(..1000)))
                } else {
                    (mail, format!("r{run}.{}", member.email))
                };
                let _ = writeln!(
                    sql,
                    "UPDATE {table} SET {column} = {} WHERE {key} = {};",
                    literal(&value),
                    literal(&member.ext_id)
                );
            }
            let columns = if side == 0 { LEFT_COLUMNS } else { RIGHT_COLUMNS };
            let columns = columns.rsplit_once(", ").map_or(columns, |(head, _)| head);
            for n in 0..creates {
                let index = members + (run as u64 * 2 + side as u64) * creates + n;
                let member = Member::generate(seed, index);
                let mut line = String::new();
                if side == 0 {
                    left_line(&mut line, &member, jiff::Timestamp::UNIX_EPOCH);
                } else {
                    right_line(&mut line, &member, jiff::Timestamp::UNIX_EPOCH);
                }
                let values: Vec<String> = line.trim_end().split('\t').take(8).map(literal).collect();
                let _ = writeln!(sql, "INSERT INTO {table} ({columns}) VALUES ({});", values.join(", "));
            }
            sql.push_str("COMMIT;\n");
        }
        let [left, right] = sides;
        Edits { left, right, expected_writes: conflicts + 2 * own + 2 * creates }
    }
}

/// `psql` of the newest installed PostgreSQL, talking to the test server.
struct Psql {
    bin: PathBuf,
    port: u16,
}

impl Psql {
    fn new(server: &PostgresServer) -> Result<Self> {
        let newest = std::fs::read_dir("/usr/lib/postgresql")?
            .filter_map(Result::ok)
            .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
            .filter(|version| Path::new(&format!("/usr/lib/postgresql/{version}/bin/psql")).is_file())
            .max()
            .context("no psql in /usr/lib/postgresql/*/bin")?;
        Ok(Psql { bin: PathBuf::from(format!("/usr/lib/postgresql/{newest}/bin/psql")), port: server.port() })
    }

    fn args(&self, database: &str) -> Vec<String> {
        let mut args: Vec<String> = [
            "--no-psqlrc",
            "--quiet",
            "--no-align",
            "--tuples-only",
            "-v",
            "ON_ERROR_STOP=1",
            "--host",
            "127.0.0.1",
        ]
        .map(String::from)
        .into();
        args.extend(["--port".into(), self.port.to_string(), "--username".into(), SUPERUSER.into()]);
        args.extend(["--dbname".into(), database.into()]);
        args
    }

    /// Runs `psql` with `extra` arguments in `database`: what it printed.
    fn run(&self, database: &str, extra: &[String]) -> Result<String> {
        let output = Command::new(&self.bin)
            .args(self.args(database))
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .context("running psql")?;
        if !output.status.success() {
            bail!("psql in {database} failed: {}", String::from_utf8_lossy(&output.stderr).trim_end());
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    /// One SQL text (one or more statements) in `database`.
    fn query(&self, database: &str, sql: &str) -> Result<String> {
        self.run(database, &["--command".into(), sql.into()])
    }

    /// Commands (SQL, or a `\copy` each), one `--command` each, in one `psql`.
    fn commands(&self, database: &str, commands: &[String]) -> Result<String> {
        let args: Vec<String> =
            commands.iter().flat_map(|command| ["--command".into(), command.clone()]).collect();
        self.run(database, &args)
    }

    /// A script written to `file` first (it may be long), run in `database`.
    fn script(&self, database: &str, script: &str, file: &Path) -> Result<String> {
        std::fs::write(file, script)?;
        self.run(database, &["--file".into(), file.display().to_string()])
    }

    /// `commands` in one `psql` under `fieldsync-bench measure`.
    fn measured(&self, bench: &Path, database: &str, commands: &[String], work: &Path) -> Result<Sample> {
        let mut args = self.args(database);
        args.extend(commands.iter().flat_map(|command| ["--command".into(), command.clone()]));
        Ok(measured(bench, &self.bin, &args, work)?.0)
    }
}

/// The 1-minute load average.
/// When a benchmark measures: on a quiet machine, waiting for one for a while at most.
#[derive(Debug, clap::Args)]
pub struct Quiet {
    /// Before each measurement, wait until the 1-minute load average is below this…
    #[arg(long, default_value_t = 0.8)]
    pub max_load: f64,
    /// …for at most this many seconds; then measure anyway and say so.
    #[arg(long, default_value_t = 1_200)]
    pub patience: u64,
}

impl Quiet {
    /// Waits until the 1-minute load is below `max_load`, at most `patience` seconds, after
    /// which it measures under load and says so; returns the load it measures at.
    pub(crate) fn wait(&self) -> Result<f64> {
        let (max_load, patience) = (self.max_load, self.patience);
        let started = Instant::now();
        loop {
            let load = load_average()?;
            if load < max_load {
                return Ok(load);
            }
            if started.elapsed() >= Duration::from_secs(patience) {
                eprintln!("the load is still {load:.2} after {patience} s: measuring under load");
                return Ok(load);
            }
            eprintln!("load {load:.2} ≥ {max_load}: waiting 30 s");
            std::thread::sleep(Duration::from_secs(30));
        }
    }
}

fn load_average() -> Result<f64> {
    let text = std::fs::read_to_string("/proc/loadavg")?;
    Ok(text.split_whitespace().next().context("an empty /proc/loadavg")?.parse()?)
}

/// How busy the whole machine's CPUs were between `start` and `cores`, from `/proc/stat`.
pub(crate) struct CpuMeter {
    busy: u64,
    total: u64,
}

impl CpuMeter {
    fn read() -> Result<(u64, u64)> {
        let text = std::fs::read_to_string("/proc/stat")?;
        let line = text.lines().next().context("an empty /proc/stat")?;
        // user nice system idle iowait irq softirq steal (guest time is inside user).
        let ticks: Vec<u64> =
            line.split_whitespace().skip(1).take(8).map(str::parse).collect::<Result<_, _>>()?;
        let total: u64 = ticks.iter().sum();
        Ok((total - ticks[3] - ticks[4], total))
    }

    pub(crate) fn start() -> Result<Self> {
        let (busy, total) = Self::read()?;
        Ok(CpuMeter { busy, total })
    }

    /// Cores busy on average since the start.
    pub(crate) fn cores(&self) -> Result<f64> {
        let (busy, total) = Self::read()?;
        let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
        let elapsed = (total - self.total).max(1) as f64;
        Ok((busy - self.busy) as f64 / elapsed * cores)
    }
}

/// Peak resident memories in KiB, as a table cell: whole megabytes, one a process.
fn megabytes(peaks_kib: &[u64]) -> String {
    let peaks: Vec<String> = peaks_kib.iter().map(|kib| format!("{:.0} MB", *kib as f64 / 1024.0)).collect();
    peaks.join(", ")
}

/// A process's CPU time (user and system, ms) and peak resident memory (KiB) from `/proc`.
pub(crate) fn process_figures(pid: u32) -> Result<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command's parenthesis: state is the first, utime the 12th.
    let after = stat.rsplit_once(')').context("a malformed /proc/PID/stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Linux counts in USER_HZ, 100 a second on every architecture fieldsync runs on.
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hwm = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or(0);
    Ok((ticks as f64 * 10.0, hwm))
}

fn print_sync(members: u64, rows: &[Measured], floors: &[Floor]) {
    println!();
    println!(
        "| state store | scenario | members | changes/side | wall (min–max) | fieldsync CPU | machine busy (cores) | peak RSS | writes (expected) | floor | ratio | load at start |"
    );
    println!("|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let walls: Vec<f64> = row.engine.iter().map(|sample| sample.wall_ms).collect();
        let (wall, low, high) = spread(&walls);
        let (cpu, _, _) = spread(&row.engine.iter().map(|sample| sample.cpu_ms).collect::<Vec<_>>());
        let (busy, _, _) = spread(&row.busy);
        let rss = row.engine.iter().map(|sample| sample.rss_kib).max().unwrap_or(0);
        let (floor, ratio) = if row.floor.is_empty() {
            ("—".to_string(), "—".to_string())
        } else {
            let (floor, _, _) = spread(&row.floor);
            (format!("{} ({})", seconds(floor), row.floor_name), format!("{:.1}×", wall / floor))
        };
        let loads: Vec<String> = row.load.iter().map(|load| format!("{load:.2}")).collect();
        println!(
            "| {} | {} | {members} | {} | {} ({}–{}) | {} | {busy:.2} | {:.0} MB | {} ({}) | {floor} | {ratio} | {} |",
            row.state,
            row.scenario,
            row.changes,
            seconds(wall),
            seconds(low),
            seconds(high),
            seconds(cpu),
            rss as f64 / 1024.0,
            row.writes,
            row.expected_writes,
            loads.join(", "),
        );
    }
    println!();
    println!("| measured with | floor | wall (min–max) |");
    println!("|---|---|---|");
    for floor in floors {
        let (wall, low, high) = spread(&floor.walls);
        println!(
            "| {} | {} | {} ({}–{}) |",
            floor.state,
            floor.name,
            seconds(wall),
            seconds(low),
            seconds(high)
        );
    }
}

fn print_serve(settings: &PostgresSettings, results: &[Served]) {
    println!();
    println!(
        "| serve processes | links × members | max_concurrent_runs | wall to every first sync | runs (not done) | speed-up | machine busy (cores) | fieldsync CPU | peak RSS per process | load at start |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---|---:|");
    let first = results.first().map_or(1.0, |served| served.wall.as_secs_f64());
    for served in results {
        println!(
            "| {} | {} × {} | {} | {} | {} ({}) | {:.2}× | {:.2} | {} | {} | {:.2} |",
            served.workers,
            settings.links,
            settings.link_members,
            settings.max_concurrent_runs,
            seconds(served.wall.as_secs_f64() * 1000.0),
            served.runs,
            served.unfinished,
            first / served.wall.as_secs_f64(),
            served.busy,
            seconds(served.cpu_ms),
            megabytes(&served.peak_kib),
            served.load,
        );
    }
    // What the runs were: a `full` run is a slot's, a `deliver` run an outbox retry's.
    println!();
    println!(
        "| serve processes | runs by mode and status, at the last first sync | the same once stopped | links with a slot run twice |"
    );
    println!("|---:|---|---|---:|");
    for served in results {
        println!(
            "| {} | {} | {} | {} |",
            served.workers, served.runs_at_end, served.runs_after_stop, served.repeated
        );
    }
}
