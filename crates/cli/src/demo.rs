//! `fieldsync demo`: makes a federation register and a club website as two SQLite member
//! databases, syncs them, edits both sides (one conflict, a soft delete, a new member), and
//! shows the plan, the run and a final run that writes nothing.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};
use fieldsync_app::Workspace;
use fieldsync_app::members::{link_toml, member_fields_toml, sqlite_connector_toml};
use fieldsync_app::workspace::{RunReport, RunScope};
use rusqlite::params;

use crate::output::print_json;
use crate::progress::RunPrinter;
use crate::{Exit, Failure};

/// How many members the demo makes.
const MEMBERS: usize = 300;
/// A file that marks a directory as made by the demo, so it may be made again.
const MARKER: &str = ".fieldsync-demo";

const FIRST_NAMES: [&str; 16] = [
    "Anna", "Bram", "Daan", "Emma", "Fleur", "Sem", "Julia", "Lucas", "Mila", "Noah", "Sophie", "Thijs",
    "Sara", "Finn", "Lotte", "Jesse",
];
const LAST_NAMES: [&str; 12] = [
    "de Vries", "Jansen", "Bakker", "Visser", "Smit", "Meijer", "de Boer", "Mulder", "Bos", "Vos", "Peters",
    "Hendriks",
];

/// The demo's policies after its link's table.
const POLICIES: &str = r#"creates = "left_to_right"
deletes = { soft = { field = "status", value = "inactive" } }
guard = { max_delete = "10%", max_change = "50%" }
"#;

/// The demo's configuration: the two member databases and the member fields of the shared schema.
fn config() -> String {
    let fields = member_fields_toml(
        "members",
        &[
            ("first_name", "first_name", "given_name"),
            ("last_name", "last_name", "family_name"),
            ("email", "email", "email_address"),
            ("mobile", "mobile", "phone_mobile"),
            ("birth_date", "birth_date", "date_of_birth"),
        ],
    );
    format!(
        "# fieldsync demo: a federation register (left) and a club website (right).\nstate = \"sqlite://state.db\"\n\n\
         {}deleted = \"deleted_at\"\n\n{}date_formats = [\"%d-%m-%Y\"]\n\n{}{POLICIES}{fields}",
        sqlite_connector_toml("federation", "federation.db", "members", "knvb_id", "updated_at"),
        sqlite_connector_toml("club", "club.db", "people", "member_number", "modified"),
        link_toml("members", "federation", "club", ("knvb_id", "member_number"), "federation"),
    )
}

struct Member {
    id: String,
    first: &'static str,
    last: &'static str,
    email: String,
    mobile: u32,
    born: (u16, u8, u8),
}

fn members() -> Vec<Member> {
    let mut rng = fastrand::Rng::with_seed(2026);
    (0..MEMBERS)
        .map(|number| {
            let first = FIRST_NAMES[rng.usize(..FIRST_NAMES.len())];
            let last = LAST_NAMES[rng.usize(..LAST_NAMES.len())];
            let handle =
                format!("{}.{}{}", first.to_lowercase(), last.replace(' ', "").to_lowercase(), number);
            Member {
                id: format!("KNVB{:06}", 100_000 + number * 37),
                first,
                last,
                email: format!("{handle}@example.nl"),
                mobile: rng.u32(20_000_000..59_999_999),
                born: (rng.u16(1950..2015), rng.u8(1..13), rng.u8(1..29)),
            }
        })
        .collect()
}

fn prepare_dir(dir: &Path) -> Result<(), Failure> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir).map(|mut entries| entries.next().is_none()).unwrap_or(false);
        if !dir.join(MARKER).exists() && !empty {
            return Err(Failure::usage(anyhow!(
                "{} exists and was not made by `fieldsync demo`; choose another --dir",
                dir.display()
            )));
        }
        for name in ["federation.db", "club.db", "state.db", "fieldsync.toml"] {
            let path = dir.join(name);
            for suffix in ["", "-wal", "-shm", ".members.lock"] {
                let mut file = path.clone().into_os_string();
                file.push(suffix);
                let _ = std::fs::remove_file(PathBuf::from(file));
            }
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("making {}", dir.display()))?;
    std::fs::write(dir.join(MARKER), "made by fieldsync demo\n").context("marking the demo directory")?;
    Ok(())
}

