//! The scenarios: for each size, a generated pair of tables, each scenario run several times
//! from fresh copies of its files, every run of the engine next to a run of its floor.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

use crate::Sample;
use crate::floor::Op;
use crate::generate::{self, Mix};

/// The default generator seed.
pub const SEED: u64 = 20_261_122;

/// How long before an edit the floor's incremental reads start (the connectors' overlap).
const OVERLAP_MS: i64 = 60_000;

/// What to run.
#[derive(Debug, clap::Args)]
pub struct Settings {
    /// Member counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [10_000, 100_000, 1_000_000])]
    pub sizes: Vec<u64>,
    /// Changes per side of the delta scenarios, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1_000, 10_000])]
    pub changes: Vec<u64>,
    /// Runs of each scenario (the median is reported, with the minimum and maximum).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// The generator's seed.
    #[arg(long, default_value_t = SEED)]
    pub seed: u64,
    /// Where the generated files go (several GB at a million members).
    #[arg(long, default_value = "target/bench")]
    pub dir: PathBuf,
    /// The results, as JSON.
    #[arg(long, default_value = "bench/results.json")]
    pub out: PathBuf,
    /// The `fieldsync` binary to measure (default: next to this program).
    #[arg(long)]
    pub fieldsync: Option<PathBuf>,
    /// Only the scenarios whose name contains this.
    #[arg(long)]
    pub only: Option<String>,
}

/// The edit mix of a delta: 10 % of the changes conflicting, 1 % creates, 1 % deletes.
pub fn mix(per_side: u64) -> Mix {
    Mix { per_side, conflicting: 0.10, creates: 0.01, deletes: 0.01 }
}

/// One scenario at one size.
#[derive(Debug, Serialize)]
struct Outcome {
    scenario: String,
    members: u64,
    changes_per_side: u64,
    engine: Vec<Sample>,
    floor: Vec<Sample>,
    /// Records the engine read, both sides.
    records_read: u64,
    /// Writes the engine issued and verified.
    writes: u64,
}

#[derive(Debug, Serialize)]
struct Results {
    machine: BTreeMap<&'static str, String>,
    seed: u64,
    runs: usize,
    outcomes: Vec<Outcome>,
}

struct Scenario {
    name: String,
    /// Which prepared files it starts from.
    start: Start,
    changes: u64,
    full: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Start {
    /// The left table full, the right one empty, no state.
    RightEmpty,
    /// Both tables equal, no state.
    Equal,
    /// Both tables equal and synced (the state of a first run).
    Synced,
    /// The state of a first run that created every member on the empty right side.
    Created,
}

fn scenarios(settings: &Settings, members: u64) -> Vec<Scenario> {
    let plain = |name: &str, start, full| Scenario { name: name.into(), start, changes: 0, full };
    let mut list = vec![
        plain("initial_create", Start::RightEmpty, false),
        plain("initial_equal", Start::Equal, false),
        plain("nochange_full", Start::Synced, true),
        plain("nochange_incremental", Start::Synced, false),
        // The first full run after a first sync that created every record: it should cost no
        // more than a steady nochange_full.
        plain("full_after_create", Start::Created, true),
    ];
    for &changes in settings.changes.iter().filter(|&&changes| changes * 4 <= members) {
        for full in [false, true] {
            let name = if full { "delta_full" } else { "delta_incremental" };
            list.push(Scenario { name: name.into(), start: Start::Synced, changes, full });
        }
    }
    list.retain(|scenario| settings.only.as_ref().is_none_or(|only| scenario.name.contains(only.as_str())));
    list
}

/// Runs every scenario at every size and writes the results.
pub fn run_all(settings: &Settings) -> Result<()> {
    let bench = std::env::current_exe()?;
    let fieldsync = crate::fieldsync_binary(settings.fieldsync.as_deref())?;
    std::fs::create_dir_all(&settings.dir)?;
    // Measured programs run inside the scenario's directory: every path they get is absolute.
    let dir = std::fs::canonicalize(&settings.dir)?;
    let mut outcomes = Vec::new();
    for &members in &settings.sizes {
        let root = dir.join(members.to_string());
        let base = root.join("base");
        prepare(&base, members, settings.seed)?;
        // The synced and created states are made again by the binary being measured.
        let synced = root.join("synced");
        let created = root.join("created");
        for state in [&synced, &created] {
            if state.exists() {
                std::fs::remove_dir_all(state)?;
            }
        }
        let work = root.join("work");
        for scenario in scenarios(settings, members) {
            let mut outcome = Outcome {
                scenario: scenario.name.clone(),
                members,
                changes_per_side: scenario.changes,
                engine: Vec::new(),
                floor: Vec::new(),
                records_read: 0,
                writes: 0,
            };
            if scenario.start == Start::Synced && !synced.join("state.db").exists() {
                set_up(&base, &work, Start::Equal)?;
                run_fieldsync(&bench, &fieldsync, &work, false)?;
                copy_dir(&work, &synced)?;
            }
            if scenario.start == Start::Created && !created.join("state.db").exists() {
                set_up(&base, &work, Start::RightEmpty)?;
                run_fieldsync(&bench, &fieldsync, &work, false)?;
                copy_dir(&work, &created)?;
            }
            for _ in 0..settings.runs {
                // The engine.
                let from = match scenario.start {
                    Start::Synced => &synced,
                    Start::Created => &created,
                    Start::RightEmpty | Start::Equal => &base,
                };
                set_up(from, &work, scenario.start)?;
                let edited_at = edit(&work, members, settings.seed, scenario.changes)?;
                let (sample, report) = run_fieldsync(&bench, &fieldsync, &work, scenario.full)?;
                outcome.engine.push(sample);
                outcome.records_read = report.0;
                outcome.writes = report.1;
                eprintln!(
                    "{members:>8} {:<22} {:>6} engine {:>10.1} ms {:>8} KiB, {} writes",
                    scenario.name, scenario.changes, sample.wall_ms, sample.rss_kib, report.1
                );
                // Its floor, on the same files.
                set_up(from, &work, scenario.start)?;
                let edited_at = edit(&work, members, settings.seed, scenario.changes)?.or(edited_at);
                let since = edited_at.map_or_else(
                    || generate::base_time(members, members).as_millisecond(),
                    |at| at.as_millisecond(),
                ) - OVERLAP_MS;
                let ops = Op::for_scenario(&scenario.name, scenario.changes, since)?;
                let mut args = vec!["floor".to_string(), "--dir".into(), work.display().to_string()];
                args.extend(ops.iter().flat_map(Op::to_args));
                let (sample, _) = measured(&bench, &bench, &args, &work)?;
                outcome.floor.push(sample);
                eprintln!(
                    "{members:>8} {:<22} {:>6} floor  {:>10.1} ms {:>8} KiB",
                    scenario.name, scenario.changes, sample.wall_ms, sample.rss_kib
                );
            }
            outcomes.push(outcome);
        }
    }
    let results = Results { machine: machine(), seed: settings.seed, runs: settings.runs, outcomes };
    if let Some(parent) = settings.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&settings.out, serde_json::to_string_pretty(&results)? + "\n")?;
    print!("{}", table(&results.outcomes));
    eprintln!("results written to {}", settings.out.display());
    Ok(())
}

