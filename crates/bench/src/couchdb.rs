//! `fieldsync-bench couchdb`: fieldsync syncing a SQLite table of members into a CouchDB
//! database, against PouchDB replicating the same documents from a local PouchDB into another
//! database of the same server: the first sync, 1,000 changed documents, and a run with nothing
//! changed (whether the server's `update_seq` stays put).
//!
//! The server is pouchdb-server (the npm package `.ci/run` installs into
//! `target/pouchdb-server`, or `FIELDSYNC_POUCHDB_DIR`), started here on a free port of
//! 127.0.0.1 with its databases on disk (LevelDB, `--dir`), or in memory with `--in-memory`,
//! and killed when the benchmark ends. The peer is PouchDB 7 from the same package tree
//! (`pouchdb-core` with the `leveldb`, `http` and `replication` plugins: what the `pouchdb`
//! package bundles), run by node: its local database is loaded with the documents fieldsync
//! wrote in the first run (their `_rev` left out) before the clock starts, copied for each run,
//! and replicated with `PouchDB.replicate(local, remote)` and its default settings. After the
//! first syncs, the two clients take turns at going first, run by run and round by round.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use fieldsync_app::members::{link_toml, member_fields_toml, sqlite_connector_toml};
use serde_json::{Value as Json, json};

use crate::Sample;
use crate::generate::{self, MEMBER_FIELDS, Member};
use crate::postgres::{CpuMeter, Quiet};
use crate::scenario::{measured_logging, seconds, spread};

/// What `fieldsync-bench couchdb` measures.
#[derive(Debug, clap::Args)]
pub struct CouchSettings {
    /// Member documents.
    #[arg(long, default_value_t = 100_000)]
    pub members: u64,
    /// Documents changed on the source side before each incremental run.
    #[arg(long, default_value_t = 1_000)]
    pub changes: u64,
    /// Runs of each measurement (each run starts from empty databases).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// The couchdb connector's `batch_size` (its default when absent).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// The server keeps its databases in memory (`--in-memory`) instead of LevelDB on disk.
    #[arg(long)]
    pub in_memory: bool,
    /// When to measure.
    #[command(flatten)]
    pub quiet: Quiet,
    /// The generator's seed.
    #[arg(long, default_value_t = crate::scenario::SEED)]
    pub seed: u64,
    /// Where the server's databases, the SQLite files and the local PouchDB go (removed at the
    /// end unless `--keep`).
    #[arg(long, default_value = "target/bench/couchdb")]
    pub dir: PathBuf,
    /// Keep the files (the server is stopped all the same).
    #[arg(long)]
    pub keep: bool,
    /// The `fieldsync` binary to measure (default: next to this program).
    #[arg(long)]
    pub fieldsync: Option<PathBuf>,
}

/// The node program driving PouchDB: `load LOCAL DOCS`, `edit LOCAL EDITS`,
/// `replicate LOCAL REMOTE_URL`; each prints one line of JSON.
const POUCH_SCRIPT: &str = r#"'use strict';
const fs = require('fs');
const PouchDB = require('pouchdb-core')
  .plugin(require('pouchdb-adapter-leveldb'))
  .plugin(require('pouchdb-adapter-http'))
  .plugin(require('pouchdb-replication'));
