//! Whole runs of a link between a club's member list (a memory system) and a WordPress-style
//! API (the fixture server): convergence through faults, a server killed mid-run, the rate
//! limit, a rejected value, and quiet runs that write nothing.

use std::sync::Arc;
use std::time::Duration;

use crate::fixture::{FixtureServer, Style};
use fieldsync_connector::MemorySystem;
use fieldsync_connector::testkit::Either;
use fieldsync_connector_rest::{Create, Preset, RestConfig, RestConnector};
use fieldsync_engine::{
    ConflictStrategy, Creates, DeletePolicy, Direction, FieldSpec, FirstSyncStrategy, Guard, LinkSpec,
    RetryPolicy, RunOptions, RunReport, SidePair, SystemClock, Tie,
};
use fieldsync_model::{FieldType, LinkName, Normaliser, Side};
use fieldsync_store::{AuditValues, OutboxStatus, StateStore};
use fieldsync_store_sqlite::SqliteStore;
use fieldsync_test_support::run_link;
use serde_json::{Value, json};

fn field(name: &str, field_type: FieldType, right: &str) -> FieldSpec {
    let normaliser = match field_type {
        FieldType::Phone => Normaliser::new(field_type).with_region("NL").expect("a region"),
        _ => Normaliser::new(field_type),
    };
    FieldSpec {
        name: name.into(),
        paths: SidePair::new(name.into(), right.into()),
        normalisers: SidePair::new(normaliser.clone(), normaliser),
        direction: Direction::Both,
    }
}

/// The club's members (left) and the site's people (right).
struct World {
    club: MemorySystem,
    site: Arc<FixtureServer>,
    config: RestConfig,
    store: SqliteStore,
    spec: LinkSpec,
    _dir: tempfile::TempDir,
}

impl World {
    async fn new(members: usize, change: impl FnOnce(&mut RestConfig)) -> World {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("state.db")).unwrap();
        let site = Arc::new(FixtureServer::start(Style::WordPress).await);
        let mut config = RestConfig::new(&site.list_url());
        config.preset = Some(Preset::Wordpress);
        config.create = Some(Create {
            unique: Some("/meta/knvb_id".into()),
            templates: [("/title".to_string(), "{/meta/first_name} {/meta/last_name}".to_string())].into(),
            ..Create::default()
        });
        config.page_size = Some(25);
        change(&mut config);
        let spec = LinkSpec {
            name: LinkName::new("members"),
            key: SidePair::new("knvb_id".into(), "/meta/knvb_id".into()),
            fields: vec![
                field("first_name", FieldType::Text, "/meta/first_name"),
                field("last_name", FieldType::Text, "/meta/last_name"),
                // Text, not email: the test wants the site, not the normaliser, to refuse.
                field("email", FieldType::Text, "/meta/contact_info[type=email]/value"),
                field("mobile", FieldType::Phone, "/meta/mobile"),
            ],
            conflicts: ConflictStrategy::LastWriteWins {
                grace: Duration::from_secs(5),
                tie: Tie::Side(Side::Left),
            },
            first_sync: FirstSyncStrategy::Prefer(Side::Left),
            creates: Creates::Both,
            deletes: DeletePolicy::Propagate,
            guard: Guard::default(),
            full_scan_every: Duration::from_secs(86_400),
            overlap: SidePair::new(Duration::from_secs(2), Duration::from_secs(2)),
            // Short backoffs keep the test quick; enough attempts that an outage stretched by a
            // busy machine (the server is down for 700 ms or more, retried every 200 ms) cannot use
            // them up: a dead entry would be a lost member here, not a delayed one.
            retry: RetryPolicy {
                attempts: 30,
                initial: Duration::from_millis(50),
                max: Duration::from_millis(200),
                wait_in_run: Duration::from_secs(2),
            },
            audit: AuditValues::Full,
        };
        let club = MemorySystem::new("knvb_id");
        club.set_now(site.now());
        for number in 1..=members {
            let id = format!("K{number:04}");
            club.edit(&id, "first_name", json!(format!("Member{number}")));
            club.edit(&id, "last_name", json!("Jansen"));
            club.edit(&id, "email", json!(format!("member{number}@club.nl")));
            club.edit(&id, "mobile", json!(format!("06-{:08}", 10_000_000 + number)));
        }
        World { club, site, config, store, spec, _dir: dir }
    }

    async fn run(&mut self) -> RunReport {
        let site = RestConnector::open(&self.config).unwrap();
        let mut connectors = SidePair::new(Either::Left(self.club.connector()), Either::Right(site));
        let names = SidePair::new("club".to_string(), "site".to_string());
        run_link(&self.spec, &names, &mut connectors, &mut self.store, RunOptions::default(), &SystemClock)
            .await
            .expect("a run")
    }

    /// The site's people by link key.
    fn people(&self) -> std::collections::BTreeMap<String, Value> {
        let mut people = std::collections::BTreeMap::new();
        for record in self.site.records() {
            let key = record["meta"]["knvb_id"].as_str().expect("a key").to_string();
            assert!(people.insert(key.clone(), record).is_none(), "two people with key {key}");
        }
        people
    }

    /// Both sides hold the same values of every member.
    fn assert_converged(&self) {
        let people = self.people();
        let members = self.club.records();
        assert_eq!(people.len(), members.len(), "as many people as members");
        for (id, member) in &members {
            let person = &people[id.as_str()];
            assert_eq!(person["meta"]["first_name"], member.fields["first_name"], "{id}");
            assert_eq!(person["meta"]["contact_info"][0]["value"], member.fields["email"], "{id}");
        }
    }
}

