//! `fieldsync-bench`: measures `fieldsync run` on generated member tables against the raw
//! SQLite floor, scenario by scenario, and writes the figures as JSON and a Markdown table.
//!
//! Every measured program (the engine and the floor alike) runs as its own child process
//! under `fieldsync-bench measure`, which reports that one process's wall time, CPU time and
//! peak resident memory from `getrusage`.

mod couchdb;
mod floor;
mod generate;
mod hooks;
mod postgres;
mod rest;
mod scenario;

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use nix::sys::resource::{UsageWho, getrusage};

#[derive(Debug, Parser)]
#[command(name = "fieldsync-bench", version, about = "Benchmarks fieldsync against the raw SQLite floor.")]
struct Cli {
    #[command(subcommand)]
    command: Option<Task>,
    #[command(flatten)]
    run: scenario::Settings,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Writes N generated members to `left.db` and `right.db` (and `fieldsync.toml`) in DIR.
    Generate {
        /// How many members.
        #[arg(long)]
        count: u64,
        /// Where to write.
        #[arg(long)]
        dir: PathBuf,
        /// The generator's seed.
        #[arg(long, default_value_t = scenario::SEED)]
        seed: u64,
        /// Leave the right table empty.
        #[arg(long)]
        right_empty: bool,
    },
    /// Applies an edit mix to a synced pair in DIR: changes per side, 10 % of them conflicting,
    /// 1 % creates and 1 % deletes.
    Edit {
        /// How many members the pair was generated with.
        #[arg(long)]
        count: u64,
        /// Records changed on each side.
        #[arg(long)]
        per_side: u64,
        /// Where the pair is.
        #[arg(long)]
        dir: PathBuf,
        /// The generator's seed.
        #[arg(long, default_value_t = scenario::SEED)]
        seed: u64,
    },
    /// Creates members on a real WordPress and a real Django REST Framework site, by
    /// `fieldsync run` and by a plain HTTP client sending the same requests, each on a fresh
    /// server, and prints the figures.
    Rest(rest::RestSettings),
    /// Measures how long a webhook takes to reach the other side through `fieldsync serve`
    /// between two SQLite member tables, at steady rates, and prints p50, p99 and the maximum.
    Hooks(hooks::HookSettings),
    /// Measures fieldsync between two PostgreSQL member tables (the first sync, a no-change
    /// full run, changes on both sides) against PostgreSQL's own COPY and a server-side scan,
    /// and `fieldsync serve` bringing many links to their first sync with one process and with
    /// several sharing a PostgreSQL state store; prints the figures.
    Postgres(postgres::PostgresSettings),
    /// Measures fieldsync syncing a SQLite table of members into a CouchDB database (a
    /// pouchdb-server it starts) against PouchDB replicating the same documents into the same
    /// server: the first sync, changed documents and a run with nothing changed.
    Couchdb(couchdb::CouchSettings),
    /// Runs a program and writes its wall time, CPU time and peak memory to FILE as JSON.
    #[command(hide = true)]
    Measure {
        /// Where the figures go.
        #[arg(long)]
        out: PathBuf,
        /// The program and its arguments.
        #[arg(last = true, required = true)]
        program: Vec<String>,
    },
    /// Runs raw SQLite operations in DIR (the floor).
    #[command(hide = true)]
    Floor {
        /// The scenario's files.
        #[arg(long)]
        dir: PathBuf,
        /// Operations, as written by the orchestrator.
        #[arg(trailing_var_arg = true)]
        ops: Vec<String>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fieldsync-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        None => scenario::run_all(&cli.run),
        Some(Task::Generate { count, dir, seed, right_empty }) => {
            std::fs::create_dir_all(&dir)?;
            generate::write_members(&dir.join("left.db"), &dir.join("right.db"), count, seed, right_empty)?;
            std::fs::write(dir.join("fieldsync.toml"), generate::config())?;
            Ok(())
        }
        Some(Task::Edit { count, per_side, dir, seed }) => {
            let changed = generate::apply_mix(
                &dir.join("left.db"),
                &dir.join("right.db"),
                count,
                seed,
                scenario::mix(per_side),
                jiff::Timestamp::now(),
            )?;
            println!("{changed} rows changed");
            Ok(())
        }
        Some(Task::Rest(settings)) => rest::run(&settings),
        Some(Task::Hooks(settings)) => hooks::run(&settings),
        Some(Task::Postgres(settings)) => postgres::run(&settings),
        Some(Task::Couchdb(settings)) => couchdb::run(&settings),
        Some(Task::Measure { out, program }) => measure(&out, &program),
        Some(Task::Floor { dir, ops }) => {
            for op in floor::Op::parse_all(&ops)? {
                op.run(&dir)?;
            }
            Ok(())
        }
    }
}

/// The `fieldsync` binary to measure: `given`, or the one next to this program; as an absolute
/// path, since measured programs run in the scenario's directory.
///
/// # Errors
///
/// When there is none there.
pub fn fieldsync_binary(given: Option<&std::path::Path>) -> Result<PathBuf> {
    let fieldsync = match given {
        Some(path) => path.to_path_buf(),
        None => std::env::current_exe()?.with_file_name("fieldsync"),
    };
    if !fieldsync.exists() {
        bail!(
            "{} not found: build it first with `cargo build --release -p fieldsync-cli`, or pass --fieldsync",
            fieldsync.display()
        );
    }
    Ok(std::fs::canonicalize(&fieldsync)?)
}

/// What one process cost.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    /// Wall-clock time, milliseconds.
    pub wall_ms: f64,
    /// User and system CPU time, milliseconds.
    pub cpu_ms: f64,
    /// Peak resident set size, KiB.
    pub rss_kib: u64,
}

fn measure(out: &std::path::Path, program: &[String]) -> Result<()> {
    let Some((name, args)) = program.split_first() else { bail!("no program to measure") };
    let started = Instant::now();
    let status = Command::new(name).args(args).status().with_context(|| format!("starting {name}"))?;
    let wall = started.elapsed();
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN)?;
    let cpu = usage.user_time() + usage.system_time();
    let cpu_ms = cpu.tv_sec() as f64 * 1000.0 + cpu.tv_usec() as f64 / 1000.0;
    let sample = Sample {
        wall_ms: wall.as_secs_f64() * 1000.0,
        cpu_ms,
        rss_kib: u64::try_from(usage.max_rss()).unwrap_or(0),
    };
    std::fs::write(out, serde_json::to_string(&sample)?)?;
    if !status.success() {
        bail!("{name} failed: {status}");
    }
    Ok(())
}