const [command, local, arg] = process.argv.slice(2);
function failed(results) {
  const bad = results.filter((result) => result.error);
  if (bad.length) throw new Error(bad.length + ' documents refused: ' + JSON.stringify(bad[0]));
}
async function main() {
  const db = new PouchDB(local, { adapter: 'leveldb' });
  if (command === 'load') {
    const docs = fs.readFileSync(arg, 'utf8').split('\n').filter(Boolean).map((line) => JSON.parse(line));
    for (let at = 0; at < docs.length; at += 1000) failed(await db.bulkDocs(docs.slice(at, at + 1000)));
    const info = await db.info();
    console.log(JSON.stringify({ doc_count: info.doc_count, update_seq: info.update_seq }));
  } else if (command === 'edit') {
    const edits = JSON.parse(fs.readFileSync(arg, 'utf8'));
    const got = await db.allDocs({ keys: edits.map((edit) => edit[0]), include_docs: true });
    const docs = got.rows.map((row, at) => {
      if (!row.doc) throw new Error('no document ' + edits[at][0]);
      row.doc[edits[at][1]] = edits[at][2];
      return row.doc;
    });
    failed(await db.bulkDocs(docs));
    console.log(JSON.stringify({ edited: docs.length }));
  } else if (command === 'replicate') {
    const remote = new PouchDB(arg);
    await db.info();
    const cpu = process.cpuUsage();
    const started = process.hrtime.bigint();
    const result = await PouchDB.replicate(db, remote);
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    const used = process.cpuUsage(cpu);
    console.log(JSON.stringify({
      ms, cpu_ms: (used.user + used.system) / 1000, status: result.status,
      docs_read: result.docs_read, docs_written: result.docs_written,
      doc_write_failures: result.doc_write_failures, rss_kib: process.resourceUsage().maxRSS,
    }));
  } else {
    throw new Error('unknown command ' + command);
  }
  await db.close();
}
main().catch((error) => { console.error(error); process.exit(1); });
"#;

/// Runs the benchmark and prints its tables.
///
/// # Errors
///
/// When node or pouchdb-server is missing, the server does not start, or a run does other than
/// it must.
pub fn run(settings: &CouchSettings) -> Result<()> {
    let fieldsync = crate::fieldsync_binary(settings.fieldsync.as_deref())?;
    let bench = std::env::current_exe()?;
    let modules = pouchdb_modules()?;
    std::fs::create_dir_all(&settings.dir)?;
    let dir = std::fs::canonicalize(&settings.dir)?;
    let outcome = Bench::new(settings, fieldsync, bench, &dir, &modules).and_then(|mut bench| bench.run());
    if !settings.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    outcome
}

/// `node_modules` of the installed pouchdb-server package (which holds PouchDB's own packages).
fn pouchdb_modules() -> Result<PathBuf> {
    let root = match std::env::var_os("FIELDSYNC_POUCHDB_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/pouchdb-server"),
    };
    let modules = root.join("node_modules");
    ensure!(
        modules.join("pouchdb-server/bin/pouchdb-server").is_file(),
        "no pouchdb-server in {}: run .ci/run, or `npm install pouchdb-server@4.2.0` there",
        root.display()
    );
    Ok(std::fs::canonicalize(modules)?)
}

/// A pouchdb-server started by the benchmark, killed when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(modules: &Path, dir: &Path, in_memory: bool) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        for _attempt in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let mut command = Command::new("node");
            command
                .arg(modules.join("pouchdb-server/bin/pouchdb-server"))
                .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--no-stdout-logs"])
                .current_dir(dir)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("stderr.log"))?);
            if in_memory {
                command.arg("--in-memory");
            } else {
                command.args(["--dir", &dir.join("data").display().to_string()]);
            }
            std::fs::create_dir_all(dir.join("data"))?;
            let mut server = Server { child: command.spawn().context("starting node")?, port };
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(60) {
                if server.child.try_wait()?.is_some() {
                    break;
                }
                if Couch::new(port)?.call("GET", "/", None).is_ok_and(|(status, _)| status == 200) {
                    return Ok(server);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            let _ = server.child.kill();
        }
        bail!("pouchdb-server did not start; see {}", dir.join("stderr.log").display())
    }

    /// The server's CPU time so far (user and system), ms.
    fn cpu_ms(&self) -> Result<f64> {
        Ok(crate::postgres::process_figures(self.child.id())?.0)
    }

    /// Waits until the server has been idle for half a second (at most a minute), so that what
    /// it still does for the step before (LevelDB compacting what was written) is not counted
    /// against the next step, whichever client it measures.
    fn wait_idle(&self) -> Result<()> {
        let started = Instant::now();
        let mut before = self.cpu_ms()?;
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let now = self.cpu_ms()?;
            if now - before <= 10.0 {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(60) {
                eprintln!("pouchdb-server is still busy after a minute: measuring anyway");
                return Ok(());
            }
            before = now;
        }
    }

    /// The server's peak resident memory so far, KiB.
    fn peak_kib(&self) -> Result<u64> {
        Ok(crate::postgres::process_figures(self.child.id())?.1)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP client of the server.
struct Couch {
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
    base: String,
}

impl Couch {
    fn new(port: u16) -> Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(600))
            // node closes idle connections after 5 s: a new connection for every request.
            .pool_max_idle_per_host(0)
            .build()?;
        Ok(Couch { runtime, client, base: format!("http://127.0.0.1:{port}") })
    }

    fn call(&self, method: &str, path: &str, body: Option<&Json>) -> Result<(u16, Json)> {
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(body);
        }
        self.runtime.block_on(async {
            let answer = request.send().await?;
            let status = answer.status().as_u16();
            let text = answer.text().await?;
            Ok((status, serde_json::from_str(&text).unwrap_or(Json::Null)))
        })
    }

    fn ok(&self, method: &str, path: &str, body: Option<&Json>) -> Result<Json> {
        let (status, body) = self.call(method, path, body)?;
        ensure!((200..300).contains(&status), "{method} {path}: HTTP {status}: {body}");
        Ok(body)
    }

    /// The database's document count and `update_seq`.
    fn info(&self, database: &str) -> Result<(u64, Json)> {
        let info = self.ok("GET", &format!("/{database}"), None)?;
        Ok((info["doc_count"].as_u64().unwrap_or(0), info["update_seq"].clone()))
    }
}

