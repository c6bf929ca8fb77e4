//! The deterministic member generator: the same seed and size give the same members, written
//! to a federation table (left) and a club table (right) that name and format every column
//! differently, and the same edit mixes.

use std::path::Path;

use anyhow::{Context as _, Result};
use fieldsync_app::members::{link_toml, member_fields_toml, sqlite_connector_toml};
use jiff::Timestamp;
use rusqlite::types::Value;
use rusqlite::{Connection, params};

const FIRST_NAMES: [&str; 24] = [
    "Anna", "Bram", "Daan", "Emma", "Fleur", "Sem", "Julia", "Lucas", "Mila", "Noah", "Sophie", "Thijs",
    "Sara", "Finn", "Lotte", "Jesse", "Tess", "Milan", "Zoë", "Levi", "Nina", "Luuk", "Eva", "Ruben",
];
const LAST_NAMES: [&str; 20] = [
    "de Vries",
    "Jansen",
    "Bakker",
    "Visser",
    "Smit",
    "Meijer",
    "de Boer",
    "Mulder",
    "Bos",
    "Vos",
    "Peters",
    "Hendriks",
    "van Dijk",
    "de Jong",
    "van den Berg",
    "Dekker",
    "Brouwer",
    "de Wit",
    "Dijkstra",
    "Kok",
];
/// Dutch area codes for landlines, so that numbers are valid for the phone normaliser.
pub const AREA_CODES: [&str; 6] = ["20", "10", "30", "40", "50", "70"];

/// The federation's table (left side).
pub const LEFT_TABLE: &str = "members";
/// The club's table (right side).
pub const RIGHT_TABLE: &str = "people";

const LEFT_SCHEMA: &str = "CREATE TABLE members (
    ext_id TEXT PRIMARY KEY, first_name TEXT, last_name TEXT, email TEXT, phone TEXT, mobile TEXT,
    birth_date TEXT, active INTEGER, updated_at TEXT NOT NULL);
    CREATE INDEX members_updated_at ON members(updated_at);";
const RIGHT_SCHEMA: &str = "CREATE TABLE people (
    federation_id TEXT PRIMARY KEY, given TEXT, family TEXT, mail TEXT, tel TEXT, gsm TEXT,
    born TEXT, is_active TEXT, modified INTEGER NOT NULL);
    CREATE INDEX people_modified ON people(modified);";

/// The first generated modification time; member `i` was last modified `i` seconds / N of a
/// year later, so that incremental reads find only what changed.
const EPOCH: &str = "2025-01-01T00:00:00Z";

/// One member, as both systems hold it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The link key.
    pub ext_id: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Lower-case address; the federation writes it capitalised.
    pub email: String,
    /// Subscriber number after the area code.
    pub phone: (usize, u32),
    /// Mobile number after `6`.
    pub mobile: u32,
    /// Year, month, day.
    pub birth: (i16, i8, i8),
    /// Whether the membership is active.
    pub active: bool,
}

impl Member {
    /// The member with index `index`, drawn from `seed`.
    pub fn generate(seed: u64, index: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let first_name = FIRST_NAMES[rng.usize(..FIRST_NAMES.len())].to_string();
        let last_name = LAST_NAMES[rng.usize(..LAST_NAMES.len())].to_string();
        let email =
            format!("{}.{}{index}@example.org", first_name, last_name.replace(' ', "")).to_lowercase();
        Member {
            ext_id: format!("M{index:08}"),
            first_name,
            last_name,
            email,
            phone: (rng.usize(..AREA_CODES.len()), rng.u32(2_000_000..10_000_000)),
            mobile: rng.u32(20_000_000..70_000_000),
            birth: (rng.i16(1940..2018), rng.i8(1..=12), rng.i8(1..=28)),
            active: rng.u8(..10) != 0,
        }
    }

    /// The address as the federation writes it, capitalised.
    pub fn left_email(&self) -> String {
        let mut chars = self.email.chars();
        chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
    }
}

/// The generated modification time of member `index` of `count`.
pub fn base_time(index: u64, count: u64) -> Timestamp {
    let epoch: Timestamp = EPOCH.parse().unwrap_or_else(|_| unreachable!("EPOCH is a valid timestamp"));
    let year_ms = 365 * 24 * 3600 * 1000_i64;
    let offset = i64::try_from(u128::from(index) * year_ms as u128 / u128::from(count.max(1))).unwrap_or(0);
    epoch + jiff::SignedDuration::from_millis(offset)
}