fn prepare(base: &Path, members: u64, seed: u64) -> Result<()> {
    let done = base.join(".complete");
    if done.exists() {
        return Ok(());
    }
    if base.exists() {
        std::fs::remove_dir_all(base)?;
    }
    std::fs::create_dir_all(base)?;
    eprintln!("generating {members} members in {}", base.display());
    generate::write_members(&base.join("left.db"), &base.join("right.db"), members, seed, false)?;
    generate::write_members(&base.join("left-only.db"), &base.join("right-empty.db"), members, seed, true)?;
    std::fs::remove_file(base.join("left-only.db"))?;
    std::fs::write(done, "")?;
    Ok(())
}

fn set_up(from: &Path, work: &Path, start: Start) -> Result<()> {
    if work.exists() {
        std::fs::remove_dir_all(work)?;
    }
    std::fs::create_dir_all(work)?;
    match start {
        Start::RightEmpty => {
            std::fs::copy(from.join("left.db"), work.join("left.db"))?;
            std::fs::copy(from.join("right-empty.db"), work.join("right.db"))?;
        }
        Start::Equal => {
            std::fs::copy(from.join("left.db"), work.join("left.db"))?;
            std::fs::copy(from.join("right.db"), work.join("right.db"))?;
        }
        Start::Synced | Start::Created => copy_dir(from, work)?,
    }
    std::fs::write(work.join("fieldsync.toml"), generate::config())?;
    settle(work)
}

/// Writes every file of `work` through to the disk. Freshly copied files are dirty in the
/// page cache; the first program to sync one (SQLite does, at a checkpoint) would otherwise
/// pay for writing all of it, and measure the copy rather than itself.
fn settle(work: &Path) -> Result<()> {
    for entry in std::fs::read_dir(work)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::File::open(entry.path())?.sync_all()?;
        }
    }
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// Applies the delta's edits, if any; returns when they were stamped.
fn edit(work: &Path, members: u64, seed: u64, changes: u64) -> Result<Option<jiff::Timestamp>> {
    if changes == 0 {
        return Ok(None);
    }
    let now = jiff::Timestamp::now();
    generate::apply_mix(&work.join("left.db"), &work.join("right.db"), members, seed, mix(changes), now)?;
    settle(work)?;
    Ok(Some(now))
}

