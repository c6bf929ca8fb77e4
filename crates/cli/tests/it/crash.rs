//! Guarantee 7 end to end: `fieldsync run`, killed with SIGKILL at random instants while it syncs
//! two SQLite member tables, leaves every field at its old or its new value, keeps its state
//! store describing only verified work, and converges without losses, duplicates or spurious
//! conflicts. The seed is printed; `CRASH_SEED=<n>` replays a failure.
#![cfg(unix)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fieldsync_test_support::json;
use fieldsync_test_support::members::{fields_toml, link_toml, sqlite_connector_toml};
use rusqlite::{Connection, OpenFlags, params, params_from_iter};
use serde_json::Value;

use crate::support::fieldsync as binary;

/// Members both sides hold at the start (plus a few on one side only, and a few that differ).
const MEMBERS: usize = 3_000;
/// Kills that must land while the binary is running.
const MIN_KILLS: usize = 50;
/// Rounds at least, whatever the kills.
const MIN_ROUNDS: usize = 6;
/// Rounds at most; reaching it without enough kills fails the test.
const MAX_ROUNDS: usize = 60;
/// Unkilled runs a round may take to converge (the last one writes nothing).
const SETTLE_RUNS: usize = 5;
/// The round (after the first sync, which is round 0) that edits more than a delivery batch.
const BULK_ROUND: usize = 2;

/// The tracked fields, in the order of the configuration.
const FIELDS: [&str; 4] = ["name", "email", "street", "city"];
const NAMES: [&str; 12] =
    ["Anna", "Bram", "Daan", "Emma", "Fleur", "Jesse", "Lotte", "Milan", "Noor", "Sem", "Tess", "Yara"];
const STREETS: [&str; 8] =
    ["Dorpsstraat", "Kerkstraat", "Molenweg", "Schoolstraat", "Stationsweg", "Lindenlaan", "Markt", "Kade"];
const CITIES: [&str; 10] =
    ["Utrecht", "Leiden", "Zwolle", "Delft", "Gouda", "Breda", "Assen", "Venlo", "Emmen", "Hoorn"];

/// Normalised field values, in `FIELDS` order (`None`: null or empty).
type Values = [Option<String>; 4];
/// Link key → values.
type Members = BTreeMap<String, Values>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Left,
    Right,
}

const SIDES: [Side; 2] = [Side::Left, Side::Right];

/// How one side stores members: different table and column names on each side, a surrogate
/// record id, and a link key column without a UNIQUE constraint, so that a duplicate create
/// would show.
struct Table {
    file: &'static str,
    table: &'static str,
    key: &'static str,
    modified: &'static str,
    columns: [&'static str; 4],
}

impl Side {
    fn table(self) -> &'static Table {
        const LEFT: Table = Table {
            file: "left.db",
            table: "members",
            key: "knvb_id",
            modified: "updated_at",
            columns: ["first_name", "email", "street", "city"],
        };
        const RIGHT: Table = Table {
            file: "right.db",
            table: "people",
            key: "number",
            modified: "modified",
            columns: ["voornaam", "mail", "straat", "woonplaats"],
        };
        match self {
            Side::Left => &LEFT,
            Side::Right => &RIGHT,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Side::Left => "left",
            Side::Right => "right",
        }
    }
}

const POLICIES: &str = r#"creates = "both"
deletes = "propagate"
guard = { max_delete = "100%", max_change = "100%" }
"#;

/// The configuration: two member tables whose fields have other names on each side.
fn config() -> String {
    let fields = [
        ("name", "text", "first_name", "voornaam"),
        ("email", "email", "email", "mail"),
        ("street", "text", "street", "straat"),
        ("city", "text", "city", "woonplaats"),
    ];
    format!(
        "state = \"state.db\"\n\n{}overlap = \"30s\"\n\n{}overlap = \"30s\"\n\n{}{POLICIES}{}",
        sqlite_connector_toml("register", "left.db", "members", "id", "updated_at"),
        sqlite_connector_toml("website", "right.db", "people", "pid", "modified"),
        link_toml("members", "register", "website", ("knvb_id", "number"), "left"),
        fields_toml("members", &fields)
    )
}

/// What the link's normalisers make of a raw value: text trims, e-mail also lower-cases, and
/// empty is null.
fn normalise(field: usize, raw: Option<&str>) -> Option<String> {
    let text = raw?.trim();
    if text.is_empty() {
        return None;
    }
    Some(if field == 1 { text.to_lowercase() } else { text.to_string() })
}

fn now_secs() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()).unwrap()
}

fn now_ms() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

/// Makes raw values: unique where it matters (a sequence number), in varied raw forms.
struct Generator {
    rng: fastrand::Rng,
    seq: u64,
}

impl Generator {
    /// A raw value for `field` whose normalised form differs from `current` (and `avoid`),
    /// with that normalised form. Cities are sometimes emptied (null or '').
    fn fresh(
        &mut self,
        field: usize,
        current: &Option<String>,
        avoid: Option<&Option<String>>,
    ) -> (Option<String>, Option<String>) {
        loop {
            self.seq += 1;
            let seq = self.seq;
            let name = NAMES[self.rng.usize(..NAMES.len())];
            let raw = match field {
                0 => {
                    let text = format!("{name} {seq}");
                    Some(if self.rng.u8(..10) == 0 { format!("  {text} ") } else { text })
                }
                1 => {
                    let text = format!("{}.{seq}@club{}.nl", name.to_lowercase(), self.rng.u8(1..=3));
                    Some(if self.rng.bool() { text } else { format!("{name}.{seq}@Club.NL") })
                }
                2 => Some(format!("{} {}", STREETS[self.rng.usize(..STREETS.len())], seq % 500 + 1)),
                _ => {
                    if current.is_some() && self.rng.u8(..8) == 0 {
                        if self.rng.bool() { None } else { Some(String::new()) }
                    } else {
                        Some(CITIES[self.rng.usize(..CITIES.len())].to_string())
                    }
                }
            };
            let value = normalise(field, raw.as_deref());
            if value != *current && avoid != Some(&value) {
                return (raw, value);
            }
        }
    }