fn sqlite_time(at: Timestamp) -> String {
    at.strftime("%Y-%m-%d %H:%M:%S").to_string()
}

/// Opens (creating) a member database with the connector's usual settings.
pub fn open(path: &Path) -> Result<Connection> {
    let connection = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    connection.pragma_update(None, "journal_mode", "wal")?;
    Ok(connection)
}

/// Writes `count` members to new files `left` and `right` (`right` gets only its table when
/// `right_empty`).
pub fn write_members(left: &Path, right: &Path, count: u64, seed: u64, right_empty: bool) -> Result<()> {
    let mut left_db = open(left)?;
    left_db.execute_batch(LEFT_SCHEMA)?;
    let mut right_db = open(right)?;
    right_db.execute_batch(RIGHT_SCHEMA)?;
    let left_tx = left_db.transaction()?;
    let right_tx = right_db.transaction()?;
    {
        let mut left_insert =
            left_tx.prepare(&format!("INSERT INTO {LEFT_TABLE} VALUES (?,?,?,?,?,?,?,?,?)"))?;
        let mut right_insert =
            right_tx.prepare(&format!("INSERT INTO {RIGHT_TABLE} VALUES (?,?,?,?,?,?,?,?,?)"))?;
        for index in 0..count {
            let member = Member::generate(seed, index);
            let at = base_time(index, count);
            insert_member(&mut left_insert, &member, at, Spelling::Register)?;
            if !right_empty {
                insert_member(&mut right_insert, &member, at, Spelling::Club)?;
            }
        }
    }
    left_tx.commit()?;
    right_tx.commit()?;
    Ok(())
}

/// How a side spells a member's values: the federation's register (left) or the club's
/// table (right).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Spelling {
    Register,
    Club,
}

/// Inserts `member`, modified at `at`, as `spelling` spells it.
fn insert_member(
    statement: &mut rusqlite::Statement<'_>,
    member: &Member,
    at: Timestamp,
    spelling: Spelling,
) -> Result<()> {
    let (area, number) = member.phone;
    let (year, month, day) = member.birth;
    let (email, phone, mobile, birth, active, modified): (String, String, String, String, Value, Value) =
        match spelling {
            Spelling::Register => (
                member.left_email(),
                format!("0{} {number}", AREA_CODES[area]),
                format!("06-{}", member.mobile),
                format!("{year:04}-{month:02}-{day:02}"),
                i64::from(member.active).into(),
                sqlite_time(at).into(),
            ),
            Spelling::Club => (
                member.email.clone(),
                format!("+31{}{number}", AREA_CODES[area]),
                format!("+316{}", member.mobile),
                format!("{day:02}-{month:02}-{year:04}"),
                if member.active { "yes" } else { "no" }.to_owned().into(),
                at.as_millisecond().into(),
            ),
        };
    statement.execute(params![
        member.ext_id,
        member.first_name,
        member.last_name,
        email,
        phone,
        mobile,
        birth,
        active,
        modified
    ])?;
    Ok(())
}

/// An edit mix applied to both sides of a synced pair.
#[derive(Clone, Copy, Debug)]
pub struct Mix {
    /// Records changed on each side.
    pub per_side: u64,
    /// The share of them changed on both sides (a conflict on the same field).
    pub conflicting: f64,
    /// The share of each side's changes that are new members.
    pub creates: f64,
    /// The share of each side's changes that are deletions.
    pub deletes: f64,
}

