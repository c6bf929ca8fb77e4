//! The `fieldsync` command: parses arguments, runs the command through the app's `Workspace`
//! and maps its outcome to the documented exit codes (0 done, 1 some writes failed, 2
//! configuration or usage error, 3 stopped by the guard). Only this crate prints.

#[macro_use]
mod output;
mod commands;
mod demo;
mod progress;
mod render;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// A run of many records allocates and frees millions of small values (record fields, keys,
/// statements' parameters); mimalloc does that in about half the time of the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keep member records in step between two systems, field by field, in both directions.
#[derive(Debug, Parser)]
#[command(
    name = "fieldsync",
    version,
    about,
    long_about = None,
    after_help = "Exit codes: 0 done; 1 some writes failed (they stay in the outbox and are retried); \
                  2 configuration or usage error; 3 stopped by the guard (nothing was written); \
                  130 cancelled by Ctrl-C (the run stopped between two commits, recorded itself as \
                  cancelled, and the next run carries on).\n\
                  Logs go to standard error; set FIELDSYNC_LOG=info (or debug) to see more, and \
                  FIELDSYNC_LOG_FORMAT=json for JSON lines."
)]
struct Cli {
    /// The configuration file.
    #[arg(short, long, global = true, default_value = "fieldsync.toml", env = "FIELDSYNC_CONFIG")]
    config: PathBuf,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Only this organisation's links and their reviews, outbox entries and runs (with
    /// `[organisations]`; every organisation's when omitted).
    #[arg(long, global = true, value_name = "ID")]
    org: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make two small member databases with edits on both sides, sync them and show the report.
    Demo {
        /// Where to make the demo (refuses to overwrite anything it did not make).
        #[arg(long, default_value = "fieldsync-demo")]
        dir: PathBuf,
    },
    /// Validate the configuration, connect to every connector and list what each can do.
    Check,
    /// Show what a run would do, writing nothing.
    Plan(RunArgs),
    /// Run every link (or one) once.
    Run {
        #[command(flatten)]
        run: RunArgs,
        /// Go on even when the guard would stop the run.
        #[arg(long)]
        force: bool,
    },
    /// Per link: the last run, pending and dead outbox entries, open reviews.
    Status,
    /// List, show and resolve reviews.
    Conflicts {
        #[command(subcommand)]
        command: Option<ConflictsCommand>,
    },
    /// Runs with their statistics and details.
    History {
        #[command(subcommand)]
        command: Option<HistoryCommand>,
    },
    /// List, retry or drop outbox entries.
    Outbox {
        #[command(subcommand)]
        command: Option<OutboxCommand>,
    },
    /// Delete the history older than each link's `audit.keep`, or with --key erase one record.
    ///
    /// Without --key: for every link (or LINK) whose `audit = { keep = "…" }` says how long its
    /// history is kept, deletes the audit entries, runs, finished outbox entries and closed reviews
    /// older than that; links without `keep` keep their history for ever. `fieldsync serve` does
    /// this once a day.
    ///
    /// With --key: erases every trace of the record with that link key from LINK's state: its
    /// baseline, outbox entries, reviews and audit entries, its ids in waiting webhooks, and its
    /// key and values in messages about other records, then writes the state store's files anew so
    /// that no old copy of them is left (exit 1 when another process keeps them in use: the rows
    /// are gone, run it again later). The erasure is audited under the key's digest only. The
    /// systems of record are not touched: erase the member there too, or the next run reads it
    /// again.
    Purge {
        /// The link (every link when omitted; needed with --key).
        link: Option<String>,
        /// Erase the record with this link key (as `fieldsync history show`, `conflicts` and
        /// `outbox` show keys).
        #[arg(long, value_name = "KEY", requires = "link")]
        key: Option<String>,
    },
    /// Run the links as a service: each on its schedule, outbox retries as they come due,
    /// an HTTP API and the dashboard at `/` (`[server]` in the configuration). SIGTERM or
    /// Ctrl-C stops it: the runs going on stop at their next commit, and it exits 0. SIGHUP
    /// reads the configuration again (an invalid one is logged and the running one kept).
    Serve,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The link (all links when omitted).
    link: Option<String>,
    /// Read both sides in full, finding hard deletes and anything a cursor missed.
    #[arg(long)]
    full: bool,
}

