//! `fieldsync-bench postgres --parts organisations`: one link for each of many organisations
//! (`for_each`), each a federation table and a club table of its own, run by several
//! `fieldsync serve` workers sharing a PostgreSQL state store under `max_concurrent_runs`. Two
//! windows: the first syncs of every organisation (every link due at once), and a nightly slot
//! compressed to minutes (`schedule` at one minute of the day, `spread` over a few minutes).
//! For each: every organisation ran exactly once, no two runs of one overlapped, no more runs
//! at once than allowed, and the makespan against the ideal of the total work shared by the
//! places; then the state store's size and each worker's peak memory.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};

use super::{Bench, POLL, megabytes, pair_config, process_figures};
use crate::hooks::Serving;
use crate::scenario::seconds;

/// How long a window may take before the benchmark gives up.
const PATIENCE: Duration = Duration::from_secs(60 * 60);

/// The spread of the nightly slot, in minutes.
const SPREAD_MINUTES: u64 = 3;

/// One window, measured from the runs the state store recorded.
struct Window {
    name: &'static str,
    /// Runs started in the window, and the organisations among them.
    runs: u64,
    organisations: u64,
    /// Organisations with more than one run in the window.
    twice: u64,
    /// Pairs of runs of one organisation that overlapped.
    overlapping: u64,
    /// The most runs going on at once (at any run's start).
    most_at_once: u64,
    /// From the window's start to the last run's end, and the sum of the runs' durations, s.
    makespan: f64,
    work: f64,
    /// Peak resident memory of each worker, KiB.
    peak_kib: Vec<u64>,
    load: f64,
}