    /// A new member's raw values and normalised values.
    fn member(&mut self) -> ([Option<String>; 4], Values) {
        let mut raw: [Option<String>; 4] = Default::default();
        let mut values: Values = Default::default();
        for field in 0..FIELDS.len() {
            let (r, v) = self.fresh(field, &None, None);
            raw[field] = r;
            values[field] = v;
        }
        (raw, values)
    }

    /// The same normalised value in another raw form (a "touch": nothing really changes).
    fn other_form(&mut self, field: usize, value: &Option<String>) -> Option<String> {
        let value = value.as_ref()?;
        Some(match field {
            1 => value.to_uppercase(),
            _ if self.rng.bool() => format!(" {value}  "),
            _ => value.clone(),
        })
    }
}

/// One edit a person makes in one system.
#[derive(Clone, Debug)]
enum Edit {
    Update { side: Side, key: String, fields: Vec<(usize, Option<String>)>, at: i64 },
    Insert { side: Side, key: String, raw: [Option<String>; 4], at: i64 },
    Delete { side: Side, key: String },
}

impl Edit {
    fn side(&self) -> Side {
        match self {
            Edit::Update { side, .. } | Edit::Insert { side, .. } | Edit::Delete { side, .. } => *side,
        }
    }
}

/// A round's edits and what they must lead to.
struct Round {
    edits: Vec<Edit>,
    /// The expected members after convergence.
    oracle: Members,
    /// (key, field) pairs edited on both sides to different values.
    conflicts: BTreeSet<(String, String)>,
    deletes: usize,
    /// The keys of the records edited or created.
    touched: Vec<String>,
}

/// How far back a round's edit times reach. A record is edited only when nothing (neither a
/// person nor fieldsync) touched it since this long before the round, so every edit is later
/// than anything before it on its record, yet earlier than the writes fieldsync makes next.
const WINDOW: i64 = 20;

/// Plans a round of random edits on top of `oracle`, at times within `WINDOW` seconds before
/// `now`, of records last touched (`last_touch`, in seconds) before that.
fn plan_round(
    values: &mut Generator,
    oracle: &Members,
    last_touch: &BTreeMap<String, i64>,
    round: usize,
    bulk: bool,
    now: i64,
) -> Round {
    let start = now - WINDOW;
    let end = now - 1;
    let mut next = oracle.clone();
    let mut keys: Vec<String> = oracle
        .keys()
        .filter(|key| last_touch.get(*key).is_none_or(|touched| *touched < start))
        .cloned()
        .collect();
    values.rng.shuffle(&mut keys);
    let mut keys = keys.into_iter();
    let mut edits = Vec::new();
    let mut conflicts = BTreeSet::new();
    let (one_sided, both_fields, conflicting, same_value, touches, creates) =
        (if bulk { 1_100 } else { 50 }, 8, 10, 4, 5, 8);
    // Some rounds delete nothing, so that an incremental run may be the one to converge.
    let deletes = values.rng.usize(0..=4);
    // A bulk round edits mostly on the left, so that more than one delivery batch goes right.
    let left_share = if bulk { 8 } else { 5 };
    let side =
        move |rng: &mut fastrand::Rng| if rng.u8(..10) < left_share { Side::Left } else { Side::Right };

    // Field edits on one side: one or two fields.
    for key in keys.by_ref().take(one_sided) {
        let side = side(&mut values.rng);
        let mut fields = vec![values.rng.usize(..FIELDS.len())];
        if values.rng.bool() {
            let second = values.rng.usize(..FIELDS.len());
            if second != fields[0] {
                fields.push(second);
            }
        }
        let entry = next.get_mut(&key).unwrap();
        let mut raw_fields = Vec::new();
        for field in fields {
            let (raw, value) = values.fresh(field, &entry[field], None);
            entry[field] = value;
            raw_fields.push((field, raw));
        }
        let at = values.rng.i64(start..=end);
        edits.push(Edit::Update { side, key, fields: raw_fields, at });
    }
    // Different fields of the same record on both sides.
    for key in keys.by_ref().take(both_fields) {
        let first = values.rng.usize(..FIELDS.len());
        let second = (first + values.rng.usize(1..FIELDS.len())) % FIELDS.len();
        let entry = next.get_mut(&key).unwrap();
        for (side, field) in [(Side::Left, first), (Side::Right, second)] {
            let (raw, value) = values.fresh(field, &entry[field], None);
            entry[field] = value;
            let at = values.rng.i64(start..=end);
            edits.push(Edit::Update { side, key: key.clone(), fields: vec![(field, raw)], at });
        }
    }
    // The same field on both sides, to different values, far apart: the later edit wins. The
    // loser sometimes also edits another field, which goes through.
    for key in keys.by_ref().take(conflicting) {
        let field = values.rng.usize(..FIELDS.len());
        let winner = side(&mut values.rng);
        let loser = if winner == Side::Left { Side::Right } else { Side::Left };
        let entry = next.get_mut(&key).unwrap();
        let (win_raw, win_value) = values.fresh(field, &entry[field], None);
        let (lose_raw, _) = values.fresh(field, &entry[field], Some(&win_value));
        entry[field] = win_value;
        let mut lose_fields = vec![(field, lose_raw)];
        if values.rng.bool() {
            let other = (field + values.rng.usize(1..FIELDS.len())) % FIELDS.len();
            let (raw, value) = values.fresh(other, &entry[other], None);
            entry[other] = value;
            lose_fields.push((other, raw));
        }
        let lose_at = values.rng.i64(start..=start + 2);
        let win_at = values.rng.i64(start + 11..=start + 13);
        edits.push(Edit::Update { side: loser, key: key.clone(), fields: lose_fields, at: lose_at });
        edits.push(Edit::Update {
            side: winner,
            key: key.clone(),
            fields: vec![(field, win_raw)],
            at: win_at,
        });
        conflicts.insert((key, FIELDS[field].to_string()));
    }
    // The same field on both sides to the same value: no conflict, no write.
    for key in keys.by_ref().take(same_value) {
        let field = values.rng.usize(..FIELDS.len());
        let entry = next.get_mut(&key).unwrap();
        let (raw, value) = values.fresh(field, &entry[field], None);
        let other = values.other_form(field, &value).or(raw.clone());
        entry[field] = value;
        for (side, raw) in [(Side::Left, raw), (Side::Right, other)] {
            let at = values.rng.i64(start..=end);
            edits.push(Edit::Update { side, key: key.clone(), fields: vec![(field, raw)], at });
        }
    }
    // Touches: a new modified time, and maybe another raw form of the same value.
    for key in keys.by_ref().take(touches) {
        let side = side(&mut values.rng);
        let field = values.rng.usize(..FIELDS.len());
        let raw = values.other_form(field, &next[&key][field]);
        let at = values.rng.i64(start..=end);
        edits.push(Edit::Update { side, key, fields: vec![(field, raw)], at });
    }
    // Deletes on one side, of records nobody else touched this round.
    let mut deleted = 0;
    for key in keys.by_ref().take(deletes) {
        next.remove(&key);
        edits.push(Edit::Delete { side: side(&mut values.rng), key });
        deleted += 1;
    }
    // New members on either side, with keys never used before.
    for index in 0..creates {
        let key = format!("N{round:02}-{index:03}");
        let (raw, member) = values.member();
        next.insert(key.clone(), member);
        let at = values.rng.i64(start..=end);
        edits.push(Edit::Insert { side: side(&mut values.rng), key, raw, at });
    }
    values.rng.shuffle(&mut edits);
    let touched = edits
        .iter()
        .filter_map(|edit| match edit {
            Edit::Update { key, .. } | Edit::Insert { key, .. } => Some(key.clone()),
            Edit::Delete { .. } => None,
        })
        .collect();
    Round { edits, oracle: next, conflicts, deletes: deleted, touched }
}