#[derive(Debug, Subcommand)]
enum ConflictsCommand {
    /// List open reviews (with --all, every review).
    List {
        /// Include resolved and closed reviews.
        #[arg(long)]
        all: bool,
        /// How many, newest first (0 for all); the list says how many more there are.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Only reviews older than this one: the next page starts at the last review listed.
        #[arg(long)]
        before: Option<i64>,
    },
    /// Show one review.
    Show {
        /// The review's number.
        id: i64,
    },
    /// Decide a review; the next run applies the decision.
    Resolve {
        /// The review's number.
        id: i64,
        /// Keep one side's value: left, right, or a connector's name.
        #[arg(long, conflicts_with = "value", required_unless_present = "value")]
        keep: Option<String>,
        /// Use this value on both sides.
        #[arg(long)]
        value: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum HistoryCommand {
    /// List recent runs.
    List {
        /// How many, newest first (0 for all); the list says how many more there are.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Only runs older than this one: the next page starts at the last run listed.
        #[arg(long)]
        before: Option<i64>,
    },
    /// Show one run with every decision and write.
    Show {
        /// The run's number.
        id: i64,
    },
    /// Export runs with their statistics (CSV) or with every detail (JSON).
    Export {
        /// The format.
        #[arg(long, value_enum, default_value_t = ExportFormat::Json)]
        format: ExportFormat,
        /// Write here instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// How many runs.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ExportFormat {
    Json,
    Csv,
}

#[derive(Debug, Subcommand)]
enum OutboxCommand {
    /// List outbox entries.
    List {
        /// Only entries in this status (all, pending, sending, moved, done, dead, superseded,
        /// dropped).
        #[arg(long, default_value = "dead")]
        status: String,
        /// How many, newest first (0 for all); the list says how many more there are.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Only entries older than this one: the next page starts at the last entry listed.
        #[arg(long)]
        before: Option<i64>,
    },
    /// Put a dead entry back in line; the next run tries it again.
    Retry {
        /// The entry's number.
        id: i64,
    },
    /// Drop a dead entry for good.
    Drop {
        /// The entry's number.
        id: i64,
    },
}

/// The exit codes of `fieldsync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    /// Done.
    Done = 0,
    /// Some writes failed and will be retried (or are dead).
    WritesFailed = 1,
    /// A configuration or usage error.
    Usage = 2,
    /// Stopped by the guard.
    Guarded = 3,
    /// Cancelled by Ctrl-C (SIGINT), after the run recorded itself.
    Cancelled = 130,
}

impl From<fieldsync_app::workspace::Outcome> for Exit {
    fn from(outcome: fieldsync_app::workspace::Outcome) -> Self {
        use fieldsync_app::workspace::Outcome;
        match outcome {
            Outcome::Done => Exit::Done,
            Outcome::WritesFailed => Exit::WritesFailed,
            Outcome::Guarded => Exit::Guarded,
            Outcome::Cancelled => Exit::Cancelled,
        }
    }
}

/// An error that carries its exit code.
#[derive(Debug)]
pub struct Failure {
    exit: Exit,
    error: anyhow::Error,
}

impl Failure {
    fn usage(error: impl Into<anyhow::Error>) -> Self {
        Self { exit: Exit::Usage, error: error.into() }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Self { exit: Exit::WritesFailed, error }
    }
}

impl From<fieldsync_app::WorkspaceError> for Failure {
    /// A wrong request (configuration, name, decision) is a usage error; anything else failed.
    fn from(error: fieldsync_app::WorkspaceError) -> Self {
        let exit = if error.is_usage() { Exit::Usage } else { Exit::WritesFailed };
        Self { exit, error: error.into() }
    }
}

/// Runs the command line's command.
async fn dispatch(cli: Cli) -> Result<Exit, Failure> {
    let json = cli.json;
    let config = commands::Target { config: cli.config.as_path(), org: cli.org.as_deref() };
    match cli.command {
        Command::Demo { dir } => demo::demo(&dir, json).await,
        Command::Check => commands::check(config, json).await,
        Command::Plan(run) => commands::plan(config, run, json).await,
        Command::Run { run, force } => commands::run(config, run, force, json).await,
        // These read and write the state store only: a connector's secrets are not needed.
        Command::Status => commands::status(config, json),
        Command::Conflicts { command } => commands::conflicts(config, command, json),
        Command::History { command } => commands::history(config, command, json),
        Command::Outbox { command } => commands::outbox(config, command, json),
        Command::Purge { link, key } => commands::purge(config, link, key, json),
        Command::Serve => commands::serve(config).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A service tells what it does; a command only what went wrong.
    let serving = matches!(cli.command, Command::Serve);
    let filter = tracing_subscriber::EnvFilter::try_from_env("FIELDSYNC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(if serving { "info" } else { "error" }));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if std::env::var("FIELDSYNC_LOG_FORMAT").is_ok_and(|format| format == "json") {
        logs.json().init();
    } else {
        logs.init();
    }
    // A service runs links side by side on every core; a command runs on this thread.
    let runtime = if serving {
        tokio::runtime::Builder::new_multi_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: starting the runtime: {error}");
            return ExitCode::from(Exit::WritesFailed as u8);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(exit) => ExitCode::from(exit as u8),
        Err(failure) => {
            eprintln!("error: {:#}", failure.error);
            ExitCode::from(failure.exit as u8)
        }
    }
}
