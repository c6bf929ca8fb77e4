//! The commands but the demo: each opens the workspace its use case needs, calls it, renders
//! what it returns as text or JSON, and maps the outcome to an exit code.

use std::path::Path;

use anyhow::{Context as _, anyhow};
use fieldsync_app::workspace::{OutboxStatus, Page, Resolution, RunScope, Timestamp};
use fieldsync_app::{Workspace, WorkspaceError};

use crate::output::{print_json, show};
use crate::progress::RunPrinter;
use crate::{ConflictsCommand, Exit, ExportFormat, Failure, HistoryCommand, OutboxCommand, RunArgs, render};

/// The configuration a command works on, and the organisation it is limited to (`--org`).
#[derive(Clone, Copy)]
pub struct Target<'a> {
    /// The configuration file.
    pub config: &'a Path,
    /// The organisation, if one.
    pub org: Option<&'a str>,
}

impl Target<'_> {
    /// The workspace of every use case, limited to the organisation.
    fn open(self) -> Result<Workspace, WorkspaceError> {
        Workspace::open(self.config)?.within(self.org)
    }

    /// The workspace of the use cases that open no connector, limited to the organisation.
    fn open_offline(self) -> Result<Workspace, WorkspaceError> {
        Workspace::open_offline(self.config)?.within(self.org)
    }
}

/// `fieldsync run`: runs the links once and prints each report (text as each ends, or JSON
/// at the end).
pub async fn run(target: Target<'_>, run: RunArgs, force: bool, json: bool) -> Result<Exit, Failure> {
    let mut workspace = target.open()?;
    // Ctrl-C cancels the run: it stops between two commits and records itself as cancelled,
    // and fieldsync exits 130.
    let cancel = workspace.cancellation();
    let interrupt = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            cancel.cancel();
        }
    });
    let runs = workspace.run(&scope(run), force, &mut RunPrinter::new(json)).await;
    interrupt.abort();
    let runs = runs?;
    if json {
        print_json(&runs.reports);
    }
    Ok(runs.outcome.into())
}

/// `fieldsync plan`: what a run would do, writing nothing.
pub async fn plan(target: Target<'_>, run: RunArgs, json: bool) -> Result<Exit, Failure> {
    let mut workspace = target.open()?;
    let runs = workspace.plan(&scope(run), &mut RunPrinter::new(json)).await?;
    if json {
        print_json(&runs.reports);
    }
    Ok(runs.outcome.into())
}

/// `fieldsync serve`: binds the address of `[server]`, says where it listens, and serves until
/// SIGTERM or SIGINT; SIGHUP reads the configuration again.
pub async fn serve(target: Target<'_>) -> Result<Exit, Failure> {
    if let Some(org) = target.org {
        return Err(Failure::usage(anyhow!(
            "fieldsync serve runs every organisation's links; --org {org} limits the other commands"
        )));
    }
    let config = fieldsync_app::load(target.config).map_err(Failure::usage)?;
    let server = fieldsync_server::Server::bind(config).await.context("starting the service")?;
    let address = server.local_addr().context("reading the address listened on")?;
    outln!("fieldsync serve: listening on http://{address}");
    let stop = fieldsync_app::workspace::CancellationToken::new();
    let told = stop.clone();
    tokio::spawn(async move {
        stop_signal().await;
        told.cancel();
    });
    let reload = std::sync::Arc::new(tokio::sync::Notify::new());
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut hangups) = signal(SignalKind::hangup()) {
            let reload = std::sync::Arc::clone(&reload);
            tokio::spawn(async move {
                while hangups.recv().await.is_some() {
                    reload.notify_one();
                }
            });
        }
    }
    server.serve(stop, reload).await.context("serving")?;
    Ok(Exit::Done)
}

/// Waits for SIGTERM (a service manager stopping the service) or SIGINT (Ctrl-C).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
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

/// `fieldsync check`: every connector opened and asked what it can do.
pub async fn check(target: Target<'_>, json: bool) -> Result<Exit, Failure> {
    let report = target.open()?.check().await;
    show(&report, json, render::check);
    Ok(if report.ok() { Exit::Done } else { Exit::WritesFailed })
}

