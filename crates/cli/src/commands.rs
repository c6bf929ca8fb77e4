//! The commands: each loads what it needs, calls the engine or the state store, and renders
//! the outcome as text or JSON.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::Path;

use anyhow::{Context as _, anyhow};
use fieldsync_app::{AnyConnector, Config, StatePath, open_connector};
use fieldsync_connector::Connector as _;
use fieldsync_engine::{RunOptions, RunReport, SidePair, SystemClock, run_link};
use fieldsync_model::{RunId, Side};
use fieldsync_store::{
    AuditEntry, AuditEvent, Decision, OutboxStatus, ReviewStatus, RunStatus, StateStore, Transaction,
};
use fieldsync_store_sqlite::SqliteStore;
use serde_json::json;

use crate::progress::TerminalProgress;
use crate::{
    Cli, Command, ConflictsCommand, Exit, ExportFormat, Failure, HistoryCommand, OutboxCommand, render,
};

/// Runs the command line's command.
pub async fn dispatch(cli: Cli) -> Result<Exit, Failure> {
    let json = cli.json;
    match cli.command {
        Command::Demo { dir } => crate::demo::demo(&dir, json).await,
        Command::Check => check(&cli.config, json).await,
        Command::Plan(run) => {
            let config = load(&cli.config)?;
            let options = RunOptions { full: run.full, dry_run: true, ..RunOptions::default() };
            let (exit, reports) = run_links(&config, run.link.as_deref(), options, json).await?;
            if json {
                print_json(&reports);
            }
            Ok(exit)
        }
        Command::Run { run, force } => {
            let config = load(&cli.config)?;
            let options = RunOptions { full: run.full, force, ..RunOptions::default() };
            let (exit, reports) = run_links(&config, run.link.as_deref(), options, json).await?;
            if json {
                print_json(&reports);
            }
            Ok(exit)
        }
        // These read and write the state store only: a connector's secrets are not needed.
        Command::Status => status(&load_offline(&cli.config)?, json),
        Command::Conflicts { command } => conflicts(&load_offline(&cli.config)?, command, json),
        Command::History { command } => history(&load_offline(&cli.config)?, command, json),
        Command::Outbox { command } => outbox(&load_offline(&cli.config)?, command, json),
    }
}

/// Loads the configuration for a command that opens no connector; any problem but an unset
/// variable in a connector's settings is a usage error (exit 2).
pub fn load_offline(path: &Path) -> Result<Config, Failure> {
    fieldsync_app::load_offline(path).map_err(Failure::usage)
}

/// After a page of a list: how many more there are and how to see them, on standard error
/// with `--json` so that the JSON stays one document.
fn more_note(more: u64, what: &str, last: Option<i64>, json: bool) {
    let Some(last) = last.filter(|_| more > 0) else { return };
    let note = format!("… {more} more {what}; the next page: --before {last} (or --limit 0 for all)");
    if json {
        eprintln!("{note}");
    } else {
        outln!("{note}");
    }
}

/// Loads and validates the configuration; any problem is a usage error (exit 2).
pub fn load(path: &Path) -> Result<Config, Failure> {
    fieldsync_app::load(path).map_err(Failure::usage)
}

/// Opens the state store of a configuration.
pub fn open_store(config: &Config) -> Result<SqliteStore, Failure> {
    let StatePath::Sqlite(path) = &config.state;
    SqliteStore::open(path)
        .with_context(|| format!("opening the state store {}", path.display()))
        .map_err(Into::into)
}

