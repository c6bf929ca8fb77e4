//! The commands: each opens the workspace its use case needs, calls it, renders what it
//! returns as text or JSON, and maps the outcome to an exit code.

use std::path::Path;

use anyhow::{Context as _, anyhow};
use fieldsync_app::workspace::{OutboxStatus, Outcome, Page, Resolution, RunScope};
use fieldsync_app::{Workspace, WorkspaceError};

use crate::output::print_json;
use crate::progress::RunPrinter;
use crate::{
    Cli, Command, ConflictsCommand, Exit, ExportFormat, Failure, HistoryCommand, OutboxCommand, RunArgs,
    render,
};

/// Runs the command line's command.
pub async fn dispatch(cli: Cli) -> Result<Exit, Failure> {
    let json = cli.json;
    match cli.command {
        Command::Demo { dir } => crate::demo::demo(&dir, json).await,
        Command::Check => check(&cli.config, json).await,
        Command::Plan(run) => {
            let mut workspace = Workspace::open(&cli.config)?;
            let runs = workspace.plan(&scope(run), &mut RunPrinter::new(json)).await?;
            if json {
                print_json(&runs.reports);
            }
            Ok(runs.outcome.into())
        }
        Command::Run { run, force } => {
            let mut workspace = Workspace::open(&cli.config)?;
            let runs = workspace.run(&scope(run), force, &mut RunPrinter::new(json)).await?;
            if json {
                print_json(&runs.reports);
            }
            Ok(runs.outcome.into())
        }
        // These read and write the state store only: a connector's secrets are not needed.
        Command::Status => status(&mut Workspace::open_offline(&cli.config)?, json),
        Command::Conflicts { command } => {
            conflicts(&mut Workspace::open_offline(&cli.config)?, command, json)
        }
        Command::History { command } => history(&mut Workspace::open_offline(&cli.config)?, command, json),
        Command::Outbox { command } => outbox(&mut Workspace::open_offline(&cli.config)?, command, json),
    }
}

impl From<Outcome> for Exit {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Done => Exit::Done,
            Outcome::WritesFailed => Exit::WritesFailed,
            Outcome::Guarded => Exit::Guarded,
        }
    }
}

fn scope(run: RunArgs) -> RunScope {
    RunScope { link: run.link, full: run.full }
}

/// After a page of a list: how many more there are and how to see them, on standard error
/// with `--json` so that the JSON stays one document.
fn more_note<T>(page: &Page<T>, what: &str, json: bool) {
    let Some(last) = page.next_before else { return };
    let note = format!("… {} more {what}; the next page: --before {last} (or --limit 0 for all)", page.more);
    if json {
        eprintln!("{note}");
    } else {
        outln!("{note}");
    }
}

async fn check(path: &Path, json: bool) -> Result<Exit, Failure> {
    let report = Workspace::open(path)?.check().await;
    if json {
        print_json(&report);
    } else {
        out!("{}", render::check(&report));
    }
    Ok(if report.ok() { Exit::Done } else { Exit::WritesFailed })
}

fn status(workspace: &mut Workspace, json: bool) -> Result<Exit, Failure> {
    let links = workspace.status()?;
    if json {
        print_json(&links);
    } else {
        out!("{}", render::status(&links));
    }
    Ok(Exit::Done)
}

fn conflicts(
    workspace: &mut Workspace,
    command: Option<ConflictsCommand>,
    json: bool,
) -> Result<Exit, Failure> {
    match command.unwrap_or(ConflictsCommand::List { all: false, limit: 100, before: None }) {
        ConflictsCommand::List { all, limit, before } => {
            let page = workspace.reviews(all, before, limit)?;
            if json {
                print_json(&page.items);
            } else {
                out!("{}", render::reviews(&page.items));
            }
            more_note(&page, "reviews", json);
        }
        ConflictsCommand::Show { id } => {
            let detail = workspace.review(id)?;
            if json {
                print_json(&detail);
            } else {
                out!("{}", render::review(&detail.review, &detail.audit));
            }
        }
        ConflictsCommand::Resolve { id, keep, value } => {
            let resolution = match (keep, value) {
                (Some(keep), _) => Resolution::Keep(keep),
                (None, Some(value)) => Resolution::Value(value),
                (None, None) => return Err(Failure::usage(anyhow!("give --keep or --value"))),
            };
            let resolved = workspace.resolve(id, resolution).map_err(decision_error)?;
            if json {
                print_json(&resolved);
            } else {
                outln!("Review #{id} decided; the next `fieldsync run` applies it.");
            }
        }
    }
    Ok(Exit::Done)
}

/// A decision the workspace refused, told in the words of the command's options.
fn decision_error(error: WorkspaceError) -> Failure {
    match error {
        WorkspaceError::UnknownSide { given, left, right } => {
            Failure::usage(anyhow!("--keep {given:?}: expected left, right, {left} or {right}"))
        }
        WorkspaceError::WholeRecord { id } => {
            Failure::usage(anyhow!("review {id} is about a whole record: use --keep"))
        }
        WorkspaceError::UnreadableValue { message } => Failure::usage(anyhow!("--value: {message}")),
        other => other.into(),
    }
}

fn history(workspace: &mut Workspace, command: Option<HistoryCommand>, json: bool) -> Result<Exit, Failure> {
    match command.unwrap_or(HistoryCommand::List { limit: 20, before: None }) {
        HistoryCommand::List { limit, before } => {
            let page = workspace.runs(before, limit)?;
            if json {
                print_json(&page.items);
            } else {
                out!("{}", render::runs(&page.items));
            }
            more_note(&page, "runs", json);
        }
        HistoryCommand::Show { id } => {
            let run = workspace.run_history(id)?;
            if json {
                print_json(&run);
            } else {
                out!("{}", render::run_history(&run));
            }
        }
        HistoryCommand::Export { format, output, limit } => {
            let history = workspace.export_history(limit, matches!(format, ExportFormat::Json))?;
            let bytes = match format {
                ExportFormat::Json => {
                    let mut text = crate::output::json_text(&history);
                    text.push('\n');
                    text.into_bytes()
                }
                ExportFormat::Csv => render::history_csv(&history).context("writing CSV")?,
            };
            match output {
                Some(path) => {
                    std::fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?
                }
                None => crate::output::write_bytes(&bytes),
            }
        }
    }
    Ok(Exit::Done)
}

fn outbox(workspace: &mut Workspace, command: Option<OutboxCommand>, json: bool) -> Result<Exit, Failure> {
    match command.unwrap_or(OutboxCommand::List { status: "dead".into(), limit: 50, before: None }) {
        OutboxCommand::List { status, limit, before } => {
            let status = match status.as_str() {
                "all" => None,
                other => Some(OutboxStatus::parse(other).ok_or_else(|| {
                    Failure::usage(anyhow!(
                        "--status {other:?}: expected all, pending, sending, moved, done, dead, superseded or dropped"
                    ))
                })?),
            };
            let page = workspace.outbox(status, before, limit)?;
            if json {
                print_json(&page.items);
            } else {
                out!("{}", render::outbox(&page.items));
            }
            more_note(&page, "entries", json);
        }
        OutboxCommand::Retry { id } => {
            workspace.retry_outbox_entry(id)?;
            if !json {
                outln!("Outbox entry #{id} is pending again; the next `fieldsync run` tries it.");
            }
        }
        OutboxCommand::Drop { id } => {
            workspace.drop_outbox_entry(id)?;
            if !json {
                outln!("Outbox entry #{id} dropped.");
            }
        }
    }
    Ok(Exit::Done)
}