#[tokio::test]
async fn an_initial_sync_then_edits_on_both_sides_converge_and_a_quiet_run_writes_nothing() {
    let mut world = World::new(60, |_| {}).await;
    let first = world.run().await;
    assert_eq!(first.stats.writes_done, 60, "{:?} {:?} {:?}", first.status, first.stats, first.problems);
    world.assert_converged();
    let person = &world.people()["K0007"];
    assert_eq!(person["title"]["raw"], json!("Member7 Jansen"), "the title template");
    assert_eq!(person["status"], json!("publish"), "the preset's default");
    assert_eq!(person["meta"]["mobile"], json!("+31610000007"));

    // Edits on both sides, one of them on the same field of the same member.
    world.site.advance_secs(10);
    world.club.set_now(world.site.now());
    world.club.edit("K0001", "first_name", json!("Anna"));
    world.club.edit("K0002", "email", json!("two@club.nl"));
    let three = world.site_id("K0003");
    world.site.update(three, json!({"first_name": "Piet"}));
    world.site.advance_secs(10);
    world.club.set_now(world.site.now());
    world.club.edit("K0003", "first_name", json!("Pieter"));
    let writes_before = world.site.total_writes();
    let second = world.run().await;
    assert_eq!(second.stats.conflicts_resolved, 1, "K0003's first name");
    world.assert_converged();
    assert_eq!(world.people()["K0003"]["meta"]["first_name"], json!("Pieter"), "the later edit wins");
    assert_eq!(world.club.value("K0003", "first_name"), json!("Pieter"));
    assert!(world.site.total_writes() > writes_before);

    // Every write bumped the site's modified time: those must not come back as changes.
    world.site.advance_secs(10);
    let writes = world.site.total_writes();
    let quiet = world.run().await;
    assert_eq!(quiet.stats.writes_done, 0);
    assert_eq!(world.site.total_writes(), writes, "nothing sent to the site");
}

impl World {
    fn site_id(&self, key: &str) -> i64 {
        self.people()[key]["id"].as_i64().expect("an id")
    }
}