fn open(dir: &Path, side: Side) -> Connection {
    let connection = Connection::open(dir.join(side.table().file)).unwrap();
    connection.busy_timeout(Duration::from_secs(10)).unwrap();
    connection
}

/// Applies edits as the systems' own users would, one transaction per side.
fn apply(dir: &Path, edits: &[Edit]) {
    for side in SIDES {
        let table = side.table();
        let mut connection = open(dir, side);
        let transaction = connection.transaction().unwrap();
        for edit in edits.iter().filter(|edit| edit.side() == side) {
            match edit {
                Edit::Update { key, fields, at, .. } => {
                    let mut sets: Vec<String> =
                        fields.iter().map(|(field, _)| format!("{} = ?", table.columns[*field])).collect();
                    sets.push(format!("{} = datetime(?, 'unixepoch')", table.modified));
                    let sql =
                        format!("UPDATE {} SET {} WHERE {} = ?", table.table, sets.join(", "), table.key);
                    let mut values: Vec<rusqlite::types::Value> =
                        fields.iter().map(|(_, raw)| raw.clone().into()).collect();
                    values.push((*at).into());
                    values.push(key.clone().into());
                    let changed = transaction.execute(&sql, params_from_iter(values)).unwrap();
                    assert_eq!(changed, 1, "updating {key} on the {} side", side.name());
                }
                Edit::Insert { key, raw, at, .. } => {
                    let sql = format!(
                        "INSERT INTO {} ({}, {}, {}) VALUES (?1, ?2, ?3, ?4, ?5, datetime(?6, 'unixepoch'))",
                        table.table,
                        table.key,
                        table.columns.join(", "),
                        table.modified
                    );
                    transaction.execute(&sql, params![key, raw[0], raw[1], raw[2], raw[3], at]).unwrap();
                }
                Edit::Delete { key, .. } => {
                    let sql = format!("DELETE FROM {} WHERE {} = ?", table.table, table.key);
                    let changed = transaction.execute(&sql, [key]).unwrap();
                    assert_eq!(changed, 1, "deleting {key} on the {} side", side.name());
                }
            }
        }
        transaction.commit().unwrap();
    }
}

/// What a side holds now, normalised, and the link keys it holds more than once.
fn read_side(dir: &Path, side: Side) -> (Members, Vec<String>) {
    let table = side.table();
    let connection = open(dir, side);
    let sql = format!("SELECT {}, {} FROM {}", table.key, table.columns.join(", "), table.table);
    let mut statement = connection.prepare(&sql).unwrap();
    let mut rows = statement.query([]).unwrap();
    let mut members = Members::new();
    let mut duplicates = Vec::new();
    while let Some(row) = rows.next().unwrap() {
        let key: String = row.get(0).unwrap();
        let mut values: Values = Default::default();
        for (field, value) in values.iter_mut().enumerate() {
            *value = normalise(field, row.get::<_, Option<String>>(field + 1).unwrap().as_deref());
        }
        if members.insert(key.clone(), values).is_some() {
            duplicates.push(key);
        }
    }
    (members, duplicates)
}

fn integrity_check(connection: &Connection, what: &str) {
    let answer: String = connection.query_row("PRAGMA integrity_check", [], |row| row.get(0)).unwrap();
    assert_eq!(answer, "ok", "PRAGMA integrity_check of {what}");
}

