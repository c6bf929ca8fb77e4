//! The floor: what the same SQLite library does with the same files and no engine — reading
//! every row (or the rows changed since a time, by index) and writing the rows a scenario
//! must write, in one prepared statement and one transaction per table.

use std::path::Path;

use anyhow::{Result, bail};
use rusqlite::types::{ToSqlOutput, ValueRef};

use crate::generate::{LEFT_TABLE, RIGHT_TABLE, open};

/// A raw operation on a scenario's files.
#[derive(Clone, Debug)]
pub enum Op {
    /// Reads every row and every column of a table.
    Scan { file: String, table: String },
    /// Reads the rows modified at or after `since` (by the modified column's index).
    ScanSince { file: String, table: String, column: String, since: rusqlite::types::Value },
    /// Reads every row of `from` and inserts it into the empty `to` (same column count).
    Copy { from: String, from_table: String, to: String, to_table: String },
    /// Updates `count` rows of a table by primary key, one column each.
    Update { file: String, table: String, count: u64 },
}

impl Op {
    /// The floor of each scenario.
    pub fn for_scenario(scenario: &str, changes: u64, since_ms: i64) -> Result<Vec<Op>> {
        let scan = |file: &str, table: &str| Op::Scan { file: file.into(), table: table.into() };
        let since = |file: &str, table: &str, column: &str, since: rusqlite::types::Value| Op::ScanSince {
            file: file.into(),
            table: table.into(),
            column: column.into(),
            since,
        };
        let update =
            |file: &str, table: &str| Op::Update { file: file.into(), table: table.into(), count: changes };
        let left_since = rusqlite::types::Value::Text(
            jiff::Timestamp::from_millisecond(since_ms)?.strftime("%Y-%m-%d %H:%M:%S").to_string(),
        );
        let right_since = rusqlite::types::Value::Integer(since_ms);
        Ok(match scenario {
            "initial_create" => vec![Op::Copy {
                from: "left.db".into(),
                from_table: LEFT_TABLE.into(),
                to: "right.db".into(),
                to_table: RIGHT_TABLE.into(),
            }],
            // Reading both sides, and writing one row per member (the baselines).
            "initial_equal" => vec![
                scan("right.db", RIGHT_TABLE),
                Op::Copy {
                    from: "left.db".into(),
                    from_table: LEFT_TABLE.into(),
                    to: "floor.db".into(),
                    to_table: "baselines".into(),
                },
            ],
            "nochange_full" | "full_after_create" => {
                vec![
                    scan("left.db", LEFT_TABLE),
                    scan("right.db", RIGHT_TABLE),
                    scan("state.db", "baselines"),
                ]
            }
            "nochange_incremental" => vec![
                since("left.db", LEFT_TABLE, "updated_at", left_since),
                since("right.db", RIGHT_TABLE, "modified", right_since),
            ],
            "delta_incremental" => vec![
                since("left.db", LEFT_TABLE, "updated_at", left_since),
                since("right.db", RIGHT_TABLE, "modified", right_since),
                update("left.db", LEFT_TABLE),
                update("right.db", RIGHT_TABLE),
            ],
            "delta_full" => vec![
                scan("left.db", LEFT_TABLE),
                scan("right.db", RIGHT_TABLE),
                scan("state.db", "baselines"),
                update("left.db", LEFT_TABLE),
                update("right.db", RIGHT_TABLE),
            ],
            other => bail!("no floor for scenario {other}"),
        })
    }

    /// Encodes the operation as command-line words.
    pub fn to_args(&self) -> Vec<String> {
        match self {
            Op::Scan { file, table } => vec!["scan".into(), file.clone(), table.clone()],
            Op::ScanSince { file, table, column, since } => {
                let since = match since {
                    rusqlite::types::Value::Integer(ms) => format!("i:{ms}"),
                    rusqlite::types::Value::Text(text) => format!("t:{text}"),
                    _ => String::new(),
                };
                vec!["since".into(), file.clone(), table.clone(), column.clone(), since]
            }
            Op::Copy { from, from_table, to, to_table } => {
                vec!["copy".into(), from.clone(), from_table.clone(), to.clone(), to_table.clone()]
            }
            Op::Update { file, table, count } => {
                vec!["update".into(), file.clone(), table.clone(), count.to_string()]
            }
        }
    }