/// One measurement of fieldsync: its figures, the records it read on each side, its writes,
/// the server's CPU meanwhile, the machine's busy cores and the load at its start.
#[derive(Clone, Debug)]
struct Measured {
    sample: Sample,
    read: (u64, u64),
    writes: u64,
    server_cpu_ms: f64,
    busy: f64,
    load: f64,
}

/// What a step of one run measured, by name.
#[derive(Default)]
struct Rows {
    rows: Vec<(String, String, Vec<Measured>)>,
}

impl Rows {
    fn push(&mut self, client: &str, step: &str, measured: Measured) {
        match self.rows.iter_mut().find(|(c, s, _)| c == client && s == step) {
            Some((_, _, list)) => list.push(measured),
            None => self.rows.push((client.to_string(), step.to_string(), vec![measured])),
        }
    }
}

struct Bench<'a> {
    settings: &'a CouchSettings,
    fieldsync: PathBuf,
    bench: PathBuf,
    dir: PathBuf,
    modules: PathBuf,
    server: Server,
    couch: Couch,
    rows: Rows,
    /// Whether the server's `update_seq` stayed put in each quiet run.
    quiet_seq: Vec<bool>,
}

impl<'a> Bench<'a> {
    fn new(
        settings: &'a CouchSettings,
        fieldsync: PathBuf,
        bench: PathBuf,
        dir: &Path,
        modules: &Path,
    ) -> Result<Self> {
        let server = Server::start(modules, &dir.join("server"), settings.in_memory)?;
        let couch = Couch::new(server.port)?;
        Ok(Bench {
            settings,
            fieldsync,
            bench,
            dir: dir.to_path_buf(),
            modules: modules.to_path_buf(),
            server,
            couch,
            rows: Rows::default(),
            quiet_seq: Vec::new(),
        })
    }

    fn run(&mut self) -> Result<()> {
        let settings = self.settings;
        let members = settings.members;
        let welcome = self.couch.ok("GET", "/", None)?;
        let node = Command::new("node").arg("--version").output()?;
        let machine = crate::scenario::machine();
        println!(
            "machine: {} cores ({}), {} of memory; node {}; server {} ({}), PouchDB 7.3.1 (leveldb adapter) as the peer",
            machine.get("cores").map_or("?", String::as_str),
            machine.get("cpu").map_or("?", String::as_str),
            machine.get("memory").map_or("?", String::as_str),
            String::from_utf8_lossy(&node.stdout).trim(),
            welcome,
            if settings.in_memory { "in memory" } else { "LevelDB on disk" },
        );
        let data = self.dir.join("data");
        std::fs::create_dir_all(&data)?;
        let source = data.join("left.db");
        let started = Instant::now();
        generate::write_members(&source, &data.join("unused.db"), members, settings.seed, true)?;
        std::fs::remove_file(data.join("unused.db"))?;
        eprintln!("{members} members generated in {:.1} s", started.elapsed().as_secs_f64());
        std::fs::write(self.dir.join("pouch-bench.js"), POUCH_SCRIPT)?;
        let local_base = data.join("local-base");
        for run in 0..settings.runs {
            self.one_run(run, &source, &local_base)?;
        }
        self.print();
        let peak = self.server.peak_kib()?;
        println!("\npouchdb-server's peak resident memory: {:.0} MB", peak as f64 / 1024.0);
        Ok(())
    }