/// `PRAGMA quick_check`: the integrity check without cross-checking indexes, for the state
/// store after each kill (its audit trail grows with every run).
fn quick_check(connection: &Connection, what: &str) {
    let answer: String = connection.query_row("PRAGMA quick_check", [], |row| row.get(0)).unwrap();
    assert_eq!(answer, "ok", "PRAGMA quick_check of {what}");
}

/// The state store, opened read-only (it is SQLite in WAL mode), once it has its tables.
fn try_state(dir: &Path) -> Option<Connection> {
    let path = dir.join("state.db");
    if !path.exists() {
        return None;
    }
    let connection = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
    connection.busy_timeout(Duration::from_secs(10)).ok()?;
    let tables: i64 = connection
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name IN ('runs', 'outbox', 'baselines')",
            [],
            |row| row.get(0),
        )
        .ok()?;
    (tables == 3).then_some(connection)
}

/// The state store, read-only, if a run has made it.
fn state(dir: &Path) -> Option<Connection> {
    try_state(dir)
}

/// The baselines of the state store: key → agreed values (`None` for a field: never agreed).
fn baselines(state: &Connection) -> BTreeMap<String, [Option<Option<String>>; 4]> {
    let mut layouts: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    let mut statement = state.prepare("SELECT id, fields FROM layouts").unwrap();
    let mut rows = statement.query([]).unwrap();
    while let Some(row) = rows.next().unwrap() {
        let fields: String = row.get(1).unwrap();
        layouts.insert(row.get(0).unwrap(), serde_json::from_str(&fields).unwrap());
    }
    let mut found = BTreeMap::new();
    let mut statement = state
        .prepare("SELECT key, layout, field_values, tombstone FROM baselines WHERE link = 'members'")
        .unwrap();
    let mut rows = statement.query([]).unwrap();
    while let Some(row) = rows.next().unwrap() {
        let key: String = row.get(0).unwrap();
        let layout = &layouts[&row.get::<_, i64>(1).unwrap()];
        let values: Vec<Value> = serde_json::from_str(&row.get::<_, String>(2).unwrap()).unwrap();
        let tombstone: Option<String> = row.get(3).unwrap();
        assert_eq!(tombstone, None, "record {key} has a tombstone, but deletes propagate");
        let mut agreed: [Option<Option<String>>; 4] = Default::default();
        for (name, value) in layout.iter().zip(values) {
            let index = FIELDS.iter().position(|field| field == name).unwrap();
            agreed[index] = match value {
                Value::Null => Some(None),
                Value::String(text) => Some(Some(text)),
                Value::Object(map) if map.is_empty() => None,
                other => panic!("record {key}: baseline value {other} of {name}"),
            };
        }
        found.insert(key, agreed);
    }
    found
}

/// One unkilled `fieldsync run --json`: its report and how long it took.
fn run(dir: &Path, full: bool) -> (Value, Duration) {
    let mut args = vec!["run", "--json"];
    if full {
        args.push("--full");
    }
    let run = binary(dir).run_ending("run", &args[2..], 0);
    (run.report(), run.took)
}

fn writes_done(report: &Value) -> u64 {
    report["stats"]["writes_done"].as_u64().unwrap()
}

/// A run right after one that finished: fieldsync's own writes must not come back as changes,
/// and every verified write must have moved its baseline, so no record differs from its
/// baseline (deletes that an incremental run could not see aside).
fn assert_quiet(report: &Value, context: &str) {
    let stats = &report["stats"];
    let mut counts = vec![];
    for count in ["compared", "conflicts_resolved", "false_conflicts", "reviews_open"] {
        counts.push((count.to_string(), &stats[count]));
    }
    for side in ["left", "right"] {
        for count in ["updates_planned", "creates_planned"] {
            counts.push((format!("{side} {count}"), &stats[side][count]));
        }
    }
    let nonzero: Vec<String> = counts
        .into_iter()
        .filter(|(_, count)| **count != 0)
        .map(|(name, count)| format!("{name} {count}"))
        .collect();
    if nonzero.is_empty() {
        return;
    }
    let lines: Vec<String> = report["lines"]
        .as_array()
        .map(|lines| {
            lines
                .iter()
                .take(10)
                .map(|line| {
                    let text = |name: &str| line[name].as_str().unwrap_or("-").to_string();
                    format!("{}.{}: {} ({})", text("key"), text("field"), text("action"), text("reason"))
                })
                .collect()
        })
        .unwrap_or_default();
    panic!(
        "{context}: after a run that finished, the next one found work ({}):\n{}\nstatistics: {stats}",
        nonzero.join(", "),
        lines.join("\n")
    );
}

/// Open outbox entries by status.
fn open_outbox(dir: &Path) -> BTreeMap<String, i64> {
    let Some(state) = state(dir) else { return BTreeMap::new() };
    let mut statement = state
        .prepare("SELECT status, count(*) FROM outbox WHERE status IN ('pending', 'sending', 'dead') GROUP BY status")
        .unwrap();
    statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?))).unwrap().collect::<Result<_, _>>().unwrap()
}

/// How far a run got, as its traces in the state store tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// No run row yet: starting up, opening the store, taking the lock.
    Starting,
    /// The run row exists; the plan is not committed.
    Reading,
    /// The plan is committed (outbox entries written); nothing sent yet.
    Planned,
    /// Entries are being sent or closed.
    Writing,
    /// The run row is finished; printing the report and exiting.
    Recording,
}

const PHASES: [Phase; 5] =
    [Phase::Starting, Phase::Reading, Phase::Planned, Phase::Writing, Phase::Recording];

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Reading => "reading/planning",
            Phase::Planned => "planned",
            Phase::Writing => "writing",
            Phase::Recording => "recording",
        }
    }
}

/// The phase of the run started after run `runs_before`, at `started_ms`.
fn observe(dir: &Path, runs_before: i64, started_ms: i64) -> Phase {
    try_state(dir).map_or(Phase::Starting, |state| observe_in(&state, runs_before, started_ms))
}

