//! Text rendering for people of what the workspace returns: run reports, the check, status,
//! reviews, outbox entries and history (and the history as CSV). JSON output is the same
//! types, serialised.

use std::fmt::Write as _;

use fieldsync_app::workspace::{
    Action, AuditEntry, CheckReport, Erasure, LinkPurge, LinkStatus, NewReview, OutboxEntryView, Review,
    RunHistory, RunReport, RunRow, RunStatus,
};
use fieldsync_model::{Side, Value};

/// The connector name of a side of a report.
fn side_name(report: &RunReport, side: Side) -> &str {
    report.sides.get(side)
}

fn value(value: &Option<Value>) -> String {
    value.as_ref().map_or_else(|| "(absent)".to_string(), ToString::to_string)
}

/// Replaces the words "left" and "right" in a reason with the connectors' names.
fn named(reason: &str, report: &RunReport) -> String {
    let sides = &report.sides;
    reason
        .replace("the left side", &format!("{} (left)", sides.left))
        .replace("the right side", &format!("{} (right)", sides.right))
        .replace("the left edit", &format!("the {} edit", sides.left))
        .replace("the right edit", &format!("the {} edit", sides.right))
        .replace("goes to left", &format!("goes to {}", sides.left))
        .replace("goes to right", &format!("goes to {}", sides.right))
}

/// A run report as text.
pub fn run_report(report: &RunReport) -> String {
    let sides = &report.sides;
    let stats = &report.stats;
    let mut out = String::new();
    let title = if report.dry_run {
        format!("Plan for link {} ({} ⇄ {}), nothing written", report.link, sides.left, sides.right)
    } else {
        format!(
            "Run {} of link {} ({} ⇄ {}): {} in {} ms",
            report.run_id.map(|id| id.to_string()).unwrap_or_default(),
            report.link,
            sides.left,
            sides.right,
            report.status,
            report.elapsed_ms
        )
    };
    let _ = writeln!(out, "{title}");
    let _ = writeln!(
        out,
        "  read       {} {} ({}), {} {} ({})",
        sides.left,
        stats.left.read,
        stats.left.mode.as_str(),
        sides.right,
        stats.right.read,
        stats.right.mode.as_str()
    );
    let _ = writeln!(
        out,
        "  changed    {} {}, {} {}; deleted {} {}, {} {}",
        sides.left,
        stats.left.changed,
        sides.right,
        stats.right.changed,
        sides.left,
        stats.left.deleted,
        sides.right,
        stats.right.deleted
    );
    for side in Side::BOTH {
        let side_stats = stats.side(side);
        let _ = writeln!(
            out,
            "  planned    → {}: {} updates ({} values), {} creates, {} deletes",
            side_name(report, side),
            side_stats.updates_planned,
            side_stats.fields_planned,
            side_stats.creates_planned,
            side_stats.deletes_planned
        );
    }
    let _ = writeln!(
        out,
        "  conflicts  {} settled by the strategy, {} false conflicts, {} held for review, {} reviews closed",
        stats.conflicts_resolved, stats.false_conflicts, stats.reviews_open, stats.reviews_closed
    );
    if !report.dry_run {
        let _ = writeln!(
            out,
            "  written    {} verified, {} retrying, {} dead, {} target moved (planned again next run)",
            stats.writes_done, stats.writes_retrying, stats.writes_dead, stats.writes_moved
        );
    }
    if stats.invalid_values > 0 {
        let _ = writeln!(
            out,
            "  invalid    {} values could not be normalised and were left alone",
            stats.invalid_values
        );
    }
    if stats.copied_values > 0 {
        let _ = writeln!(
            out,
            "  copied     {} values no rule reads were copied as written (invalid = \"copy\"); correct them at their source",
            stats.copied_values
        );
    }
    if let Some(guard) = &report.guard {
        let _ = writeln!(
            out,
            "\nSTOPPED BY THE GUARD: the run would {} {} of {} records on the {} side (limit {}). Nothing was written.\n\
             Look at `fieldsync plan`, then run again with --force if this is intended.",
            guard.kind,
            guard.count,
            guard.total,
            side_name(report, guard.side),
            guard.limit
        );
    }
    if !report.lines.is_empty() {
        let _ = writeln!(out);
    }
    for line in &report.lines {
        let field = line.field.as_deref().map(|field| format!(" {field}")).unwrap_or_default();
        let target = line.target.map(|side| side_name(report, side).to_string()).unwrap_or_default();
        let reason = named(&line.reason, report);
        // A field's two values, each after its side's name.
        let both = || {
            format!(
                "{}{field}: {} {} vs {} {}",
                line.key,
                sides.left,
                value(&line.left),
                sides.right,
                value(&line.right)
            )
        };
        let text = match line.action {
            Action::Update => {
                format!("  update   {}{field} → {target}: {}  ({reason})", line.key, value(&line.value))
            }
            Action::Conflict => format!("  conflict {} → {} on both  ({reason})", both(), value(&line.value)),
            Action::Review => format!("  review   {}, held for a person  ({reason})", both()),
            Action::Agreed => format!("  agreed   {}{field}: {}  ({reason})", line.key, value(&line.value)),
            Action::Create => format!("  create   {} on {target}  ({reason})", line.key),
            Action::Delete => format!("  delete   {} on {target}  ({reason})", line.key),
            Action::Tombstone => format!("  deleted  {}  ({reason})", line.key),
            Action::Invalid => format!("  invalid  {}{field}: {reason}", line.key),
            Action::Copied => format!("  copied   {}{field} → {target}: {reason}", line.key),
            Action::Skipped => format!("  skipped  {}: {reason}", line.key),
        };
        let _ = writeln!(out, "{text}");
    }
    if report.lines_omitted > 0 {
        let _ = writeln!(out, "  … and {} more lines (see `fieldsync history show`)", report.lines_omitted);
    }
    if !report.failures.is_empty() {
        let _ = writeln!(out, "\nWrites that did not succeed:");
        for failure in &report.failures {
            let _ = writeln!(
                out,
                "  outbox {} {} → {}: {}: {}",
                failure.outbox_id,
                failure.key,
                side_name(report, failure.side),
                failure.outcome,
                failure.message
            );
        }
    }
    if !report.problems.is_empty() {
        let _ = writeln!(out, "\nProblems:");
        for problem in &report.problems {
            let _ = writeln!(out, "  {problem}");
        }
    }
    out
}