    /// One run: both clients from empty databases, two rounds of changes, quiet runs.
    fn one_run(&mut self, run: usize, source: &Path, local_base: &Path) -> Result<()> {
        let settings = self.settings;
        let members = settings.members;
        let work = self.dir.join(format!("run-{run}"));
        if work.exists() {
            std::fs::remove_dir_all(&work)?;
        }
        std::fs::create_dir_all(&work)?;
        std::fs::copy(source, work.join("left.db"))?;
        let (ours, theirs) = (format!("fieldsync_{run}"), format!("pouchdb_{run}"));
        for database in [&ours, &theirs] {
            let _ = self.couch.call("DELETE", &format!("/{database}"), None)?;
            self.couch.ok("PUT", &format!("/{database}"), None)?;
        }
        std::fs::write(work.join("fieldsync.toml"), self.config(&ours))?;

        // The first sync.
        let measured = self.fieldsync(&work, "initial")?;
        ensure!(measured.writes == members, "fieldsync wrote {} documents, not {members}", measured.writes);
        let (count, _) = self.couch.info(&ours)?;
        ensure!(count == members, "{ours} holds {count} documents after the first sync, not {members}");
        self.rows.push("fieldsync", "initial sync", measured);

        // PouchDB's local database: the documents fieldsync wrote, loaded once.
        if !local_base.exists() {
            self.load_local(&ours, local_base)?;
        }
        let local = work.join("local");
        let status = Command::new("cp").arg("-a").arg(local_base).arg(&local).status()?;
        ensure!(status.success(), "copying the local PouchDB failed");
        let measured = self.replicate(&local, &theirs, "initial")?;
        ensure!(measured.writes == members, "PouchDB wrote {} documents, not {members}", measured.writes);
        let (count, _) = self.couch.info(&theirs)?;
        ensure!(count == members, "{theirs} holds {count} documents after replicating, not {members}");
        self.rows.push("PouchDB replication", "initial sync", measured);

        for round in 0..2 {
            let step =
                if round == 0 { "changes (the first run after the first sync)" } else { "changes (steady)" };
            let quiet = if round == 0 {
                "nothing changed (after the first changes)"
            } else {
                "nothing changed (steady)"
            };
            let edits = self.edit(run, round, &work, &local)?;
            // Each client goes first in every other run and round: the one that goes first
            // finds the server as the step before left it (the first changes come right after
            // the other client's first sync of 100,000 documents), and that is no one's doing.
            let fieldsync_first = (run + round).is_multiple_of(2);
            for fieldsync in [fieldsync_first, !fieldsync_first] {
                let name = format!("changes-{round}");
                let (client, measured, database) = if fieldsync {
                    ("fieldsync", self.fieldsync(&work, &name)?, &ours)
                } else {
                    ("PouchDB replication", self.replicate(&local, &theirs, &name)?, &theirs)
                };
                ensure!(
                    measured.writes == edits,
                    "{client} wrote {} documents for {edits} changes",
                    measured.writes
                );
                self.check_edit(database, run, round)?;
                self.rows.push(client, step, measured);
            }
            // Nothing changed.
            for fieldsync in [fieldsync_first, !fieldsync_first] {
                if fieldsync {
                    let (_, before) = self.couch.info(&ours)?;
                    let measured = self.fieldsync(&work, &format!("quiet-{round}"))?;
                    let (_, after) = self.couch.info(&ours)?;
                    ensure!(measured.writes == 0, "a quiet run wrote {} documents", measured.writes);
                    self.quiet_seq.push(before == after);
                    if before != after {
                        eprintln!("WRONG: update_seq moved in a quiet run: {before} → {after}");
                    }
                    self.rows.push("fieldsync", quiet, measured);
                } else {
                    let measured = self.replicate(&local, &theirs, &format!("quiet-{round}"))?;
                    self.rows.push("PouchDB replication", quiet, measured);
                }
            }
        }
        for database in [&ours, &theirs] {
            self.couch.ok("DELETE", &format!("/{database}"), None)?;
        }
        if !settings.keep {
            std::fs::remove_dir_all(&work)?;
        }
        Ok(())
    }