    /// Decodes operations from command-line words.
    pub fn parse_all(words: &[String]) -> Result<Vec<Op>> {
        let mut ops = Vec::new();
        let mut rest = words;
        while let Some((verb, tail)) = rest.split_first() {
            let (op, used) = match (verb.as_str(), tail) {
                ("scan", [file, table, ..]) => (Op::Scan { file: file.clone(), table: table.clone() }, 2),
                ("since", [file, table, column, since, ..]) => {
                    let since = match since.split_once(':') {
                        Some(("i", ms)) => rusqlite::types::Value::Integer(ms.parse()?),
                        Some(("t", text)) => rusqlite::types::Value::Text(text.to_string()),
                        _ => bail!("bad since value {since}"),
                    };
                    (
                        Op::ScanSince {
                            file: file.clone(),
                            table: table.clone(),
                            column: column.clone(),
                            since,
                        },
                        4,
                    )
                }
                ("copy", [from, from_table, to, to_table, ..]) => (
                    Op::Copy {
                        from: from.clone(),
                        from_table: from_table.clone(),
                        to: to.clone(),
                        to_table: to_table.clone(),
                    },
                    4,
                ),
                ("update", [file, table, count, ..]) => {
                    (Op::Update { file: file.clone(), table: table.clone(), count: count.parse()? }, 3)
                }
                _ => bail!("cannot read floor operation {verb}"),
            };
            ops.push(op);
            rest = &tail[used..];
        }
        Ok(ops)
    }

    /// Runs the operation in `dir`; returns the rows it touched.
    pub fn run(&self, dir: &Path) -> Result<u64> {
        match self {
            Op::Scan { file, table } => {
                let db = open(&dir.join(file))?;
                let mut statement = db.prepare(&format!("SELECT * FROM \"{table}\""))?;
                touch_rows(statement.query([])?)
            }
            Op::ScanSince { file, table, column, since } => {
                let db = open(&dir.join(file))?;
                let mut statement =
                    db.prepare(&format!("SELECT * FROM \"{table}\" WHERE \"{column}\" >= ?1"))?;
                touch_rows(statement.query([since])?)
            }
            Op::Copy { from, from_table, to, to_table } => {
                let source = open(&dir.join(from))?;
                let mut target = open(&dir.join(to))?;
                let columns = source.prepare(&format!("SELECT * FROM \"{from_table}\""))?.column_count();
                let names: Vec<String> = (0..columns).map(|n| format!("c{n}")).collect();
                target.execute_batch(&format!(
                    "CREATE TABLE IF NOT EXISTS \"{to_table}\" ({})",
                    names
                        .iter()
                        .enumerate()
                        .map(|(n, name)| if n == 0 { format!("{name} PRIMARY KEY") } else { name.clone() })
                        .collect::<Vec<_>>()
                        .join(", ")
                ))?;
                let tx = target.transaction()?;
                let mut copied = 0;
                {
                    let placeholders = vec!["?"; columns].join(",");
                    let mut insert =
                        tx.prepare(&format!("INSERT INTO \"{to_table}\" VALUES ({placeholders})"))?;
                    let mut select = source.prepare(&format!("SELECT * FROM \"{from_table}\""))?;
                    let mut rows = select.query([])?;
                    while let Some(row) = rows.next()? {
                        let values: Vec<ToSqlOutput<'_>> = (0..columns)
                            .map(|n| row.get_ref(n).map(ToSqlOutput::Borrowed))
                            .collect::<Result<_, _>>()?;
                        insert.execute(rusqlite::params_from_iter(values))?;
                        copied += 1;
                    }
                }
                tx.commit()?;
                Ok(copied)
            }
            Op::Update { file, table, count } => {
                let mut db = open(&dir.join(file))?;
                let column = if table == LEFT_TABLE { "first_name" } else { "given" };
                let rows: i64 =
                    db.query_row(&format!("SELECT max(rowid) FROM \"{table}\""), [], |row| row.get(0))?;
                let count = i64::try_from(*count)?;
                let stride = (rows / count.max(1)).max(1);
                let tx = db.transaction()?;
                let mut updated = 0;
                {
                    let mut update = tx.prepare(&format!(
                        "UPDATE \"{table}\" SET \"{column}\" = \"{column}\" || '' WHERE rowid = ?1"
                    ))?;
                    for n in 0..count {
                        updated += update.execute([1 + n * stride])? as u64;
                    }
                }
                tx.commit()?;
                Ok(updated)
            }
        }
    }
}

/// Steps through every row and looks at every column's bytes, as a reader must.
fn touch_rows(mut rows: rusqlite::Rows<'_>) -> Result<u64> {
    let mut count = 0;
    let mut bytes = 0usize;
    while let Some(row) = rows.next()? {
        let columns = row.as_ref().column_count();
        for n in 0..columns {
            bytes += match row.get_ref(n)? {
                ValueRef::Text(text) | ValueRef::Blob(text) => text.len(),
                ValueRef::Integer(_) | ValueRef::Real(_) => 8,
                ValueRef::Null => 0,
            };
        }
        count += 1;
    }
    std::hint::black_box(bytes);
    Ok(count)
}