/// A list of reviews as text.
pub fn reviews(reviews: &[Review]) -> String {
    list(reviews, "No reviews.", |out, review| {
        let about = &review.review;
        let _ = writeln!(
            out,
            "#{:<5} {:<9} {} {} {}: left {} | right {}  ({})",
            review.id,
            review.status,
            review.link,
            about.key,
            about.field.as_deref().unwrap_or("(record)"),
            value(&about.left),
            value(&about.right),
            about.reason
        );
    })
}

/// `items` as `line` writes each, or the line `none` when there are none.
fn list<T>(items: &[T], none: &str, mut line: impl FnMut(&mut String, &T)) -> String {
    if items.is_empty() {
        return format!("{none}\n");
    }
    let mut out = String::new();
    for item in items {
        line(&mut out, item);
    }
    out
}

/// Each side's change time, to follow its value, when its connector reported one.
fn changed(about: &NewReview) -> [String; 2] {
    [about.left_changed, about.right_changed].map(|at| {
        at.map(|at| format!("  (changed {})", at.strftime("%Y-%m-%d %H:%M:%S UTC"))).unwrap_or_default()
    })
}

/// One review in full, with the record's audit trail.
pub fn review(review: &Review, audit: &[AuditEntry]) -> String {
    let about = &review.review;
    let mut out = String::new();
    let _ = writeln!(out, "Review #{} ({}, {})", review.id, about.kind, review.status);
    let _ = writeln!(out, "  link    {}", review.link);
    let _ = writeln!(out, "  record  {}", about.key);
    let _ = writeln!(out, "  field   {}", about.field.as_deref().unwrap_or("(the whole record)"));
    let _ = writeln!(out, "  base    {}", value(&about.base));
    let [left_changed, right_changed] = changed(about);
    let _ = writeln!(out, "  left    {}{left_changed}", value(&about.left));
    let _ = writeln!(out, "  right   {}{right_changed}", value(&about.right));
    let _ = writeln!(out, "  reason  {}", about.reason);
    if let Some(decision) = &review.decision {
        let _ = writeln!(out, "  decided {}", serde_json::to_string(decision).unwrap_or_default());
    }
    let _ = writeln!(
        out,
        "\nResolve with: fieldsync conflicts resolve {} --keep left|right   or   --value VALUE",
        review.id
    );
    if !audit.is_empty() {
        let _ = writeln!(out, "\nAudit of record {}:", about.key);
        out.push_str(&audit_lines(audit));
    }
    out
}