    /// The link: the federation's SQLite table (left) and the app's member documents (right).
    fn config(&self, database: &str) -> String {
        let rights: Vec<String> = MEMBER_FIELDS.iter().map(|(name, _, _)| format!("/{name}")).collect();
        let fields: Vec<(&str, &str, &str)> = MEMBER_FIELDS
            .iter()
            .zip(&rights)
            .map(|((name, left, _), right)| (*name, *left, right.as_str()))
            .collect();
        let mut couch = format!(
            "[connectors.app]\nkind = \"couchdb\"\nurl = \"http://127.0.0.1:{}\"\ndatabase = \"{database}\"\n\
             type_field = \"/type\"\ntype_value = \"member\"\nid = \"member:{{/ext_id}}\"\n",
            self.server.port
        );
        if let Some(size) = self.settings.batch_size {
            let _ = writeln!(couch, "batch_size = {size}");
        }
        format!(
            "# fieldsync-bench couchdb: a federation register (left) and an app's member documents (right).\nstate = \"sqlite://state.db\"\n\n{}\n{couch}\n{}{}{}",
            sqlite_connector_toml("federation", "left.db", "members", "ext_id", "updated_at"),
            link_toml("members", "federation", "app", ("ext_id", "/ext_id"), "federation"),
            generate::POLICIES,
            member_fields_toml("members", &fields),
        )
    }

    /// `fieldsync run` in `work` under `fieldsync-bench measure`, its log in `fieldsync-STEP.log`.
    fn fieldsync(&self, work: &Path, step: &str) -> Result<Measured> {
        let load = self.settings.quiet.wait()?;
        self.server.wait_idle()?;
        let server_cpu = self.server.cpu_ms()?;
        let meter = CpuMeter::start()?;
        let args: Vec<String> = ["run", "--json", "-c", "fieldsync.toml"].map(String::from).into();
        let log = work.join(format!("fieldsync-{step}.log"));
        let (sample, stdout) = measured_logging(&self.bench, &self.fieldsync, &args, work, Some(&log))
            .with_context(|| format!("fieldsync run ({step})"))?;
        let busy = meter.cores()?;
        let server_cpu_ms = self.server.cpu_ms()? - server_cpu;
        let reports: Json = serde_json::from_slice(&stdout)
            .with_context(|| format!("reading fieldsync's report: {}", String::from_utf8_lossy(&stdout)))?;
        let (mut read, mut writes) = ((0, 0), 0);
        for report in reports.as_array().into_iter().flatten() {
            let stats = &report["stats"];
            read.0 += stats["left"]["read"].as_u64().unwrap_or(0);
            read.1 += stats["right"]["read"].as_u64().unwrap_or(0);
            writes += stats["writes_done"].as_u64().unwrap_or(0);
            if report["status"] != "done" {
                bail!("fieldsync's run ended {}: {report}", report["status"]);
            }
        }
        eprintln!(
            "fieldsync {step}: {} (CPU {}, server CPU {}), read {}+{}, {writes} writes, {} KiB, load {load:.2}",
            seconds(sample.wall_ms),
            seconds(sample.cpu_ms),
            seconds(server_cpu_ms),
            read.0,
            read.1,
            sample.rss_kib
        );
        Ok(Measured { sample, read, writes, server_cpu_ms, busy, load })
    }