/// `fieldsync status`. Like the other commands that read only the state store, it loads the
/// configuration without needing a connector's secrets.
pub fn status(target: Target<'_>, json: bool) -> Result<Exit, Failure> {
    let links = target.open_offline()?.status()?;
    show(links.as_slice(), json, render::status);
    Ok(Exit::Done)
}

/// `fieldsync conflicts`: reviews listed, shown or decided.
pub fn conflicts(target: Target<'_>, command: Option<ConflictsCommand>, json: bool) -> Result<Exit, Failure> {
    let workspace = &mut target.open_offline()?;
    match command.unwrap_or(ConflictsCommand::List { all: false, limit: 100, before: None }) {
        ConflictsCommand::List { all, limit, before } => {
            let page = workspace.reviews(None, all, before, limit)?;
            show(page.items.as_slice(), json, render::reviews);
            more_note(&page, "reviews", json);
        }
        ConflictsCommand::Show { id } => {
            let detail = workspace.review(id)?;
            show(&detail, json, |detail| render::review(&detail.review, &detail.audit));
        }
        ConflictsCommand::Resolve { id, keep, value } => {
            let resolution = match (keep, value) {
                (Some(keep), _) => Resolution::Keep(keep),
                (None, Some(value)) => Resolution::Value(value),
                (None, None) => return Err(Failure::usage(anyhow!("give --keep or --value"))),
            };
            let resolved = workspace.resolve(id, resolution, None).map_err(decision_error)?;
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

/// `fieldsync history`: runs listed, shown or exported.
pub fn history(target: Target<'_>, command: Option<HistoryCommand>, json: bool) -> Result<Exit, Failure> {
    let workspace = &mut target.open_offline()?;
    match command.unwrap_or(HistoryCommand::List { limit: 20, before: None }) {
        HistoryCommand::List { limit, before } => {
            let page = workspace.runs(before, limit)?;
            show(page.items.as_slice(), json, render::runs);
            more_note(&page, "runs", json);
        }
        HistoryCommand::Show { id } => {
            let run = workspace.run_history(id)?;
            show(&run, json, render::run_history);
        }
        HistoryCommand::Export { format, output, limit } => {
            let history = workspace.export_history(limit, matches!(format, ExportFormat::Json))?;
            let bytes = match format {
                ExportFormat::Json => {
                    let mut text = crate::output::json_text(&history);
                    text.push('\n');
                    text.into_bytes()
                }
                ExportFormat::Csv => {
                    fieldsync_app::workspace::history_csv(&history).context("writing CSV")?
                }
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

/// `fieldsync outbox`: entries listed, retried or dropped.
pub fn outbox(target: Target<'_>, command: Option<OutboxCommand>, json: bool) -> Result<Exit, Failure> {
    let workspace = &mut target.open_offline()?;
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
            show(page.items.as_slice(), json, render::outbox);
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

/// `fieldsync purge`: each link's history past its `audit.keep` deleted, or with `key` one
/// record erased from a link's state. Exit 1 when an erasure could not write the store's files
/// anew (the rows are gone; old bytes may be left until the next erasure).
pub fn purge(
    target: Target<'_>,
    link: Option<String>,
    key: Option<String>,
    json: bool,
) -> Result<Exit, Failure> {
    let workspace = &mut target.open_offline()?;
    let Some(key) = key else {
        let purges = workspace.purge_history(link.as_deref(), Timestamp::now())?;
        show(purges.as_slice(), json, render::purges);
        return Ok(Exit::Done);
    };
    let link =
        link.ok_or_else(|| Failure::usage(anyhow!("--key needs the link: fieldsync purge LINK --key KEY")))?;
    let erasure = workspace.erase_record(&link, &key, None)?;
    show(&erasure, json, render::erasure);
    Ok(if erasure.erased.wiped { Exit::Done } else { Exit::WritesFailed })
}