/// Audit entries as text, one a line.
pub fn audit_lines(audit: &[AuditEntry]) -> String {
    let mut out = String::new();
    for entry in audit {
        let mut parts =
            vec![format!("  {} {:<9} {}", entry.at.strftime("%Y-%m-%d %H:%M:%S"), entry.event, entry.key)];
        if let Some(field) = &entry.field {
            parts.push(field.clone());
        }
        if let Some(side) = entry.side {
            parts.push(format!("[{side}]"));
        }
        if entry.left.is_some() || entry.right.is_some() {
            parts.push(format!("left {} right {}", value(&entry.left), value(&entry.right)));
        }
        if entry.value.is_some() {
            parts.push(format!("→ {}", value(&entry.value)));
        }
        parts.push(format!("— {}", entry.reason));
        let _ = writeln!(out, "{}", parts.join(" "));
    }
    out
}

/// Outbox entries as text.
pub fn outbox(entries: &[OutboxEntryView]) -> String {
    list(entries, "No outbox entries.", |out, entry| {
        let _ = writeln!(
            out,
            "#{:<6} {:<10} {} {} {} → {} (attempts {}){}",
            entry.id,
            entry.status,
            entry.link,
            entry.operation,
            entry.key,
            entry.side,
            entry.attempts,
            entry.last_error.as_deref().map(|error| format!(": {error}")).unwrap_or_default()
        );
    })
}

/// Runs as text.
pub fn runs(runs: &[RunRow]) -> String {
    list(runs, "No runs yet.", |out, run| {
        let stat = |path: &str| run.stat(path);
        let _ = writeln!(
            out,
            "#{:<5} {} {:<8} {:<11} {:<9} read {}+{}, written {}, conflicts {}, reviews {}, dead {}{}",
            run.id,
            run.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            run.link,
            run.mode,
            run.status,
            stat("/left/read"),
            stat("/right/read"),
            stat("/writes_done"),
            stat("/conflicts_resolved"),
            stat("/reviews_open"),
            stat("/writes_dead"),
            run.error.as_deref().map(|error| format!(" — {error}")).unwrap_or_default()
        );
        if run.status == RunStatus::Running {
            let _ = writeln!(out, "       (still running, or killed before it could finish)");
        }
    })
}

/// One run with its statistics and audit trail.
pub fn run_history(history: &RunHistory) -> String {
    let mut out = runs(std::slice::from_ref(&history.run));
    let _ = writeln!(out, "  statistics {}", history.run.stats);
    out.push_str(&audit_lines(&history.audit));
    out
}