pub fn print_json(value: &impl serde::Serialize) {
    outln!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

async fn check(path: &Path, json: bool) -> Result<Exit, Failure> {
    let config = load(path)?;
    let mut results = BTreeMap::new();
    let mut failed = false;
    for (name, connector_config) in &config.connectors {
        // Ask each connector about every path any link reads from it.
        let mut paths: Vec<String> = Vec::new();
        for link in config.links.values() {
            for side in Side::BOTH {
                if link.connectors.get(side) == name {
                    paths.extend(link.spec.read_paths(side));
                }
            }
        }
        paths.sort();
        paths.dedup();
        let outcome = match open_connector(connector_config, config.base_dir()) {
            Ok(mut connector) => connector.check(&paths).await,
            Err(error) => Err(error),
        };
        match outcome {
            Ok(probe) => {
                if !json {
                    outln!(
                        "{name}: {} {} — {} records; incremental {}, look-up by key {}, conditional writes {}, creates {}, deletes {}",
                        probe.kind,
                        probe.target,
                        probe.records.map_or("?".to_string(), |count| count.to_string()),
                        yes(probe.capabilities.incremental),
                        yes(probe.capabilities.lookup_by_key),
                        yes(probe.capabilities.conditional_writes),
                        yes(probe.capabilities.create),
                        yes(probe.capabilities.delete),
                    );
                }
                results.insert(name.clone(), json!({ "ok": true, "probe": probe }));
            }
            Err(error) => {
                failed = true;
                if !json {
                    outln!("{name}: FAILED: {error}");
                }
                results.insert(name.clone(), json!({ "ok": false, "error": error.to_string() }));
            }
        }
    }
    // How each link times a conflict: last-write-wins needs modification times, and a side
    // whose records carry none has its changes timed when a run first sees them.
    let mut timing = BTreeMap::new();
    for (name, link) in &config.links {
        if let fieldsync_engine::ConflictStrategy::LastWriteWins { grace, .. } = link.spec.conflicts {
            let note = format!(
                "last_write_wins compares the records' modification times (grace {}s); a side whose records \
                 carry none has its changes timed when a run first sees them, so its edits count as later \
                 than any the other side made before that run, and between two such sides every conflict \
                 falls inside the grace and goes to the tie",
                grace.as_secs()
            );
            if !json {
                outln!("link {name}: {note}");
            }
            timing.insert(name.clone(), note);
        }
    }
    if json {
        print_json(&json!({
            "config": config.path,
            "links": config.links.keys().collect::<Vec<_>>(),
            "connectors": results,
            "conflict_timing": timing,
        }));
    } else {
        outln!(
            "configuration {} is valid: {} links, {} connectors",
            config.path.display(),
            config.links.len(),
            config.connectors.len()
        );
    }
    Ok(if failed { Exit::WritesFailed } else { Exit::Done })
}

fn yes(flag: bool) -> &'static str {
    if flag { "yes" } else { "no" }
}