impl Bench<'_> {
    /// The organisations part: loads the tables, then measures both windows.
    pub(super) fn organisations(&self) -> Result<()> {
        let settings = self.settings;
        let (count, per) = (settings.links, settings.link_members);
        let data = self.dir.join(format!("organisations-{count}x{per}"));
        let started = Instant::now();
        let ids: Vec<String> = (0..count).map(|number| format!("o{number:04}")).collect();
        let mut clubs = String::from("id,name\n");
        for (number, id) in ids.iter().enumerate() {
            let _ = writeln!(clubs, "{id},Club {number}");
        }
        self.load_pairs("orgs", &ids, per, &data)?;
        eprintln!(
            "{count} organisations of {per} members loaded with COPY in {:.1} s",
            started.elapsed().as_secs_f64()
        );

        let work = self.fresh_run(["orgs_left", "orgs_right", "orgs_state"], "organisations")?;
        std::fs::write(work.join("clubs.csv"), &clubs)?;
        let link = pair_config(
            "members",
            ("federation", &self.url("orgs_left"), "members_${org.id}"),
            ("club", &self.url("orgs_right"), "people_${org.id}"),
            None,
        );
        let config = |schedule: &str| {
            let link = link.replacen(
                "[links.members]\n",
                &format!("[links.members]\nfor_each = \"organisations\"\n{schedule}"),
                1,
            );
            format!(
                "state = \"{}?schema=fieldsync\"\n\n[organisations]\nfrom = \"clubs.csv\"\n\n{link}\n\
                 [server]\nlisten = \"127.0.0.1:0\"\nmax_concurrent_runs = {}\n",
                self.url("orgs_state"),
                settings.max_concurrent_runs,
            )
        };
        // The first window: every organisation's first sync is due at once.
        std::fs::write(work.join("fieldsync.toml"), config("every = \"24h\"\n"))?;
        let status = Command::new(&self.fieldsync).current_dir(&work).args(["status", "--json"]).output()?;
        ensure!(
            status.status.success(),
            "fieldsync status failed: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        self.psql.query("postgres", "CHECKPOINT")?;
        let load = settings.quiet.wait()?;
        let first_start = self.psql.query("orgs_state", "SELECT now()::text")?;
        let workers = self.start_workers(&work, "first")?;
        let first = self.window("first syncs", &first_start, None, workers, load)?;

        // The nightly window: one slot a day, three minutes from now, spread over a few minutes.
        let slot = self.psql.query(
            "orgs_state",
            "SELECT to_char(date_trunc('minute', now() AT TIME ZONE 'UTC') + interval '3 minutes', 'MI HH24') \
             || '|' || (date_trunc('minute', now()) + interval '3 minutes')::text",
        )?;
        let Some((cron, slot_start)) = slot.split_once('|') else { bail!("reading the slot: {slot}") };
        let schedule = format!("schedule = \"{cron} * * *\"\nspread = \"{SPREAD_MINUTES}m\"\n");
        std::fs::write(work.join("fieldsync.toml"), config(&schedule))?;
        let load = settings.quiet.wait()?;
        let workers = self.start_workers(&work, "nightly")?;
        let nightly = self.window("nightly slot", slot_start, Some(SPREAD_MINUTES), workers, load)?;

        let size = self.psql.query(
            "orgs_state",
            "SELECT pg_size_pretty(sum(pg_total_relation_size(c.oid))) || ' (' || \
             (SELECT count(*) FROM fieldsync.baselines) || ' baselines, ' || (SELECT count(*) FROM fieldsync.runs) \
             || ' runs, ' || (SELECT count(*) FROM fieldsync.audit) || ' audit rows)' \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'fieldsync' AND c.relkind = 'r'",
        )?;
        print_organisations(self, &[first, nightly], &size);
        Ok(())
    }

    /// Starts the first of `--workers` `fieldsync serve` processes in `work`.
    fn start_workers(&self, work: &Path, window: &str) -> Result<Vec<Serving>> {
        let workers = self.settings.workers.first().copied().unwrap_or(3);
        (0..workers)
            .map(|worker| {
                Serving::spawn(&self.fieldsync, work, &[], &format!("{window}-{worker}.log"), Stdio::null())
            })
            .collect()
    }

    /// Waits until every organisation has a run that started at or after `from` and ended
    /// (and, for a spread slot, until the spread is over and a little more, so that a slot
    /// run twice would be seen), stops the workers, and reads the window from the runs.
    fn window(
        &self,
        name: &'static str,
        from: &str,
        spread_minutes: Option<u64>,
        mut workers: Vec<Serving>,
        load: f64,
    ) -> Result<Window> {
        let count = self.settings.links;
        let ended = format!(
            "SELECT count(DISTINCT link) FROM fieldsync.runs WHERE started_at >= '{from}' AND status <> 'running'"
        );
        let started = Instant::now();
        loop {
            let done: usize = self.psql.query("orgs_state", &ended)?.parse()?;
            if done >= count {
                break;
            }
            for worker in &mut workers {
                if let Some(status) = worker.child.try_wait()? {
                    bail!("a fieldsync serve worker ended early: {status}");
                }
            }
            ensure!(
                started.elapsed() < PATIENCE,
                "{name}: {done} of {count} organisations ran in {PATIENCE:?}"
            );
            std::thread::sleep(POLL);
        }
        if let Some(minutes) = spread_minutes {
            let left = self.psql.query(
                "orgs_state",
                &format!(
                    "SELECT greatest(0, extract(epoch FROM ('{from}'::timestamptz + interval '{minutes} minutes' \
                     + interval '20 seconds' - now())))"
                ),
            )?;
            std::thread::sleep(Duration::from_secs_f64(left.parse::<f64>()?));
        }
        let peak_kib = workers
            .iter()
            .map(|worker| process_figures(worker.child.id()).map(|(_, kib)| kib))
            .collect::<Result<_>>()?;
        for worker in &mut workers {
            worker.stop();
        }
        let scope = format!("started_at >= '{from}' AND mode NOT IN ('deliver', 'targeted')");
        let numbers = self.psql.query(
            "orgs_state",
            &format!(
                "WITH w AS (SELECT id, link, started_at, coalesce(finished_at, now()) AS finished_at \
                            FROM fieldsync.runs WHERE {scope}) \
                 SELECT (SELECT count(*) FROM w) || ' ' || (SELECT count(DISTINCT link) FROM w) \
                 || ' ' || (SELECT count(*) FROM (SELECT link FROM w GROUP BY link HAVING count(*) > 1) t) \
                 || ' ' || (SELECT count(*) FROM w a JOIN w b ON a.link = b.link AND a.id < b.id \
                            AND a.started_at < b.finished_at AND b.started_at < a.finished_at) \
                 || ' ' || (SELECT coalesce(max((SELECT count(*) FROM w b \
                            WHERE b.started_at <= a.started_at AND a.started_at < b.finished_at)), 0) FROM w a) \
                 || ' ' || (SELECT extract(epoch FROM max(finished_at) - '{from}'::timestamptz) FROM w) \
                 || ' ' || (SELECT extract(epoch FROM sum(finished_at - started_at)) FROM w)"
            ),
        )?;
        let fields: Vec<&str> = numbers.split(' ').collect();
        ensure!(fields.len() == 7, "reading the window: {numbers}");
        let window = Window {
            name,
            runs: fields[0].parse()?,
            organisations: fields[1].parse()?,
            twice: fields[2].parse()?,
            overlapping: fields[3].parse()?,
            most_at_once: fields[4].parse()?,
            makespan: fields[5].parse()?,
            work: fields[6].parse()?,
            peak_kib,
            load,
        };
        eprintln!(
            "{name}: {} organisations, {} runs, makespan {:.1} s, work {:.1} s",
            window.organisations, window.runs, window.makespan, window.work
        );
        Ok(window)
    }
}

/// Prints the windows as a table, and the state store's size.
fn print_organisations(bench: &Bench<'_>, windows: &[Window], size: &str) {
    let settings = bench.settings;
    let places = settings.max_concurrent_runs as f64;
    println!();
    println!(
        "| window | organisations × members | workers | max_concurrent_runs | organisations run | runs | run twice | overlapping | most at once | makespan | total work / places | peak RSS per worker | load at start |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|");
    for window in windows {
        println!(
            "| {} | {} × {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} |",
            window.name,
            settings.links,
            settings.link_members,
            window.peak_kib.len(),
            settings.max_concurrent_runs,
            window.organisations,
            window.runs,
            window.twice,
            window.overlapping,
            window.most_at_once,
            seconds(window.makespan * 1000.0),
            seconds(window.work / places * 1000.0),
            megabytes(&window.peak_kib),
            window.load,
        );
    }
    println!();
    println!("State store after both windows: {size}");
}