/// What a purge of each link's history deleted, a line a link.
pub fn purges(purges: &[LinkPurge]) -> String {
    list(purges, "No links configured.", |out, purge| {
        let Some((keep, before)) = purge.keep.as_deref().zip(purge.before) else {
            let _ = writeln!(
                out,
                "{}: history kept for ever (the link has no audit.keep); nothing purged",
                purge.link
            );
            return;
        };
        let counts = &purge.purged;
        let _ = writeln!(
            out,
            "{}: history kept {keep}; deleted what is older than {}: {} runs, {} audit entries, {} finished \
             outbox entries, {} closed reviews",
            purge.link,
            before.strftime("%Y-%m-%d %H:%M:%S UTC"),
            counts.runs,
            counts.audit_entries,
            counts.outbox_entries,
            counts.reviews
        );
    })
}

/// A record erased: what was removed, how the erasure is audited, and what is left to do.
pub fn erasure(erasure: &Erasure) -> String {
    let mut out = String::new();
    let erased = &erasure.erased;
    let _ = writeln!(out, "Erased from link {}: {}.", erasure.link, erased.summary());
    let _ = writeln!(
        out,
        "The erasure is audited as record {}; the key itself is kept nowhere.",
        erasure.key_digest
    );
    if erased.wiped {
        let _ = writeln!(
            out,
            "The state store's files were written anew: no old copy of the record is left in them."
        );
    } else {
        let _ = writeln!(
            out,
            "The rows are gone, but the state store's files could not be written anew (another process is using \
             them): old copies may be left until the next erasure. Run it again when nothing else uses the store."
        );
    }
    let _ = writeln!(
        out,
        "The systems of record were not touched: erase the member there too, or the next run of {} reads it again.",
        erasure.link
    );
    out
}

/// Every link's state: in step or what waits, the last run, the outbox and the reviews.
pub fn status(links: &[LinkStatus]) -> String {
    let mut out = String::new();
    for link in links {
        // "In step" only when nothing is waiting: a write that keeps failing is not.
        let state = if link.in_step {
            format!("{} records in step", link.records)
        } else {
            let waiting: Vec<String> = [
                (link.outbox.pending, "writes pending"),
                (link.outbox.dead, "writes dead"),
                (link.reviews.open, "reviews open"),
                (link.reviews.resolved, "decisions to apply"),
            ]
            .into_iter()
            .filter(|(count, _)| *count > 0)
            .map(|(count, what)| format!("{count} {what}"))
            .collect();
            format!("{} records, NOT in step: {}", link.records, waiting.join(", "))
        };
        let _ = writeln!(
            out,
            "link {} ({} ⇄ {}): {state}",
            link.link, link.connectors.left, link.connectors.right
        );
        match &link.last_run {
            Some(run) => {
                let _ = writeln!(
                    out,
                    "  last run   #{} {} at {} ({})",
                    run.id,
                    run.status,
                    run.started_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
                    run.mode
                );
            }
            None => {
                let _ = writeln!(out, "  last run   none yet");
            }
        }
        let _ = writeln!(out, "  outbox     {} pending, {} dead", link.outbox.pending, link.outbox.dead);
        let _ = writeln!(
            out,
            "  reviews    {} open, {} decided and waiting for the next run",
            link.reviews.open, link.reviews.resolved
        );
    }
    out
}

/// What `check` found: each connector, each last-write-wins link's timing, and the verdict.
pub fn check(report: &CheckReport) -> String {
    let mut out = String::new();
    for (name, check) in &report.connectors {
        match (&check.probe, &check.error) {
            (Some(probe), _) => {
                let _ = writeln!(
                    out,
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
            (None, error) => {
                let _ = writeln!(out, "{name}: FAILED: {}", error.as_deref().unwrap_or_default());
            }
        }
    }
    for (name, note) in &report.conflict_timing {
        let _ = writeln!(out, "link {name}: {note}");
    }
    let _ = writeln!(
        out,
        "configuration {} is valid: {} links, {} connectors",
        report.config.display(),
        report.links.len(),
        report.connectors.len()
    );
    out
}

fn yes(flag: bool) -> &'static str {
    if flag { "yes" } else { "no" }
}