/// Runs (or plans) the selected links, prints their reports as text unless `json`, and
/// returns the exit code with the reports.
pub async fn run_links(
    config: &Config,
    only: Option<&str>,
    options: RunOptions,
    json: bool,
) -> Result<(Exit, Vec<RunReport>), Failure> {
    if let Some(only) = only
        && !config.links.contains_key(only)
    {
        let known: Vec<&str> = config.links.keys().map(String::as_str).collect();
        return Err(Failure::usage(anyhow!(
            "no link named {only:?}; the configuration has {}",
            known.join(", ")
        )));
    }
    let mut store = open_store(config)?;
    let mut exit = Exit::Done;
    let mut reports = Vec::new();
    for (name, link) in &config.links {
        if only.is_some_and(|only| only != name) {
            continue;
        }
        let mut connectors: SidePair<AnyConnector> = SidePair::new(
            open_connector(&config.connectors[&link.connectors.left], config.base_dir())
                .with_context(|| format!("opening connector {}", link.connectors.left))?,
            open_connector(&config.connectors[&link.connectors.right], config.base_dir())
                .with_context(|| format!("opening connector {}", link.connectors.right))?,
        );
        let progress = TerminalProgress::new(!json && std::io::stderr().is_terminal());
        let report = run_link(
            &link.spec,
            &link.connectors,
            &mut connectors,
            &mut store,
            options,
            &SystemClock,
            &progress,
        )
        .await
        .with_context(|| format!("running link {name}"));
        progress.finish();
        // A link that cannot run (a side unreachable, its lock held) does not stop the others.
        let report = match report {
            Ok(report) => report,
            Err(error) if only.is_none() && config.links.len() > 1 => {
                eprintln!("error: {error:#}");
                exit = exit.max(Exit::WritesFailed);
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        let link_exit = match report.status {
            RunStatus::Guarded => Exit::Guarded,
            RunStatus::Partial | RunStatus::Failed => Exit::WritesFailed,
            RunStatus::Done | RunStatus::Running => Exit::Done,
        };
        exit = exit.max(link_exit);
        if !json {
            outln!("{}", render::run_report(&report));
        }
        reports.push(report);
    }
    Ok((exit, reports))
}

fn status(config: &Config, json: bool) -> Result<Exit, Failure> {
    let store = open_store(config)?;
    let mut links = Vec::new();
    for (name, link) in &config.links {
        let last_run = store.list_runs(Some(name), 1)?.pop();
        let counts = store.outbox_counts(name)?;
        let reviews = store.list_reviews(Some(name), Some(ReviewStatus::Open), 10_000)?.len();
        let resolved = store.list_reviews(Some(name), Some(ReviewStatus::Resolved), 10_000)?.len();
        let count = |status| counts.get(&status).copied().unwrap_or(0);
        let pending =
            count(OutboxStatus::Pending) + count(OutboxStatus::Sending) + count(OutboxStatus::Moved);
        let dead = count(OutboxStatus::Dead);
        let records = store.baseline_count(name)?;
        let in_step = pending == 0 && dead == 0 && reviews == 0 && resolved == 0;
        if !json {
            // "In step" only when nothing is waiting: a write that keeps failing is not.
            let state = if in_step {
                format!("{records} records in step")
            } else {
                let mut waiting = Vec::new();
                for (count, what) in [
                    (pending, "writes pending"),
                    (dead, "writes dead"),
                    (reviews as u64, "reviews open"),
                    (resolved as u64, "decisions to apply"),
                ] {
                    if count > 0 {
                        waiting.push(format!("{count} {what}"));
                    }
                }
                format!("{records} records, NOT in step: {}", waiting.join(", "))
            };
            outln!("link {name} ({} ⇄ {}): {state}", link.connectors.left, link.connectors.right);
            match &last_run {
                Some(run) => outln!(
                    "  last run   #{} {} at {} ({})",
                    run.id,
                    run.status,
                    run.started_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
                    run.mode
                ),
                None => outln!("  last run   none yet"),
            }
            outln!("  outbox     {pending} pending, {dead} dead");
            outln!("  reviews    {reviews} open, {resolved} decided and waiting for the next run");
        }
        links.push(json!({
            "link": name,
            "records": records,
            "in_step": in_step,
            "last_run": last_run,
            "outbox": { "pending": pending, "dead": dead },
            "reviews": { "open": reviews, "resolved": resolved },
        }));
    }
    if json {
        print_json(&links);
    }
    Ok(Exit::Done)
}

fn conflicts(config: &Config, command: Option<ConflictsCommand>, json: bool) -> Result<Exit, Failure> {
    let mut store = open_store(config)?;
    match command.unwrap_or(ConflictsCommand::List { all: false, limit: 100, before: None }) {
        ConflictsCommand::List { all, limit, before } => {
            let status = if all { None } else { Some(ReviewStatus::Open) };
            let (reviews, more) = store.reviews_page(None, status, before, limit)?;
            if json {
                print_json(&reviews.iter().map(review_json).collect::<Vec<_>>());
            } else {
                out!("{}", render::reviews(&reviews));
            }
            more_note(more, "reviews", reviews.last().map(|review| review.id), json);
        }
        ConflictsCommand::Show { id } => {
            let review = store.review(id)?;
            let audit = store.audit_for_record(&review.link, &review.review.key)?;
            if json {
                print_json(&json!({ "review": review_json(&review), "audit": audit }));
            } else {
                out!("{}", render::review(&review, &audit));
            }
        }
        ConflictsCommand::Resolve { id, keep, value } => {
            let review = store.review(id)?;
            let link = config.links.get(&review.link).ok_or_else(|| {
                Failure::usage(anyhow!(
                    "review {id} belongs to link {}, which is not configured",
                    review.link
                ))
            })?;
            let decision = match (keep, value) {
                (Some(keep), _) => {
                    let side = match keep.as_str() {
                        "left" => Side::Left,
                        "right" => Side::Right,
                        name if name == link.connectors.left => Side::Left,
                        name if name == link.connectors.right => Side::Right,
                        other => {
                            return Err(Failure::usage(anyhow!(
                                "--keep {other:?}: expected left, right, {} or {}",
                                link.connectors.left,
                                link.connectors.right
                            )));
                        }
                    };
                    Decision::Keep(side)
                }
                (None, Some(text)) => {
                    let Some(field_name) = &review.review.field else {
                        return Err(Failure::usage(anyhow!(
                            "review {id} is about a whole record: use --keep"
                        )));
                    };
                    let field =
                        link.spec.fields.iter().find(|field| field.name == *field_name).ok_or_else(|| {
                            Failure::usage(anyhow!("field {field_name} is no longer configured"))
                        })?;
                    // A person's value must be one the field's rules read, not copied verbatim.
                    let value = match field.normalisers.left.read(&serde_json::Value::String(text.clone())) {
                        fieldsync_model::Reading::Valid(value) => value,
                        fieldsync_model::Reading::Copied(_, error)
                        | fieldsync_model::Reading::Invalid(error) => {
                            return Err(Failure::usage(anyhow!("--value: {error}")));
                        }
                    };
                    Decision::Value(value)
                }
                (None, None) => return Err(Failure::usage(anyhow!("give --keep or --value"))),
            };
            if review.status == ReviewStatus::Closed {
                return Err(Failure::usage(anyhow!("review {id} is closed already")));
            }
            let now = jiff::Timestamp::now();
            let transaction = store.transaction()?;
            transaction.resolve_review(id, &decision, now)?;
            transaction.audit(
                &review.link,
                &AuditEntry {
                    run_id: None,
                    key: review.review.key.clone(),
                    field: review.review.field.clone(),
                    event: AuditEvent::Decided,
                    side: None,
                    base: review.review.base.clone(),
                    left: review.review.left.clone(),
                    right: review.review.right.clone(),
                    value: match &decision {
                        Decision::Value(value) => Some(value.clone()),
                        Decision::Keep(Side::Left) => review.review.left.clone(),
                        Decision::Keep(Side::Right) => review.review.right.clone(),
                    },
                    reason: format!(
                        "decided by a person: {}",
                        serde_json::to_string(&decision).unwrap_or_default()
                    ),
                    at: now,
                },
            )?;
            transaction.commit()?;
            if json {
                print_json(&json!({ "review": id, "decision": decision }));
            } else {
                outln!("Review #{id} decided; the next `fieldsync run` applies it.");
            }
        }
    }
    Ok(Exit::Done)
}

fn review_json(review: &fieldsync_store::Review) -> serde_json::Value {
    json!({
        "id": review.id,
        "link": review.link,
        "key": review.review.key,
        "field": review.review.field,
        "kind": review.review.kind,
        "status": review.status,
        "base": review.review.base,
        "left": review.review.left,
        "right": review.review.right,
        "reason": review.review.reason,
        "decision": review.decision,
        "run_id": review.run_id,
        "created_at": review.created_at,
        "updated_at": review.updated_at,
    })
}

fn history(config: &Config, command: Option<HistoryCommand>, json: bool) -> Result<Exit, Failure> {
    let store = open_store(config)?;
    match command.unwrap_or(HistoryCommand::List { limit: 20, before: None }) {
        HistoryCommand::List { limit, before } => {
            let (runs, more) = store.runs_page(None, before.map(RunId), limit)?;
            if json {
                print_json(&runs);
            } else {
                out!("{}", render::runs(&runs));
            }
            more_note(more, "runs", runs.last().map(|run| run.id.0), json);
        }
        HistoryCommand::Show { id } => {
            let run = store.run(RunId(id))?;
            let audit = store.audit_for_run(RunId(id))?;
            if json {
                print_json(&json!({ "run": run, "audit": audit }));
            } else {
                out!("{}", render::runs(std::slice::from_ref(&run)));
                outln!("  statistics {}", run.stats);
                out!("{}", render::audit_lines(&audit));
            }
        }
        HistoryCommand::Export { format, output, limit } => {
            let runs = store.list_runs(None, limit)?;
            let mut buffer: Vec<u8> = Vec::new();
            match format {
                ExportFormat::Json => {
                    let mut detailed = Vec::with_capacity(runs.len());
                    for run in &runs {
                        detailed.push(json!({ "run": run, "audit": store.audit_for_run(run.id)? }));
                    }
                    serde_json::to_writer_pretty(&mut buffer, &detailed).context("writing JSON")?;
                    buffer.push(b'\n');
                }
                ExportFormat::Csv => {
                    let mut writer = csv::Writer::from_writer(&mut buffer);
                    writer
                        .write_record([
                            "run",
                            "link",
                            "mode",
                            "status",
                            "started_at",
                            "finished_at",
                            "left_read",
                            "right_read",
                            "left_changed",
                            "right_changed",
                            "writes_done",
                            "writes_retrying",
                            "writes_dead",
                            "conflicts_resolved",
                            "false_conflicts",
                            "reviews_open",
                            "invalid_values",
                            "error",
                        ])
                        .context("writing CSV")?;
                    for run in &runs {
                        let stat = |path: &str| {
                            run.stats
                                .pointer(path)
                                .and_then(serde_json::Value::as_u64)
                                .unwrap_or(0)
                                .to_string()
                        };
                        writer
                            .write_record([
                                run.id.to_string(),
                                run.link.clone(),
                                run.mode.clone(),
                                run.status.to_string(),
                                run.started_at.to_string(),
                                run.finished_at.map(|at| at.to_string()).unwrap_or_default(),
                                stat("/left/read"),
                                stat("/right/read"),
                                stat("/left/changed"),
                                stat("/right/changed"),
                                stat("/writes_done"),
                                stat("/writes_retrying"),
                                stat("/writes_dead"),
                                stat("/conflicts_resolved"),
                                stat("/false_conflicts"),
                                stat("/reviews_open"),
                                stat("/invalid_values"),
                                run.error.clone().unwrap_or_default(),
                            ])
                            .context("writing CSV")?;
                    }
                    writer.flush().context("writing CSV")?;
                    drop(writer);
                }
            }
            match output {
                Some(path) => {
                    std::fs::write(&path, &buffer).with_context(|| format!("writing {}", path.display()))?
                }
                None => crate::output::write_bytes(&buffer),
            }
        }
    }
    Ok(Exit::Done)
}

fn outbox(config: &Config, command: Option<OutboxCommand>, json: bool) -> Result<Exit, Failure> {
    let mut store = open_store(config)?;
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
            let (entries, more) = store.outbox_page(None, status, before, limit)?;
            if json {
                let entries: Vec<serde_json::Value> = entries
                    .iter()
                    .map(|entry| {
                        json!({
                            "id": entry.id, "link": entry.link, "key": entry.key, "side": entry.side,
                            "operation": entry.operation, "status": entry.status, "attempts": entry.attempts,
                            "next_attempt_at": entry.next_attempt_at, "last_error": entry.last_error,
                            "run_id": entry.run_id, "write": serde_json::from_str::<serde_json::Value>(&entry.payload).ok(),
                        })
                    })
                    .collect();
                print_json(&entries);
            } else {
                out!("{}", render::outbox(&entries));
            }
            more_note(more, "entries", entries.last().map(|entry| entry.id), json);
        }
        OutboxCommand::Retry { id } | OutboxCommand::Drop { id } if store.outbox_entry(id).is_err() => {
            return Err(anyhow!("no outbox entry with id {id}").into());
        }
        OutboxCommand::Retry { id } => {
            let transaction = store.transaction()?;
            transaction.retry_dead(id, jiff::Timestamp::now())?;
            transaction.commit()?;
            if !json {
                outln!("Outbox entry #{id} is pending again; the next `fieldsync run` tries it.");
            }
        }
        OutboxCommand::Drop { id } => {
            let transaction = store.transaction()?;
            transaction.drop_dead(id, jiff::Timestamp::now())?;
            transaction.commit()?;
            if !json {
                outln!("Outbox entry #{id} dropped.");
            }
        }
    }
    Ok(Exit::Done)
}