    /// The node program with `args`: its one line of JSON.
    fn node(&self, args: &[&str]) -> Result<Json> {
        let output = Command::new("node")
            .arg(self.dir.join("pouch-bench.js"))
            .args(args)
            .env("NODE_PATH", &self.modules)
            .current_dir(&self.dir)
            .output()
            .context("starting node")?;
        ensure!(
            output.status.success(),
            "node pouch-bench.js {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout.lines().last().context("node printed nothing")?;
        Ok(serde_json::from_str(line)?)
    }

    /// Loads the documents of `database` (their `_rev` left out) into a new local PouchDB.
    fn load_local(&self, database: &str, local: &Path) -> Result<()> {
        let started = Instant::now();
        let all = self.couch.ok("GET", &format!("/{database}/_all_docs?include_docs=true"), None)?;
        let mut lines = String::new();
        for row in all["rows"].as_array().into_iter().flatten() {
            let mut doc = row["doc"].clone();
            if let Some(doc) = doc.as_object_mut() {
                doc.remove("_rev");
            }
            lines.push_str(&doc.to_string());
            lines.push('\n');
        }
        let docs = self.dir.join("data/docs.jsonl");
        std::fs::write(&docs, lines)?;
        let loaded = self.node(&["load", &local.display().to_string(), &docs.display().to_string()])?;
        ensure!(
            loaded["doc_count"].as_u64() == Some(self.settings.members),
            "the local PouchDB holds {loaded} after loading"
        );
        std::fs::remove_file(docs)?;
        eprintln!("local PouchDB loaded in {:.1} s", started.elapsed().as_secs_f64());
        Ok(())
    }

    /// One `PouchDB.replicate(local, remote)`: the time of the call itself (the node process's
    /// start and the opening of the local database before the clock), its CPU meanwhile.
    fn replicate(&self, local: &Path, database: &str, step: &str) -> Result<Measured> {
        let load = self.settings.quiet.wait()?;
        self.server.wait_idle()?;
        let server_cpu = self.server.cpu_ms()?;
        let meter = CpuMeter::start()?;
        let url = format!("{}/{database}", self.couch.base);
        let result = self.node(&["replicate", &local.display().to_string(), &url])?;
        let busy = meter.cores()?;
        let server_cpu_ms = self.server.cpu_ms()? - server_cpu;
        ensure!(result["status"] == "complete", "the replication ended {result}");
        ensure!(result["doc_write_failures"].as_u64() == Some(0), "the replication failed writes: {result}");
        let sample = Sample {
            wall_ms: result["ms"].as_f64().unwrap_or(0.0),
            cpu_ms: result["cpu_ms"].as_f64().unwrap_or(0.0),
            rss_kib: result["rss_kib"].as_u64().unwrap_or(0),
        };
        let read = result["docs_read"].as_u64().unwrap_or(0);
        let writes = result["docs_written"].as_u64().unwrap_or(0);
        eprintln!(
            "PouchDB {step}: {} (CPU {}, server CPU {}), read {read}, {writes} written, {} KiB, load {load:.2}",
            seconds(sample.wall_ms),
            seconds(sample.cpu_ms),
            seconds(server_cpu_ms),
            sample.rss_kib
        );
        Ok(Measured { sample, read: (read, 0), writes, server_cpu_ms, busy, load })
    }

    /// The members changed in `round` of `run`: their indexes, and the new family name.
    fn picked(&self, run: usize, round: usize) -> Vec<(u64, String)> {
        let mut rng =
            fastrand::Rng::with_seed(self.settings.seed ^ (((run * 2 + round) as u64 + 1) * 0x9E37));
        let wanted = self.settings.changes.min(self.settings.members) as usize;
        let mut picked = std::collections::BTreeSet::new();
        while picked.len() < wanted {
            picked.insert(rng.u64(..self.settings.members));
        }
        picked
            .into_iter()
            .map(|index| {
                let member = Member::generate(self.settings.seed, index);
                (index, format!("{}-r{run}.{round}", member.last_name))
            })
            .collect()
    }

    /// Renames the picked members in the SQLite table (for fieldsync) and in the local PouchDB
    /// (for its replication); returns how many.
    fn edit(&self, run: usize, round: usize, work: &Path, local: &Path) -> Result<u64> {
        let picked = self.picked(run, round);
        let now = jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M:%S").to_string();
        let mut db = generate::open(&work.join("left.db"))?;
        let tx = db.transaction()?;
        {
            let mut update =
                tx.prepare("UPDATE members SET last_name = ?1, updated_at = ?2 WHERE ext_id = ?3")?;
            for (index, name) in &picked {
                let changed = update.execute(rusqlite::params![
                    name,
                    now,
                    Member::generate(self.settings.seed, *index).ext_id
                ])?;
                ensure!(changed == 1, "member {index} is not in the table");
            }
        }
        tx.commit()?;
        drop(db);
        let edits: Vec<Json> = picked
            .iter()
            .map(|(index, name)| {
                json!([
                    format!("member:{}", Member::generate(self.settings.seed, *index).ext_id),
                    "last_name",
                    name
                ])
            })
            .collect();
        let file = work.join("edits.json");
        std::fs::write(&file, Json::Array(edits).to_string())?;
        let edited = self.node(&["edit", &local.display().to_string(), &file.display().to_string()])?;
        ensure!(edited["edited"].as_u64() == Some(picked.len() as u64), "PouchDB's edit: {edited}");
        Ok(picked.len() as u64)
    }

    /// Checks that `database` holds the first changed member's new name.
    fn check_edit(&self, database: &str, run: usize, round: usize) -> Result<()> {
        let Some((index, name)) = self.picked(run, round).into_iter().next() else { return Ok(()) };
        let id = format!("member:{}", Member::generate(self.settings.seed, index).ext_id);
        let doc = self.couch.ok("GET", &format!("/{database}/{}", id.replace(':', "%3A")), None)?;
        ensure!(doc["last_name"] == name.as_str(), "{database}/{id} is {doc}, not renamed {name}");
        Ok(())
    }

    fn print(&self) {
        println!();
        println!(
            "| client | step | documents written (median) | read (left + right) | wall (min–max) | client CPU | server CPU | machine busy (cores) | client peak RSS | load at start |"
        );
        println!("|---|---|---:|---:|---|---:|---:|---:|---:|---|");
        for (client, step, list) in &self.rows.rows {
            let walls: Vec<f64> = list.iter().map(|m| m.sample.wall_ms).collect();
            let (wall, low, high) = spread(&walls);
            let (cpu, _, _) = spread(&list.iter().map(|m| m.sample.cpu_ms).collect::<Vec<_>>());
            let (server, _, _) = spread(&list.iter().map(|m| m.server_cpu_ms).collect::<Vec<_>>());
            let (busy, _, _) = spread(&list.iter().map(|m| m.busy).collect::<Vec<_>>());
            let (writes, _, _) = spread(&list.iter().map(|m| m.writes as f64).collect::<Vec<_>>());
            let (left, _, _) = spread(&list.iter().map(|m| m.read.0 as f64).collect::<Vec<_>>());
            let (right, _, _) = spread(&list.iter().map(|m| m.read.1 as f64).collect::<Vec<_>>());
            let rss = list.iter().map(|m| m.sample.rss_kib).max().unwrap_or(0);
            let loads: Vec<String> = list.iter().map(|m| format!("{:.2}", m.load)).collect();
            let read =
                if client == "fieldsync" { format!("{left:.0} + {right:.0}") } else { format!("{left:.0}") };
            println!(
                "| {client} | {step} | {writes:.0} | {read} | {} ({}–{}) | {} | {} | {busy:.2} | {:.0} MB | {} |",
                seconds(wall),
                seconds(low),
                seconds(high),
                seconds(cpu),
                seconds(server),
                rss as f64 / 1024.0,
                loads.join(", "),
            );
        }
        let stayed = self.quiet_seq.iter().filter(|stayed| **stayed).count();
        println!("\nupdate_seq unchanged by fieldsync's quiet runs: {stayed} of {}", self.quiet_seq.len());
    }
}