fn observe_in(state: &Connection, runs_before: i64, started_ms: i64) -> Phase {
    let Ok((run_id, status)) = state.query_row(
        "SELECT id, status FROM runs WHERE link = 'members' ORDER BY id DESC LIMIT 1",
        [],
        |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)),
    ) else {
        return Phase::Starting;
    };
    if run_id <= runs_before {
        return Phase::Starting;
    }
    if status != "running" {
        return Phase::Recording;
    }
    let count = |sql: &str| -> i64 { state.query_row(sql, [started_ms], |row| row.get(0)).unwrap_or(0) };
    if count("SELECT count(*) FROM outbox WHERE updated_ms >= ?1 AND status IN ('sending', 'done')") > 0 {
        Phase::Writing
    } else if count("SELECT count(*) FROM outbox WHERE updated_ms >= ?1") > 0 {
        Phase::Planned
    } else {
        Phase::Reading
    }
}

/// When each phase of a timed, unkilled run began (ms after its spawn), and when it exited.
#[derive(Clone, Copy, Debug)]
struct Profile {
    begins: [u64; 5],
    exited: u64,
}

impl Profile {
    /// A delay that kills a run like this one in a phase picked at random, weighted towards
    /// the phases that write.
    fn delay(&self, rng: &mut fastrand::Rng) -> Duration {
        const WEIGHTS: [u32; 5] = [1, 3, 1, 4, 1];
        let ends: Vec<u64> = (0..PHASES.len())
            .map(|index| self.begins.get(index + 1).copied().unwrap_or(self.exited))
            .collect();
        let total: u32 = (0..PHASES.len())
            .filter(|&index| ends[index] > self.begins[index])
            .map(|index| WEIGHTS[index])
            .sum();
        let mut pick = rng.u32(..total.max(1));
        for index in 0..PHASES.len() {
            if ends[index] <= self.begins[index] {
                continue;
            }
            if pick < WEIGHTS[index] {
                return Duration::from_millis(rng.u64(self.begins[index]..ends[index]));
            }
            pick -= WEIGHTS[index];
        }
        Duration::from_millis(rng.u64(..=self.exited))
    }
}

/// One unkilled `fieldsync run`, watched through the state store to time its phases.
fn profiled_run(dir: &Path, full: bool) -> Profile {
    let runs_before = last_run_id(dir);
    let started_ms = now_ms();
    let started = Instant::now();
    let mut child = spawn(dir, full);
    let mut begins: [Option<u64>; 5] = [Some(0), None, None, None, None];
    let mut state = None;
    loop {
        let exited = child.try_wait().unwrap();
        if state.is_none() {
            state = try_state(dir);
        }
        let phase =
            state.as_ref().map_or(Phase::Starting, |state| observe_in(state, runs_before, started_ms));
        let now = u64::try_from(started.elapsed().as_millis()).unwrap();
        for begin in begins.iter_mut().take(phase as usize + 1) {
            begin.get_or_insert(now);
        }
        if let Some(status) = exited {
            assert!(
                status.success(),
                "a timed run failed:\n{}",
                std::fs::read_to_string(dir.join("run.stderr")).unwrap_or_default()
            );
            let mut profile = Profile { begins: [0; 5], exited: now };
            let mut next = now;
            for index in (0..PHASES.len()).rev() {
                next = begins[index].unwrap_or(next);
                profile.begins[index] = next;
            }
            return profile;
        }
        std::thread::sleep(Duration::from_millis(3));
    }
}

/// Where to aim the kills of one kind of run: its timed phases, scaled by how long such runs
/// take now (learnt from the runs that finished before their kill).
struct Aim {
    profile: Profile,
    scale: f64,
}

impl Aim {
    fn delay(&self, rng: &mut fastrand::Rng) -> Duration {
        self.profile.delay(rng).mul_f64(self.scale)
    }

    /// A phase to aim a kill at.
    fn target(rng: &mut fastrand::Rng) -> Phase {
        match rng.u8(..8) {
            0..=1 => Phase::Reading,
            2 => Phase::Planned,
            3..=6 => Phase::Writing,
            _ => Phase::Recording,
        }
    }

    /// How long after `phase` began to kill: a random part of how long it lasts.
    fn delay_in(&self, phase: Phase, rng: &mut fastrand::Rng) -> Duration {
        let index = phase as usize;
        let end = self.profile.begins.get(index + 1).copied().unwrap_or(self.profile.exited);
        let length = end.saturating_sub(self.profile.begins[index]) as f64 * self.scale;
        if phase == Phase::Planned {
            return Duration::ZERO;
        }
        Duration::from_millis(rng.u64(..=length as u64))
    }

    fn learn(&mut self, took: Duration) {
        let measured = took.as_secs_f64() * 1000.0 / self.profile.exited.max(1) as f64;
        self.scale = (self.scale + measured) / 2.0;
    }
}

/// Starts `fieldsync run` (with `--full`), its output to files in `dir`.
fn spawn(dir: &Path, full: bool) -> std::process::Child {
    let mut args = vec!["run"];
    if full {
        args.push("--full");
    }
    binary(dir)
        .command(&args)
        .stdout(std::fs::File::create(dir.join("run.stdout")).unwrap())
        .stderr(std::fs::File::create(dir.join("run.stderr")).unwrap())
        .spawn()
        .unwrap()
}

fn last_run_id(dir: &Path) -> i64 {
    state(dir).map_or(0, |state| {
        state.query_row("SELECT coalesce(max(id), 0) FROM runs", [], |row| row.get(0)).unwrap()
    })
}