fn make_databases(dir: &Path) -> anyhow::Result<()> {
    let federation = rusqlite::Connection::open(dir.join("federation.db"))?;
    federation.execute_batch(
        "CREATE TABLE members (
            knvb_id TEXT PRIMARY KEY,
            first_name TEXT NOT NULL,
            last_name TEXT NOT NULL,
            email TEXT,
            mobile TEXT,
            birth_date TEXT,
            updated_at TEXT NOT NULL,
            deleted_at TEXT
        );
        CREATE INDEX members_updated_at ON members (updated_at);",
    )?;
    let club = rusqlite::Connection::open(dir.join("club.db"))?;
    club.execute_batch(
        "CREATE TABLE people (
            member_number TEXT PRIMARY KEY,
            given_name TEXT,
            family_name TEXT,
            email_address TEXT CHECK (email_address IS NULL OR email_address LIKE '%_@_%'),
            phone_mobile TEXT,
            date_of_birth TEXT,
            status TEXT NOT NULL DEFAULT 'active',
            modified TEXT NOT NULL
        );
        CREATE INDEX people_modified ON people (modified);",
    )?;
    let stamp = "datetime('now', '-1 day')";
    let insert_federation = format!(
        "INSERT INTO members (knvb_id, first_name, last_name, email, mobile, birth_date, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, {stamp})"
    );
    let insert_club = format!(
        "INSERT INTO people (member_number, given_name, family_name, email_address, phone_mobile, date_of_birth, modified) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, {stamp})"
    );
    for member in members() {
        let (year, month, day) = member.born;
        // The federation keeps E.164 numbers and ISO dates; the club types national numbers
        // and Dutch dates, with the odd capital in an address.
        federation.execute(
            &insert_federation,
            params![
                member.id,
                member.first,
                member.last,
                member.email,
                format!("+316{}", member.mobile),
                format!("{year:04}-{month:02}-{day:02}"),
            ],
        )?;
        club.execute(
            &insert_club,
            params![
                member.id,
                member.first,
                member.last,
                if member.mobile % 5 == 0 { member.email.to_uppercase() } else { member.email.clone() },
                format!("06 {}", member.mobile),
                format!("{day:02}-{month:02}-{year:04}"),
            ],
        )?;
    }
    std::fs::write(dir.join("fieldsync.toml"), config())?;
    Ok(())
}

/// The edits people make between two runs, on both sides; returns what was done, to tell.
fn edit_both_sides(dir: &Path) -> anyhow::Result<Vec<String>> {
    let members = members();
    let federation = rusqlite::Connection::open(dir.join("federation.db"))?;
    let club = rusqlite::Connection::open(dir.join("club.db"))?;
    let [a, b, c, d, e] = [&members[3], &members[10], &members[42], &members[7], &members[99]];
    let mut told = Vec::new();

    federation.execute(
        "UPDATE members SET email = ?2, updated_at = datetime('now', '-10 minutes') WHERE knvb_id = ?1",
        params![a.id, format!("{}.new@example.nl", a.first.to_lowercase())],
    )?;
    told.push(format!("federation: {} {} ({}) gets a new e-mail address", a.first, a.last, a.id));

    club.execute(
        "UPDATE people SET phone_mobile = '06 11223344', modified = datetime('now', '-9 minutes') WHERE member_number = ?1",
        params![b.id],
    )?;
    told.push(format!("club: {} {} ({}) corrects the mobile number on the website", b.first, b.last, b.id));

    club.execute(
        "UPDATE people SET family_name = ?2, modified = datetime('now', '-8 minutes') WHERE member_number = ?1",
        params![c.id, format!("{}-Smit", c.last)],
    )?;
    told.push(format!("club: {} {} ({}) adds a second family name", c.first, c.last, c.id));

    federation.execute(
        "UPDATE members SET email = ?2, updated_at = datetime('now', '-7 minutes') WHERE knvb_id = ?1",
        params![d.id, format!("{}@federation-mail.nl", d.first.to_lowercase())],
    )?;
    club.execute(
        "UPDATE people SET email_address = ?2, modified = datetime('now', '-3 minutes') WHERE member_number = ?1",
        params![d.id, format!("{}@club-mail.nl", d.first.to_lowercase())],
    )?;
    told.push(format!(
        "both: {} {} ({}) changes e-mail on both sides, 4 minutes apart (a conflict)",
        d.first, d.last, d.id
    ));

    federation.execute(
        "UPDATE members SET deleted_at = datetime('now', '-6 minutes'), updated_at = datetime('now', '-6 minutes') WHERE knvb_id = ?1",
        params![e.id],
    )?;
    told.push(format!("federation: {} {} ({}) leaves the club (soft-deleted)", e.first, e.last, e.id));

    federation.execute(
        "INSERT INTO members (knvb_id, first_name, last_name, email, mobile, birth_date, updated_at) \
         VALUES ('KNVB999001', 'Yara', 'El Amrani', 'yara.elamrani@example.nl', '+31612345678', '2012-05-17', datetime('now', '-5 minutes'))",
        [],
    )?;
    told.push("federation: Yara El Amrani (KNVB999001) joins".into());
    Ok(told)
}