#[tokio::test]
async fn faults_and_a_killed_server_delay_the_sync_but_lose_and_duplicate_nothing() {
    let mut world = World::new(80, |config| {
        config.retries = Some(1);
        config.rate = Some("40/s".into());
    })
    .await;
    world.site.fail_every(5, 500);
    world.site.too_many(3, 1);
    // The server is killed while the first run writes, and comes back a little later.
    let site = Arc::clone(&world.site);
    let killer = std::thread::spawn(move || {
        while site.total_writes() < 20 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let written = site.total_writes();
        site.stop();
        std::thread::sleep(Duration::from_millis(700));
        site.restart();
        written
    });
    let mut reports = vec![world.run().await];
    let written_at_kill = killer.join().unwrap();
    assert!(written_at_kill < 80, "the server was killed in the middle of the writes");
    // Later runs finish what is left.
    for _ in 0..8 {
        if world.people().len() == 80 && reports.last().is_some_and(|report| report.failures.is_empty()) {
            break;
        }
        world.site.advance_secs(5);
        reports.push(world.run().await);
    }
    world.site.clear_faults();
    world.site.advance_secs(5);
    let quiet = world.run().await;
    assert_eq!(quiet.stats.writes_done, 0, "{:?}", quiet.failures);
    world.assert_converged();
    let unanswered = world.site.requests().iter().filter(|request| request.status.is_none()).count();
    let failed = world
        .site
        .requests()
        .iter()
        .filter(|request| request.status.is_some_and(|status| status >= 429))
        .count();
    assert!(failed > 10, "the faults were felt: {failed} failed answers, {unanswered} cut off by the kill");
    let most = world.site.max_requests_in_window(Duration::from_secs(1));
    assert!(most <= 40, "{most} requests within one second");
}

#[tokio::test]
async fn a_value_the_site_rejects_is_one_dead_entry_with_its_message_and_the_others_sync() {
    let mut world = World::new(12, |_| {}).await;
    world.site.reject_invalid_email(true);
    world.club.edit("K0005", "email", json!("not-an-email"));
    let report = world.run().await;
    assert_eq!(report.stats.writes_done, 11);
    assert_eq!(report.stats.writes_dead, 1);
    let dead = world.store.list_outbox(Some("members"), Some(OutboxStatus::Dead), 10).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].write.key.as_str(), "K0005");
    let error = dead[0].last_error.as_deref().unwrap_or_default();
    assert!(error.contains("400") && error.contains("rest_invalid_param"), "the site's message: {error}");
    assert_eq!(world.people().len(), 11);
    assert!(!world.people().contains_key("K0005"));
}

#[tokio::test]
async fn two_edits_of_one_person_in_the_same_second_both_reach_the_club() {
    let mut world = World::new(5, |_| {}).await;
    world.run().await;
    world.site.advance_secs(30);
    let id = world.site_id("K0002");
    world.site.update(id, json!({"first_name": "Once"}));
    let seen = world.run().await;
    assert_eq!(seen.stats.writes_done, 1);
    assert_eq!(world.club.value("K0002", "first_name"), json!("Once"));
    // The same second as the edit the last run read: the cursor sits on it, and the
    // overlap reads it again.
    world.site.update(id, json!({"first_name": "Twice"}));
    let again = world.run().await;
    assert_eq!(again.stats.writes_done, 1, "{:?}", again.stats);
    assert_eq!(world.club.value("K0002", "first_name"), json!("Twice"));
}

#[tokio::test]
async fn without_etags_a_value_a_person_changed_after_the_read_is_not_overwritten() {
    // WordPress sends no ETags, so the connector claims no conditional writes and the engine
    // reads the record again just before writing, comparing the scalar it would overwrite.
    let mut world = World::new(5, |_| {}).await;
    world.run().await;
    let site = RestConnector::open(&world.config).unwrap();
    assert!(!fieldsync_connector::Connector::capabilities(&site).conditional_writes);
    world.site.advance_secs(10);
    world.club.set_now(world.site.now());
    world.club.edit("K0004", "last_name", json!("FromTheClub"));
    let id = world.site_id("K0004");
    // A person saves the site's record right after the run's listing read it.
    world.site.change_after_read(id, json!({"last_name": "ByAPerson"}));
    let report = world.run().await;
    assert_eq!(report.stats.writes_moved, 1, "{:?}", report.stats);
    assert_eq!(world.people()["K0004"]["meta"]["last_name"], json!("ByAPerson"), "the person's edit stands");
    assert_eq!(world.club.value("K0004", "last_name"), json!("FromTheClub"));
}