/// Runs `fieldsync run` in `work`; returns its figures and (records read, writes done).
pub(crate) fn run_fieldsync(
    bench: &Path,
    fieldsync: &Path,
    work: &Path,
    full: bool,
) -> Result<(Sample, (u64, u64))> {
    let mut args = vec!["run".to_string(), "--json".into(), "-c".into(), "fieldsync.toml".into()];
    if full {
        args.push("--full".into());
    }
    let (sample, stdout) = measured(bench, fieldsync, &args, work)?;
    let reports: serde_json::Value = serde_json::from_slice(&stdout)
        .with_context(|| format!("reading fieldsync's report: {}", String::from_utf8_lossy(&stdout)))?;
    let mut read = 0;
    let mut writes = 0;
    for report in reports.as_array().into_iter().flatten() {
        let stats = &report["stats"];
        read += stats["left"]["read"].as_u64().unwrap_or(0) + stats["right"]["read"].as_u64().unwrap_or(0);
        writes += stats["writes_done"].as_u64().unwrap_or(0);
        if report["status"] != "done" {
            bail!("fieldsync's run ended {}: {report}", report["status"]);
        }
    }
    Ok((sample, (read, writes)))
}

/// Runs `program` under `fieldsync-bench measure`; returns its figures and its output.
pub(crate) fn measured(
    bench: &Path,
    program: &Path,
    args: &[String],
    work: &Path,
) -> Result<(Sample, Vec<u8>)> {
    measured_logging(bench, program, args, work, None)
}

/// `measured`, with the program's standard error written to `log` when given (and named by a
/// failure) instead of kept for the failure's message.
pub(crate) fn measured_logging(
    bench: &Path,
    program: &Path,
    args: &[String],
    work: &Path,
    log: Option<&Path>,
) -> Result<(Sample, Vec<u8>)> {
    let figures = work.join(".measure.json");
    let mut command = Command::new(bench);
    command.arg("measure").arg("--out").arg(&figures).arg("--").arg(program).args(args).current_dir(work);
    if let Some(log) = log {
        command.stderr(std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?);
    }
    let output = command.output().context("starting fieldsync-bench measure")?;
    if !output.status.success() {
        let errors = match log {
            Some(log) => format!("; see {}", log.display()),
            None => String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        bail!(
            "{} {} failed: {}{errors}",
            program.display(),
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
        );
    }
    let sample = serde_json::from_slice(&std::fs::read(&figures)?)?;
    std::fs::remove_file(figures)?;
    Ok((sample, output.stdout))
}

pub(crate) fn machine() -> BTreeMap<&'static str, String> {
    let mut machine = BTreeMap::new();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo.lines().find_map(|line| line.strip_prefix("model name")).unwrap_or_default();
    machine.insert("cpu", model.trim_start_matches([' ', '\t', ':']).to_string());
    machine.insert(
        "cores",
        std::thread::available_parallelism().map(|cores| cores.to_string()).unwrap_or_default(),
    );
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo.lines().find_map(|line| line.strip_prefix("MemTotal:")).unwrap_or_default();
    machine.insert("memory", memory.trim().to_string());
    machine.insert("os", std::env::consts::OS.to_string());
    machine
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

pub(crate) fn spread(values: &[f64]) -> (f64, f64, f64) {
    let mut sorted = values.to_vec();
    let middle = median(&mut sorted);
    (middle, sorted.first().copied().unwrap_or(0.0), sorted.last().copied().unwrap_or(0.0))
}

pub(crate) fn seconds(ms: f64) -> String {
    if ms >= 10_000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else {
        format!("{ms:.0} ms")
    }
}

/// The results as a Markdown table: medians with the min–max of the runs.
fn table(outcomes: &[Outcome]) -> String {
    let mut out = String::from(
        "| scenario | members | changes/side | wall (min–max) | CPU | peak RSS | records/s | writes | floor | ratio |\n\
         |---|---:|---:|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for outcome in outcomes {
        let walls: Vec<f64> = outcome.engine.iter().map(|sample| sample.wall_ms).collect();
        let (wall, low, high) = spread(&walls);
        let (cpu, _, _) = spread(&outcome.engine.iter().map(|sample| sample.cpu_ms).collect::<Vec<_>>());
        let rss = outcome.engine.iter().map(|sample| sample.rss_kib).max().unwrap_or(0);
        let (floor, _, _) = spread(&outcome.floor.iter().map(|sample| sample.wall_ms).collect::<Vec<_>>());
        let rate = if wall > 0.0 { outcome.records_read as f64 / (wall / 1000.0) } else { 0.0 };
        out.push_str(&format!(
            "| {} | {} | {} | {} ({}–{}) | {} | {:.0} MB | {:.0} | {} | {} | {:.1}× |\n",
            outcome.scenario,
            outcome.members,
            outcome.changes_per_side,
            seconds(wall),
            seconds(low),
            seconds(high),
            seconds(cpu),
            rss as f64 / 1024.0,
            rate,
            outcome.writes,
            seconds(floor),
            if floor > 0.0 { wall / floor } else { 0.0 },
        ));
    }
    out
}