/// Applies `mix` to a synced pair of `count` members, stamping every edit with `now`.
/// Returns how many rows each side changed (created, updated and deleted).
pub fn apply_mix(left: &Path, right: &Path, count: u64, seed: u64, mix: Mix, now: Timestamp) -> Result<u64> {
    let mut rng = fastrand::Rng::with_seed(seed.wrapping_add(mix.per_side));
    // Distinct records: the conflicting ones first (edited on both sides), then each side's own.
    let conflicts = (mix.per_side as f64 * mix.conflicting).round() as u64;
    let creates = (mix.per_side as f64 * mix.creates).round() as u64;
    let deletes = (mix.per_side as f64 * mix.deletes).round() as u64;
    let own = mix.per_side - conflicts - creates - deletes;
    let wanted = usize::try_from(conflicts + 2 * (own + deletes)).unwrap_or(usize::MAX);
    let mut picked = std::collections::BTreeSet::new();
    let mut order = Vec::with_capacity(wanted);
    while order.len() < wanted.min(usize::try_from(count).unwrap_or(usize::MAX)) {
        let index = rng.u64(..count);
        if picked.insert(index) {
            order.push(index);
        }
    }
    let mut order = order.into_iter();
    let shared: Vec<u64> = order.by_ref().take(conflicts as usize).collect();
    let left_own: Vec<u64> = order.by_ref().take((own + deletes) as usize).collect();
    let right_own: Vec<u64> = order.by_ref().take((own + deletes) as usize).collect();

    let mut changed = 0;
    for (side, path, own) in [(0, left, &left_own), (1, right, &right_own)] {
        let mut db = open(path)?;
        let tx = db.transaction()?;
        {
            let (table, key, family, mail, stamp) = if side == 0 {
                (LEFT_TABLE, "ext_id", "last_name", "email", "updated_at")
            } else {
                (RIGHT_TABLE, "federation_id", "family", "mail", "modified")
            };
            let stamp_value: Value =
                if side == 0 { sqlite_time(now).into() } else { now.as_millisecond().into() };
            let mut rename =
                tx.prepare(&format!("UPDATE {table} SET {family} = ?1, {stamp} = ?2 WHERE {key} = ?3"))?;
            let mut remail =
                tx.prepare(&format!("UPDATE {table} SET {mail} = ?1, {stamp} = ?2 WHERE {key} = ?3"))?;
            let mut delete = tx.prepare(&format!("DELETE FROM {table} WHERE {key} = ?1"))?;
            for &index in &shared {
                let member = Member::generate(seed, index);
                let value = format!("{} {}", member.last_name, if side == 0 { "Links" } else { "Rechts" });
                changed += rename.execute(params![value, stamp_value, member.ext_id])? as u64;
            }
            let (deleted, edited) = own.split_at(deletes as usize);
            for &index in deleted {
                changed += delete.execute(params![Member::generate(seed, index).ext_id])? as u64;
            }
            for (n, &index) in edited.iter().enumerate() {
                let member = Member::generate(seed, index);
                changed += if n % 2 == 0 {
                    let value = format!("{}-{}", member.last_name, rng.u32(..1000));
                    rename.execute(params![value, stamp_value, member.ext_id])?
                } else {
                    let value = format!("new.{}", member.email);
                    remail.execute(params![value, stamp_value, member.ext_id])?
                } as u64;
            }
            let mut insert = tx.prepare(&format!("INSERT INTO {table} VALUES (?,?,?,?,?,?,?,?,?)"))?;
            for n in 0..creates {
                let index = count + side * creates + n;
                let member = Member::generate(seed, index);
                let spelling = if side == 0 { Spelling::Register } else { Spelling::Club };
                insert_member(&mut insert, &member, now, spelling)?;
                changed += 1;
            }
        }
        tx.commit()?;
    }
    Ok(changed)
}

/// The policies of the benchmark's link after those `link_toml` writes.
pub const POLICIES: &str = r#"deletes = "propagate"
guard = { max_delete = "50%", max_change = "100%" }
"#;

/// The member fields the benchmarks track: each field's name, the federation's column and
/// the club's.
pub(crate) const MEMBER_FIELDS: [(&str, &str, &str); 7] = [
    ("first_name", "first_name", "given"),
    ("last_name", "last_name", "family"),
    ("email", "email", "mail"),
    ("phone", "phone", "tel"),
    ("mobile", "mobile", "gsm"),
    ("birth_date", "birth_date", "born"),
    ("active", "active", "is_active"),
];

/// The configuration the benchmark runs fieldsync with: a federation register (left) and a
/// club table (right), with the member fields of the shared schema.
pub fn config() -> String {
    let fields = member_fields_toml("members", &MEMBER_FIELDS);
    format!(
        "# fieldsync benchmark: a federation register (left) and a club table (right).\nstate = \"sqlite://state.db\"\n\n{}\n{}modified_format = \"unix_ms\"\ndate_formats = [\"%d-%m-%Y\"]\n\n{}{POLICIES}{fields}",
        sqlite_connector_toml("federation", "left.db", "members", "ext_id", "updated_at"),
        sqlite_connector_toml("club", "right.db", "people", "federation_id", "modified"),
        link_toml("members", "federation", "club", ("ext_id", "federation_id"), "federation"),
    )
}