/// The checks after a kill: both member files are sound, no link key is doubled, every field
/// holds the value it had before the runs of the round or its final value, and every baseline
/// that moved in the round describes a value both sides hold.
fn check_after_kill(
    dir: &Path,
    before: &[Members; 2],
    round_start: &Members,
    oracle: &Members,
    context: &str,
) -> Result<(), String> {
    let mut problems = String::new();
    let mut now: Vec<Members> = Vec::new();
    for side in SIDES {
        integrity_check(&open(dir, side), &format!("{} ({context})", side.table().file));
        let (members, duplicates) = read_side(dir, side);
        if !duplicates.is_empty() {
            let _ = writeln!(problems, "{} side holds link keys twice: {duplicates:?}", side.name());
        }
        let old = &before[side as usize];
        let keys: BTreeSet<&String> = members.keys().chain(old.keys()).chain(oracle.keys()).collect();
        for key in keys {
            match (members.get(key), old.get(key), oracle.get(key)) {
                (None, Some(_), Some(_)) => {
                    let _ = writeln!(problems, "{} side lost record {key}", side.name());
                }
                (Some(_), None, None) => {
                    let _ = writeln!(problems, "{} side has a record {key} nobody made", side.name());
                }
                (Some(current), old, new) => {
                    for field in 0..FIELDS.len() {
                        let value = &current[field];
                        let allowed = old.is_some_and(|old| old[field] == *value)
                            || new.is_some_and(|new| new[field] == *value);
                        if !allowed {
                            let _ = writeln!(
                                problems,
                                "{} side, record {key}, field {}: {} is neither the old {} nor the new {}",
                                side.name(),
                                FIELDS[field],
                                show(Some(value)),
                                show(old.map(|old| &old[field])),
                                show(new.map(|new| &new[field])),
                            );
                        }
                    }
                }
                _ => {}
            }
        }
        now.push(members);
    }
    if let Some(state) = state(dir) {
        quick_check(&state, &format!("state.db ({context})"));
        let baselines = baselines(&state);
        for (key, agreed) in &baselines {
            for field in 0..FIELDS.len() {
                let Some(value) = &agreed[field] else { continue };
                if round_start.get(key).is_some_and(|start| start[field] == *value) {
                    continue;
                }
                let held = |side: usize| now[side].get(key).map(|values| &values[field]);
                if held(0) != Some(value) || held(1) != Some(value) {
                    let _ = writeln!(
                        problems,
                        "the baseline of {key}.{} moved to {}, but the left side holds {} and the right {}",
                        FIELDS[field],
                        show(Some(value)),
                        show(held(0)),
                        show(held(1))
                    );
                }
            }
        }
        for key in round_start.keys().filter(|key| !baselines.contains_key(*key)) {
            if now[0].contains_key(key) || now[1].contains_key(key) {
                let _ = writeln!(problems, "the baseline of {key} is gone, but the record is not");
            }
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let lines: Vec<&str> = problems.lines().collect();
    let mut shown = lines.iter().take(20).copied().collect::<Vec<_>>().join("\n");
    if lines.len() > 20 {
        let _ = write!(shown, "\n… and {} more", lines.len() - 20);
    }
    Err(shown)
}

/// A field's value for people: `"text"`, `null`, or `no record`.
fn show(value: Option<&Option<String>>) -> String {
    match value {
        None => "no record".to_string(),
        Some(None) => "null".to_string(),
        Some(Some(text)) => format!("{text:?}"),
    }
}

/// The checks after a round has converged.
fn check_converged(
    dir: &Path,
    oracle: &Members,
    conflicts: &BTreeSet<(String, String)>,
    audit_from: i64,
    context: &str,
) {
    for side in SIDES {
        let connection = open(dir, side);
        integrity_check(&connection, &format!("{} ({context})", side.table().file));
        let count: i64 = connection
            .query_row(&format!("SELECT count(*) FROM {}", side.table().table), [], |row| row.get(0))
            .unwrap();
        let count = usize::try_from(count).unwrap();
        let (members, duplicates) = read_side(dir, side);
        assert!(
            duplicates.is_empty(),
            "{context}: the {} side holds link keys twice: {duplicates:?}",
            side.name()
        );
        assert_eq!(count, oracle.len(), "{context}: the {} side holds {count} members", side.name());
        let mut differences = Vec::new();
        for key in oracle.keys().chain(members.keys()).collect::<BTreeSet<_>>() {
            if members.get(key) != oracle.get(key) {
                differences.push(format!(
                    "{key}: expected {:?}, {} holds {:?}",
                    oracle.get(key),
                    side.name(),
                    members.get(key)
                ));
            }
        }
        assert!(
            differences.is_empty(),
            "{context}: {} differences on the {} side, e.g.\n{}",
            differences.len(),
            side.name(),
            differences.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
        );
    }
    let state = state(dir).unwrap();
    integrity_check(&state, &format!("state.db ({context})"));
    let baselines = baselines(&state);
    assert_eq!(
        baselines.keys().collect::<Vec<_>>(),
        oracle.keys().collect::<Vec<_>>(),
        "{context}: the baselines name other records than both sides hold"
    );
    for (key, agreed) in &baselines {
        let expected: Vec<Option<Option<String>>> = oracle[key].iter().cloned().map(Some).collect();
        assert_eq!(agreed.to_vec(), expected, "{context}: the baseline of {key}");
    }
    let open = open_outbox(dir);
    assert!(open.is_empty(), "{context}: outbox entries left open: {open:?}");
    let reviews: i64 = state
        .query_row("SELECT count(*) FROM reviews WHERE status IN ('open', 'resolved')", [], |row| row.get(0))
        .unwrap();
    assert_eq!(reviews, 0, "{context}: reviews were opened, but no edit called for one");
    let mut statement = state
        .prepare(
            "SELECT key, field, event, reason FROM audit WHERE id > ?1 AND \
             (event = 'review' OR (event = 'resolved' AND reason LIKE 'conflict%'))",
        )
        .unwrap();
    let decisions: Vec<(String, Option<String>, String, String)> = statement
        .query_map([audit_from], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (key, field, event, reason) in decisions {
        let expected = field.as_ref().is_some_and(|field| conflicts.contains(&(key.clone(), field.clone())));
        assert!(
            expected && event == "resolved" && reason.contains("last write wins"),
            "{context}: a spurious decision on {key}.{field:?}: {event}: {reason}"
        );
    }
}

fn last_audit_id(dir: &Path) -> i64 {
    state(dir).map_or(0, |state| {
        state.query_row("SELECT coalesce(max(id), 0) FROM audit", [], |row| row.get(0)).unwrap()
    })
}

/// Two member tables with `MEMBERS` shared members (some on one side only, some differing)
/// and the configuration; returns the expected members after the first sync.
fn setup(dir: &Path, values: &mut Generator, at: i64) -> Members {
    let left = open(dir, Side::Left);
    left.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE members (id INTEGER PRIMARY KEY, knvb_id TEXT, first_name TEXT, email TEXT,
             street TEXT, city TEXT, updated_at TEXT NOT NULL);
         CREATE INDEX members_knvb_id ON members (knvb_id);",
    )
    .unwrap();
    let right = open(dir, Side::Right);
    right
        .execute_batch(
            "CREATE TABLE people (pid INTEGER PRIMARY KEY AUTOINCREMENT, number TEXT, voornaam TEXT,
                 mail TEXT, straat TEXT, woonplaats TEXT, modified TEXT NOT NULL);
             CREATE INDEX people_number ON people (number);",
        )
        .unwrap();
    drop((left, right));
    std::fs::write(dir.join("fieldsync.toml"), config()).unwrap();
    let mut oracle = Members::new();
    let mut edits = Vec::new();
    for number in 0..MEMBERS + 80 {
        let key = format!("K{number:05}");
        let (raw, member) = values.member();
        let sides: &[Side] = match number {
            n if n < MEMBERS => &SIDES,
            n if n < MEMBERS + 40 => &[Side::Left],
            _ => &[Side::Right],
        };
        for &side in sides {
            let mut raw = raw.clone();
            if side == Side::Right {
                // Another raw form of the same values, and now and then a different value:
                // the first sync prefers the left side.
                for field in 0..FIELDS.len() {
                    raw[field] = values.other_form(field, &member[field]);
                }
                if number % 100 == 7 {
                    let field = number / 100 % FIELDS.len();
                    let (other, _) = values.fresh(field, &member[field], None);
                    raw[field] = other;
                }
            }
            edits.push(Edit::Insert { side, key: key.clone(), raw, at });
        }
        oracle.insert(key, member);
    }
    apply(dir, &edits);
    oracle
}

fn copy_setup(from: &Path, to: &Path) {
    for file in ["left.db", "left.db-wal", "right.db", "fieldsync.toml"] {
        if from.join(file).exists() {
            std::fs::copy(from.join(file), to.join(file)).unwrap();
        }
    }
}

#[test]
fn guarantee_07_kill_9_at_any_instant_converges() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .map(|seed| seed.parse().expect("CRASH_SEED is a number"))
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("crash test seed: {seed} (CRASH_SEED={seed} replays it)");
    let test_started = Instant::now();
    let mut values = Generator { rng: fastrand::Rng::with_seed(seed), seq: 0 };
    // Kill timing and run modes draw from their own generator, so that the edits of a seed
    // do not depend on how the kills went (the records eligible for editing still depend on
    // the clock, so a replay is exact for the first rounds only).
    let mut chance = fastrand::Rng::with_seed(seed.rotate_left(17) ^ 0x6b69_6c6c);
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let first_sync_oracle = setup(dir, &mut values, now_secs() - 86_400);

    // First, timed runs nobody kills, on a copy: the first sync, incremental runs after a
    // round of edits and after a bulk round, and a full run after a round. Kills are aimed
    // at the phases these runs went through.
    let scratch = tempfile::tempdir().unwrap();
    copy_setup(dir, scratch.path());
    let mut scratch_values = Generator { rng: fastrand::Rng::with_seed(seed ^ 0x5eed), seq: 1 << 40 };
    let first_sync = profiled_run(scratch.path(), false);
    let mut scratch_oracle = first_sync_oracle.clone();
    let mut profile_after = |bulk: bool, full: bool, round: usize| {
        let planned =
            plan_round(&mut scratch_values, &scratch_oracle, &BTreeMap::new(), round, bulk, now_secs());
        apply(scratch.path(), &planned.edits);
        scratch_oracle = planned.oracle;
        profiled_run(scratch.path(), full)
    };
    let incremental = profile_after(false, false, 97);
    let bulk = profile_after(true, false, 98);
    let full = profile_after(false, true, 99);
    drop(scratch);
    eprintln!(
        "timed unkilled runs (phase starts in ms: starting, reading/planning, planned, writing, recording; exit):\n  \
         first sync {first_sync:?}\n  incremental {incremental:?}\n  bulk {bulk:?}\n  full {full:?}"
    );
    let mut aims = [first_sync, incremental, bulk, full].map(|profile| Aim { profile, scale: 1.0 });

    let mut oracle = Members::new();
    let mut last_touch: BTreeMap<String, i64> = BTreeMap::new();
    let mut kills = 0;
    let mut late_kills = 0;
    let mut attempts = 0;
    let mut settle_runs = 0;
    let mut phases: BTreeMap<&str, usize> = BTreeMap::new();
    let mut round = 0;
    while round < MIN_ROUNDS || kills < MIN_KILLS {
        assert!(round < MAX_ROUNDS, "seed {seed}: only {kills} kills landed in {MAX_ROUNDS} rounds");
        let round_start = oracle.clone();
        let is_bulk = round == BULK_ROUND;
        let (next, conflicts, deletes, mut touched) = if round == 0 {
            (first_sync_oracle.clone(), BTreeSet::new(), 0, Vec::new())
        } else {
            let planned = plan_round(&mut values, &oracle, &last_touch, round, is_bulk, now_secs());
            apply(dir, &planned.edits);
            (planned.oracle, planned.conflicts, planned.deletes, planned.touched)
        };
        oracle = next;
        let before = [read_side(dir, Side::Left).0, read_side(dir, Side::Right).0];
        // Whatever differs between the sides now is written by fieldsync in this round.
        touched.extend(
            before[0]
                .keys()
                .chain(before[1].keys())
                .filter(|key| before[0].get(*key) != before[1].get(*key))
                .cloned(),
        );
        let audit_from = last_audit_id(dir);

        // Runs killed at a random instant: three to six kills, until a run finishes first (the
        // runs after it would find nothing left to do).
        let round_kills = chance.usize(3..=6);
        let mut killed = 0;
        let mut finished_before = false;
        for attempt in 0.. {
            let full_run = round == 0 || (!is_bulk && chance.u8(..10) < 3);
            let aim = match (round, is_bulk, full_run) {
                (0, _, _) => &mut aims[0],
                (_, true, _) => &mut aims[2],
                (_, false, true) => &mut aims[3],
                (_, false, false) => &mut aims[1],
            };
            // Half the kills come after a random delay; the other half are aimed at a phase
            // (seen in the state store) and land a random time into it.
            let target = chance.bool().then(|| Aim::target(&mut chance));
            let mut kill_at = match target {
                None => Some(aim.delay(&mut chance)),
                Some(_) => None,
            };
            let description = match (target, kill_at) {
                (Some(phase), _) => format!("while {}", phase.name()),
                (None, Some(delay)) => format!("after {delay:?}"),
                (None, None) => unreachable!(),
            };
            let runs_before = last_run_id(dir);
            let started_ms = now_ms();
            let started = Instant::now();
            let mut child = spawn(dir, full_run);
            let mut state = None;
            loop {
                if child.try_wait().unwrap().is_some() {
                    // Finished first: this tells how long such runs take now.
                    aim.learn(started.elapsed());
                    break;
                }
                if let Some(at) = kill_at {
                    if started.elapsed() >= at {
                        break;
                    }
                } else if let Some(target) = target {
                    if state.is_none() {
                        state = try_state(dir);
                    }
                    let phase = state
                        .as_ref()
                        .map_or(Phase::Starting, |state| observe_in(state, runs_before, started_ms));
                    if phase >= target {
                        kill_at = Some(started.elapsed() + aim.delay_in(phase, &mut chance));
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            drop(state);
            let _ = child.kill();
            let status = child.wait().unwrap();
            attempts += 1;
            let context = format!(
                "seed {seed}, round {round}, attempt {attempt} (fieldsync run{} killed {description}, at {:?})",
                if full_run { " --full" } else { "" },
                started.elapsed()
            );
            let was_killed = status.signal() == Some(9);
            finished_before |= !was_killed;
            if was_killed {
                kills += 1;
                killed += 1;
                *phases.entry(observe(dir, runs_before, started_ms).name()).or_default() += 1;
            } else {
                late_kills += 1;
                assert!(
                    status.success(),
                    "{context}: the run ended with {status} before the kill:\n{}",
                    std::fs::read_to_string(dir.join("run.stderr")).unwrap_or_default()
                );
            }
            let checked = check_after_kill(dir, &before, &round_start, &oracle, &context);
            if let Err(problems) = checked {
                panic!("{context}:\n{problems}");
            }
            if !was_killed || killed == round_kills {
                break;
            }
        }

        // Then runs nobody kills, until one writes nothing.
        let context = format!("seed {seed}, round {round}");
        let mut converged = false;
        for settle in 0..SETTLE_RUNS {
            let full_run = (settle == 0 && deletes > 0) || chance.u8(..10) < 2;
            let (report, _) = run(dir, full_run);
            settle_runs += 1;
            if finished_before {
                assert_quiet(&report, &format!("{context}, unkilled run {settle}"));
            }
            finished_before = true;
            let failures = report["failures"].as_array().map_or(0, Vec::len);
            if writes_done(&report) == 0 && failures == 0 && open_outbox(dir).is_empty() {
                converged = true;
                break;
            }
        }
        assert!(converged, "{context}: still writing after {SETTLE_RUNS} unkilled runs");
        check_converged(dir, &oracle, &conflicts, audit_from, &context);
        let touched_at = now_secs() + 1;
        last_touch.extend(touched.into_iter().map(|key| (key, touched_at)));
        round += 1;
    }

    // At the end: nothing pending or held, and a full run writes nothing.
    for status in ["pending", "sending", "dead"] {
        let listed = json(&binary(dir).output(&["outbox", "list", "--status", status, "--json"]));
        assert_eq!(listed, serde_json::json!([]), "seed {seed}: {status} outbox entries remain");
    }
    let reviews = json(&binary(dir).output(&["conflicts", "list", "--json"]));
    assert_eq!(reviews, serde_json::json!([]), "seed {seed}: open reviews remain");
    let audit_from = last_audit_id(dir);
    let (report, _) = run(dir, true);
    assert_eq!(writes_done(&report), 0, "seed {seed}: the final full run wrote: {report:#}");
    assert_quiet(&report, &format!("seed {seed}, the final full run"));
    check_converged(dir, &oracle, &BTreeSet::new(), audit_from, &format!("seed {seed}, at the end"));

    eprintln!(
        "crash test seed {seed}: {kills} kills while running ({phases:?}); {late_kills} runs finished before \
         their kill; {attempts} killed attempts, {settle_runs} unkilled runs, {round} rounds, {} members at \
         the end; {:?}",
        oracle.len(),
        test_started.elapsed()
    );
}