/// Runs the demo.
pub async fn demo(dir: &Path, json: bool) -> Result<Exit, Failure> {
    prepare_dir(dir)?;
    make_databases(dir).context("making the demo databases")?;
    let mut workspace = Workspace::open(&dir.join("fieldsync.toml"))?;
    let every_link = RunScope::default();
    let mut printer = RunPrinter::new(json);
    let say = |text: &str| {
        if !json {
            outln!("{text}");
        }
    };
    say(&format!(
        "fieldsync demo in {}\n\nTwo member databases: federation.db (the federation register) and club.db (the club website),\n\
         {MEMBERS} members each, with different column names, national phone numbers and Dutch dates on the club side.\n\
         The link is in {}.\n\n== 1. First run: builds the baseline (the sides already agree once normalised) ==\n",
        dir.display(),
        dir.join("fieldsync.toml").display()
    ));
    let first = workspace.run(&every_link, false, &mut printer).await?.reports;
    say("== 2. People edit both sides ==\n");
    let edits = edit_both_sides(dir).context("editing the demo databases")?;
    for line in &edits {
        say(&format!("  {line}"));
    }
    say("\n== 3. fieldsync plan: what a run would do ==\n");
    let plan = workspace.plan(&every_link, &mut printer).await?.reports;
    say("== 4. fieldsync run ==\n");
    let run = workspace.run(&every_link, false, &mut printer).await?;
    let (exit, second) = (Exit::from(run.outcome), run.reports);
    say("== 5. Another run: nothing changed, so nothing is written ==\n");
    let third = workspace.run(&every_link, false, &mut printer).await?.reports;
    let config_path = dir.join("fieldsync.toml");
    let config_arg = config_path.display();
    say(&format!(
        "Look further:\n  fieldsync -c {config_arg} status\n  fieldsync -c {config_arg} history\n  \
         fieldsync -c {config_arg} history show {}\n  fieldsync -c {config_arg} conflicts list --all\n  \
         fieldsync -c {config_arg} outbox list --status all",
        second.first().and_then(|report| report.run_id).map(|id| id.to_string()).unwrap_or_default()
    ));
    let writes_at_end: u64 = third.iter().map(|report| report.stats.writes_done).sum();
    if writes_at_end != 0 {
        return Err(anyhow!("the final run wrote {writes_at_end} values; it should write none").into());
    }
    if json {
        print_json(&DemoReport {
            directory: dir,
            first_run: &first,
            edits: &edits,
            plan: &plan,
            run: &second,
            final_run: &third,
        });
    }
    Ok(exit)
}

/// What `demo --json` prints: each step's reports and the edits between them.
#[derive(serde::Serialize)]
struct DemoReport<'demo> {
    /// Where the demo was made.
    directory: &'demo Path,
    /// The first run, which builds the baseline.
    first_run: &'demo [RunReport],
    /// The edits made on both sides, told as sentences.
    edits: &'demo [String],
    /// The plan after the edits.
    plan: &'demo [RunReport],
    /// The run that carries the edits over.
    run: &'demo [RunReport],
    /// The last run, which writes nothing.
    final_run: &'demo [RunReport],
}
