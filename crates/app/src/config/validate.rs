//! From the parsed file to a `Config`: connector tables are read per kind, names resolved,
//! paths checked against each side's connector, durations and shares read, normalisers
//! built. Every problem found is kept with its place, so one pass reports them all.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use fieldsync_connector::duration;
use fieldsync_engine::{
    ConflictStrategy, Creates, DeletePolicy, Direction, FieldSpec, FirstSyncStrategy, Guard, Limit, LinkSpec,
    RetryPolicy, SidePair, Tie,
};
use fieldsync_model::{FieldType, Invalid, LinkName, Normaliser, Reading, Side};
use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

mod audit;
mod service;

use super::env::{expand, mentions_organisation};
use super::organisations::{Organisation, Organisations};
use super::raw::{
    RawConfig, RawDeletes, RawField, RawGuard, RawLimit, RawLink, RawRetry, RawSidePaths, RawStrategy,
};
use super::{
    CONNECTOR_KINDS, Config, ConfigError, ConnectorConfig, ConnectorKind, DEFAULT_OVERLAP,
    DEFAULT_STATE_FILE, LinkConfig, Location, Problem, StateLocation,
};

/// How `direction` is spelled.
const DIRECTIONS: &[(&str, Direction)] = &[
    ("both", Direction::Both),
    ("left_to_right", Direction::LeftToRight),
    ("right_to_left", Direction::RightToLeft),
];

/// How `creates` is spelled.
const CREATES: &[(&str, Creates)] = &[
    ("both", Creates::Both),
    ("left_to_right", Creates::LeftToRight),
    ("right_to_left", Creates::RightToLeft),
    ("none", Creates::None),
];

const DEFAULT_GRACE: Duration = Duration::from_secs(5);
const DEFAULT_FULL_SCAN_EVERY: Duration = Duration::from_secs(24 * 3600);

/// Parses and validates `text`, the contents of `file`.
///
/// With `offline`, for commands that open no connector, a connector whose settings name a
/// variable the environment lacks is left out of the configuration instead of being an error:
/// its secrets are not needed to read the state store, and the commands that open it say what
/// is missing.
pub(crate) fn validate(
    text: &str,
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    offline: bool,
) -> Result<Config, ConfigError> {
    let root = DeTable::parse(text).map_err(|error| ConfigError::from_toml(&error, file, text))?;
    let raw = RawConfig::deserialize(toml::de::Deserializer::from(root.clone()))
        .map_err(|error| ConfigError::from_toml(&error, file, text))?;

    let mut validator = Validator { file, text, env, offline, org: None, problems: Vec::new() };
    let state = validator.state(raw.state.as_ref());
    let organisations = raw.organisations.as_ref().and_then(|raw| validator.organisations(raw));

    // A connector whose settings differ between organisations (`${org.…}`) is checked once per
    // organisation, for each link that runs for them.
    let mut declared = BTreeSet::new();
    let mut connectors = BTreeMap::new();
    let mut per_organisation = BTreeMap::new();
    if let Some(DeValue::Table(tables)) = root.get_ref().get("connectors").map(Spanned::get_ref) {
        for (name, table) in tables {
            declared.insert(name.get_ref().to_string());
            if raw.organisations.is_some() && mentions_organisation_anywhere(table.get_ref()) {
                per_organisation.insert(name.get_ref().to_string(), (name, table));
            } else if let Some(connector) = validator.connector(name, table) {
                connectors.insert(connector.name.clone(), connector);
            }
        }
    }

    let mut links = BTreeMap::new();
    let mut instances = BTreeMap::new();
    let mut for_each = BTreeSet::new();
    for (name, link) in raw.links {
        let Some(each) = &link.get_ref().for_each else {
            for side in [&link.get_ref().left, &link.get_ref().right] {
                if per_organisation.contains_key(side.get_ref()) {
                    validator.problem(
                        side.span(),
                        format!(
                            "connector {} uses `${{org.…}}`, known only in a link with for_each = \"organisations\"",
                            side.get_ref()
                        ),
                    );
                }
            }
            let known = Known { declared: &declared, connectors: &connectors };
            if let Some(link) = validator.link(&name, &link, known) {
                links.insert(name.into_inner(), link);
            }
            continue;
        };
        if each.get_ref() != "organisations" {
            validator.problem(
                each.span(),
                format!("for_each {:?}: the one list is \"organisations\"", each.get_ref()),
            );
            continue;
        }
        let Some(organisations) = &organisations else {
            if raw.organisations.is_none() {
                validator.problem(
                    each.span(),
                    "for_each = \"organisations\" needs an [organisations] table with `from`",
                );
            }
            continue;
        };
        for_each.insert(name.get_ref().clone());
        for org in &organisations.list {
            validator.org = Some(org.clone());
            // The link's connectors as this organisation has them, by the names the link uses.
            let mut own = BTreeMap::new();
            for side in [&link.get_ref().left, &link.get_ref().right] {
                let base = side.get_ref();
                if let Some((connector_name, table)) = per_organisation.get(base) {
                    if let Some(mut connector) = validator.connector(connector_name, table) {
                        connector.name = instance_name(base, &org.id);
                        own.insert(base.clone(), connector);
                    }
                } else if let Some(connector) = connectors.get(base) {
                    own.insert(base.clone(), connector.clone());
                }
            }
            let known = Known { declared: &declared, connectors: &own };
            if let Some(mut instance) = validator.link(&name, &link, known) {
                for side in Side::BOTH {
                    let base = instance.connectors.get(side).clone();
                    if per_organisation.contains_key(&base) {
                        *instance.connectors.get_mut(side) = instance_name(&base, &org.id);
                    }
                }
                for (_, connector) in own.into_iter().filter(|(base, _)| per_organisation.contains_key(base))
                {
                    instances.insert(connector.name.clone(), connector);
                }
                links.insert(instance.spec.name.as_str().to_string(), instance);
            }
            validator.org = None;
        }
    }
    connectors.extend(instances);

    let server = validator.server(raw.server.as_ref());
    for token in raw.server.iter().flat_map(|server| &server.tokens) {
        // An id no longer listed is allowed: its organisation's history stays until purged.
        if let Some(org) = &token.get_ref().org
            && raw.organisations.is_none()
        {
            validator.problem(
                org.span(),
                "a token's `org` limits it to one organisation of [organisations], and there is none",
            );
        }
    }
    let reports = validator.reports(raw.reports.as_ref());
    if let (Some(Some(reports)), Some(raw_reports)) = (&reports, &raw.reports) {
        let span = raw_reports.get_ref().to.span();
        for link in links.values_mut() {
            validator.org.clone_from(&link.organisation);
            link.report_to = validator.recipients(&reports.to, span.clone());
        }
        validator.org = None;
    }
    let problems = validator.problems_in_order();
    match state {
        Some(state) if problems.is_empty() => Ok(Config {
            path: file.to_path_buf(),
            state,
            connectors,
            links,
            server: server.unwrap_or_default(),
            reports: reports.flatten(),
            organisations: organisations.map(|organisations| Organisations { for_each, ..organisations }),
        }),
        _ => Err(ConfigError::Invalid { problems }),
    }
}

/// The name of an organisation's instance of a link or connector: `NAME/ID`.
pub(crate) fn instance_name(name: &str, organisation: &str) -> String {
    format!("{name}/{organisation}")
}

/// Where in `spread` the slots of the link `name` fall: the same in every process.
fn slot_offset(name: &str, spread: Duration) -> Duration {
    let millis = u64::try_from(spread.as_millis()).unwrap_or(u64::MAX);
    if millis == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(super::organisations::stable_hash(name) % millis)
}

/// Whether a string anywhere in `value` refers to an organisation's variable.
fn mentions_organisation_anywhere(value: &DeValue<'_>) -> bool {
    match value {
        DeValue::String(text) => mentions_organisation(text),
        DeValue::Table(table) => {
            table.values().any(|member| mentions_organisation_anywhere(member.get_ref()))
        }
        DeValue::Array(items) => items.iter().any(|item| mentions_organisation_anywhere(item.get_ref())),
        _ => false,
    }
}

/// The connectors a link may name: all declared ones, and those that are valid.
#[derive(Clone, Copy)]
struct Known<'a> {
    declared: &'a BTreeSet<String>,
    connectors: &'a BTreeMap<String, ConnectorConfig>,
}

struct Validator<'a> {
    file: &'a Path,
    text: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
    /// Whether connectors that need unset variables are left out rather than errors.
    offline: bool,
    /// The organisation whose instance of a link is being checked, if one.
    org: Option<Organisation>,
    /// Each problem with its byte offset, to sort them into file order, and the organisation
    /// it was found for.
    problems: Vec<(usize, Option<String>, Problem)>,
}

impl Validator<'_> {
    fn problem(&mut self, span: Range<usize>, message: impl Into<String>) {
        let location = Location::at(self.file, self.text, span.start);
        let org = self.org.as_ref().map(|org| org.id.clone());
        self.problems.push((span.start, org, Problem { location, message: message.into() }));
    }

    /// The problems in file order. One found the same for several organisations (a mistake in
    /// the link, not in an organisation's values) is said once, naming the first and how many
    /// more.
    fn problems_in_order(&mut self) -> Vec<Problem> {
        let mut problems = std::mem::take(&mut self.problems);
        problems.sort_by_key(|(offset, _, _)| *offset);
        let mut said: Vec<(Problem, Option<String>, usize)> = Vec::new();
        for (_, org, problem) in problems {
            if let Some((_, _, more)) = said.iter_mut().find(|(first, _, _)| *first == problem) {
                *more += 1;
                continue;
            }
            said.push((problem, org, 0));
        }
        said.into_iter()
            .map(|(mut problem, org, more)| {
                if let Some(org) = org {
                    let others = match more {
                        0 => String::new(),
                        1 => " and 1 more".to_string(),
                        more => format!(" and {more} more"),
                    };
                    problem.message = format!("organisation {org}{others}: {}", problem.message);
                }
                problem
            })
            .collect()
    }

    /// Reports the problem `message` at `span`, for a setting that then has no value.
    fn refused<T>(&mut self, span: Range<usize>, message: impl Into<String>) -> Option<T> {
        self.problem(span, message);
        None
    }

    /// Checks the name of a connector or link: it appears in commands, reports and URLs.
    fn name(&mut self, what: &str, name: &str, span: Range<usize>) {
        let plain = |char: char| char.is_ascii_alphanumeric() || char == '_' || char == '-';
        if name.is_empty() || !name.chars().all(plain) {
            self.problem(
                span,
                format!(
                    "{what} name {name:?} may hold only letters, digits, `_` and `-` (A-Z, a-z, 0-9, _, -)"
                ),
            );
        }
    }

    /// `choose` for an optional setting: `default` when it is absent.
    fn choose_or<T: Copy>(
        &mut self,
        value: Option<&Spanned<String>>,
        default: T,
        what: &str,
        choices: &[(&str, T)],
    ) -> Option<T> {
        value.map_or(Some(default), |value| self.choose(value, what, choices))
    }

    /// Reads one of the `choices` by name, or names them all.
    fn choose<T: Copy>(&mut self, value: &Spanned<String>, what: &str, choices: &[(&str, T)]) -> Option<T> {
        if let Some((_, choice)) = choices.iter().find(|(name, _)| *name == value.get_ref()) {
            return Some(*choice);
        }
        let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
        self.problem(
            value.span(),
            format!("unknown {what} {:?}; expected one of {}", value.get_ref(), names.join(", ")),
        );
        None
    }

    fn duration(&mut self, value: &Spanned<String>, what: &str) -> Option<Duration> {
        match duration(value.get_ref()) {
            Ok(duration) => Some(duration),
            Err(error) => self.refused(value.span(), format!("{what}: {error}")),
        }
    }

    /// A setting with `${NAME}` expanded in every string in it, however deep.
    fn expand_all<'a>(&mut self, value: &Spanned<DeValue<'a>>, used_in: &str) -> Spanned<DeValue<'a>> {
        let expanded = match value.get_ref() {
            DeValue::String(text) if text.contains("${") => {
                DeValue::String(Cow::Owned(self.expand(text, value.span(), used_in).unwrap_or_default()))
            }
            DeValue::Table(table) => DeValue::Table(
                table.iter().map(|(key, member)| (key.clone(), self.expand_all(member, used_in))).collect(),
            ),
            DeValue::Array(items) => {
                DeValue::Array(items.iter().map(|item| self.expand_all(item, used_in)).collect())
            }
            other => other.clone(),
        };
        Spanned::new(value.span(), expanded)
    }

    fn expand(&mut self, value: &str, span: Range<usize>, used_in: &str) -> Option<String> {
        match expand(value, self.env, self.org.as_ref()) {
            Ok(expanded) => Some(expanded),
            Err(message) => self.refused(span, format!("{message} (used in {used_in})")),
        }
    }

    fn base_dir(&self) -> &Path {
        self.file.parent().unwrap_or(Path::new(""))
    }

    fn state(&mut self, state: Option<&Spanned<String>>) -> Option<StateLocation> {
        let base_dir = self.base_dir().to_path_buf();
        let Some(state) = state else {
            // Said at the top of the file, where a `state` would go, should the default kind
            // refuse its default file.
            let default = StateLocation::default_at(DEFAULT_STATE_FILE, &base_dir);
            return default.map_err(|problem| self.problem(0..0, problem.0)).ok();
        };
        // A kind this build lacks is said before `${NAME}` is substituted: the secrets in its
        // URL need not be set to learn that.
        let parsed = match StateLocation::check_scheme(state.get_ref()) {
            Ok(()) => {
                let expanded = self.expand(state.get_ref(), state.span(), "state")?;
                StateLocation::parse(&expanded, &base_dir)
            }
            Err(unknown) => Err(unknown),
        };
        match parsed {
            Ok(location) => Some(location),
            Err(problem) => self.refused(state.span(), problem.0),
        }
    }

    fn connector(
        &mut self,
        name: &Spanned<Cow<'_, str>>,
        table: &Spanned<DeValue<'_>>,
    ) -> Option<ConnectorConfig> {
        let connector = name.get_ref().to_string();
        self.name("connector", &connector, name.span());
        let DeValue::Table(entries) = table.get_ref() else {
            self.problem(
                table.span(),
                format!("connector {connector} must be a table: [connectors.{connector}] with a `kind` and its settings"),
            );
            return None;
        };
        let problems_before = self.problems.len();
        let mut kind = None;
        let mut overlap = None;
        let mut webhook = None;
        let mut settings = DeTable::new();
        for (key, value) in entries {
            match key.get_ref().as_ref() {
                "kind" => kind = Some(value),
                "overlap" => overlap = Some(value),
                "webhook" => {
                    webhook = Some(self.expand_all(value, &format!("connectors.{connector}.webhook")))
                }
                setting => {
                    // `${NAME}` anywhere in a setting comes from the environment: a path, a
                    // URL, a password or token.
                    let used_in = format!("connectors.{connector}.{setting}");
                    let value = self.expand_all(value, &used_in);
                    settings.insert(key.clone(), value);
                }
            }
        }
        if self.offline && self.problems.len() > problems_before {
            // The environment lacks this connector's secrets; nothing offline needs them.
            self.problems.truncate(problems_before);
            return None;
        }

        let overlap = match overlap {
            None => Some(DEFAULT_OVERLAP),
            Some(value) => match value.get_ref() {
                DeValue::String(text) => self.duration(
                    &Spanned::new(value.span(), text.to_string()),
                    &format!("connectors.{connector}.overlap"),
                ),
                _ => self.refused(value.span(), "overlap must be a duration such as \"1m\""),
            },
        };

        let Some(kind) = kind else {
            self.problem(
                name.span(),
                format!(
                    "connector {connector} has no `kind`; expected one of {}",
                    CONNECTOR_KINDS.join(", ")
                ),
            );
            return None;
        };
        let Some(kind_name) = kind.get_ref().as_str() else {
            self.problem(
                kind.span(),
                format!("kind must be a string, one of {}", CONNECTOR_KINDS.join(", ")),
            );
            return None;
        };
        let settings =
            toml::de::ValueDeserializer::from(Spanned::new(table.span(), DeValue::Table(settings)));
        let deserialized = match ConnectorKind::deserialize(kind_name, settings) {
            Some(deserialized) => deserialized,
            None => {
                let unknown = kind_name;
                self.problem(
                    kind.span(),
                    format!(
                        "unknown connector kind {unknown:?}; expected one of {}",
                        CONNECTOR_KINDS.join(", ")
                    ),
                );
                return None;
            }
        };
        let kind = match deserialized {
            Ok(kind) => kind,
            Err(error) => {
                let span = error.span().unwrap_or_else(|| name.span());
                self.problem(span, format!("connector {connector}: {}", error.message().trim_end()));
                return None;
            }
        };
        if let Err(error) = kind.validate() {
            // Point at the deepest part of the setting's key path the file holds (a preset
            // may have filled the rest in), else at the connector's name.
            let span = setting_span(entries, error.key()).unwrap_or_else(|| name.span());
            self.problem(span, format!("connector {connector}: {error}"));
        }
        let webhook = match webhook {
            None => Some(None),
            Some(value) => self.webhook(&connector, value).map(Some),
        };
        let (overlap, webhook) = (overlap?, webhook?);
        (self.problems.len() == problems_before).then_some(ConnectorConfig {
            name: connector,
            overlap,
            kind,
            webhook,
        })
    }

    fn link(
        &mut self,
        name: &Spanned<String>,
        link: &Spanned<RawLink>,
        known: Known<'_>,
    ) -> Option<LinkConfig> {
        let problems_before = self.problems.len();
        let link_span = link.span();
        let link = link.get_ref();
        self.name("link", name.get_ref(), name.span());

        let names = SidePair::new(link.left.get_ref().clone(), link.right.get_ref().clone());
        let mut connectors = SidePair::new(None, None);
        for side in Side::BOTH {
            let value = side.pick(&link.left, &link.right);
            *connectors.get_mut(side) = self.link_connector(value, side, known);
        }
        if names.left == names.right {
            self.problem(
                link.right.span(),
                format!(
                    "left and right are the same connector {:?}; a link joins two different connectors",
                    names.right
                ),
            );
        }
        let link_connectors = LinkConnectors { names: &names, connectors: &connectors };

        let key = self.side_paths(&link.key, "link key", link_connectors);
        let fields = self.fields(&link.fields, &key, link_connectors);
        if link.fields.is_empty() {
            self.problem(
                link_span.clone(),
                format!(
                    "link {} has no fields; add [[links.{}.fields]] tables",
                    name.get_ref(),
                    name.get_ref()
                ),
            );
        }

        let conflicts = match &link.conflicts {
            None => Some(ConflictStrategy::LastWriteWins { grace: DEFAULT_GRACE, tie: Tie::Review }),
            Some(conflicts) => self.conflicts(conflicts, link_connectors),
        };
        let first_sync = match &link.first_sync {
            None => Some(FirstSyncStrategy::Review),
            Some(first_sync) => self.first_sync(first_sync, link_connectors),
        };
        let creates = self.choose_or(link.creates.as_ref(), Creates::Both, "creates policy", CREATES);
        let deletes = match &link.deletes {
            None => Some(DeletePolicy::Review),
            Some(deletes) => self.deletes(deletes, &fields, link_connectors),
        };
        let guard = match &link.guard {
            None => Some(Guard::default()),
            Some(guard) => self.guard(guard),
        };
        let full_scan_every = match &link.full_scan_every {
            None => Some(DEFAULT_FULL_SCAN_EVERY),
            Some(value) => self.duration(value, "full_scan_every").and_then(|duration| {
                if duration.is_zero() {
                    self.problem(value.span(), "full_scan_every must be longer than zero");
                    return None;
                }
                Some(duration)
            }),
        };
        let schedule = self.schedule(link);
        let spread = match &link.spread {
            None => Some(Duration::ZERO),
            Some(value) => self.spread(value, schedule.as_ref().and_then(Option::as_ref)),
        };
        let retry = match &link.retry {
            None => Some(RetryPolicy::default()),
            Some(retry) => self.retry(retry),
        };
        let audit = self.audit(link.audit.as_ref());

        if self.problems.len() != problems_before {
            return None;
        }
        let overlap = SidePair::new(
            connectors.left.map_or(DEFAULT_OVERLAP, |connector| connector.overlap),
            connectors.right.map_or(DEFAULT_OVERLAP, |connector| connector.overlap),
        );
        // An organisation's instance is named `LINK/ID`, and falls at a place of its own in
        // `spread`.
        let full_name = self
            .org
            .as_ref()
            .map_or_else(|| name.get_ref().clone(), |org| instance_name(name.get_ref(), &org.id));
        let spec = LinkSpec {
            name: LinkName::new(full_name.as_str()),
            key,
            fields,
            conflicts: conflicts?,
            first_sync: first_sync?,
            creates: creates?,
            deletes: deletes?,
            guard: guard?,
            full_scan_every: full_scan_every?,
            overlap,
            retry: retry?,
            audit: audit?.0,
        };
        Some(LinkConfig {
            spec,
            connectors: names,
            schedule: schedule?,
            slot_offset: slot_offset(&full_name, spread?),
            organisation: self.org.clone(),
            report_to: Vec::new(),
            keep: audit?.1,
        })
    }

    /// Resolves a link's `left` or `right` to a connector.
    fn link_connector<'k>(
        &mut self,
        value: &Spanned<String>,
        side: Side,
        known: Known<'k>,
    ) -> Option<&'k ConnectorConfig> {
        let name = value.get_ref();
        if !known.declared.contains(name) {
            let declared = if known.declared.is_empty() {
                "no connectors are declared".to_string()
            } else {
                format!(
                    "declared connectors: {}",
                    known.declared.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            };
            self.problem(value.span(), format!("unknown connector {name:?} as {side}; {declared}"));
        }
        // A declared connector that is itself invalid was reported already.
        known.connectors.get(name)
    }

    /// Checks a path on one side against that side's connector.
    fn path(&mut self, path: &Spanned<String>, side: Side, what: &str, link: LinkConnectors<'_>) {
        let Some(connector) = link.connectors.get(side) else {
            return;
        };
        if let Err(message) = connector.kind.validate_path(path.get_ref()) {
            self.problem(
                path.span(),
                format!(
                    "{what}: {side} path {:?} is not valid for {} connector {}: {message}",
                    path.get_ref(),
                    connector.kind.name(),
                    link.names.get(side)
                ),
            );
        }
    }

    fn side_paths(
        &mut self,
        paths: &Spanned<RawSidePaths>,
        what: &str,
        link: LinkConnectors<'_>,
    ) -> SidePair<String> {
        let paths = paths.get_ref();
        self.path(&paths.left, Side::Left, what, link);
        self.path(&paths.right, Side::Right, what, link);
        SidePair::new(paths.left.get_ref().clone(), paths.right.get_ref().clone())
    }

    /// Reads the fields, in order; those with problems are left out.
    fn fields(
        &mut self,
        raw_fields: &[Spanned<RawField>],
        key: &SidePair<String>,
        link: LinkConnectors<'_>,
    ) -> Vec<FieldSpec> {
        let mut fields = Vec::new();
        let mut first_spans: BTreeMap<&str, Range<usize>> = BTreeMap::new();
        let mut used_paths: SidePair<BTreeMap<String, String>> = SidePair::default();
        for raw_field in raw_fields {
            let raw_field = raw_field.get_ref();
            let name = raw_field.name.get_ref();
            if name.trim().is_empty() {
                self.problem(raw_field.name.span(), "a field name cannot be empty");
            } else if let Some(first) = first_spans.get(name.as_str()) {
                let first = Location::at(self.file, self.text, first.start);
                self.problem(
                    raw_field.name.span(),
                    format!("field {name} is declared twice; the first is at line {}", first.line),
                );
            } else {
                first_spans.insert(name, raw_field.name.span());
            }
            let what = format!("field {name}");
            let field_type = match &raw_field.field_type {
                None => Some(FieldType::Text),
                Some(value) => {
                    let choices: Vec<(&str, FieldType)> =
                        FieldType::ALL.iter().map(|field_type| (field_type.as_str(), *field_type)).collect();
                    self.choose(value, "field type", &choices)
                }
            };
            let direction =
                self.choose_or(raw_field.direction.as_ref(), Direction::Both, "direction", DIRECTIONS);
            let paths = SidePair::new(&raw_field.left, &raw_field.right);
            for side in Side::BOTH {
                let path = *paths.get(side);
                self.path(path, side, &what, link);
                if key.get(side) == path.get_ref() {
                    self.problem(
                        path.span(),
                        format!(
                            "{what}: {side} path {:?} is the link key, which is never written as a field",
                            path.get_ref()
                        ),
                    );
                } else if let Some(other) = used_paths.get(side).get(path.get_ref()) {
                    self.problem(
                        path.span(),
                        format!(
                            "{what}: {side} path {:?} is already the path of field {other}",
                            path.get_ref()
                        ),
                    );
                } else {
                    used_paths.get_mut(side).insert(path.get_ref().clone(), name.clone());
                }
            }
            let Some(field_type) = field_type else { continue };
            let normalisers = self.normalisers(raw_field, field_type, link);
            let (Some(direction), Some(normalisers)) = (direction, normalisers) else { continue };
            fields.push(FieldSpec {
                name: name.clone(),
                paths: SidePair::new(raw_field.left.get_ref().clone(), raw_field.right.get_ref().clone()),
                normalisers,
                direction,
            });
        }
        fields
    }

    fn normalisers(
        &mut self,
        raw_field: &RawField,
        field_type: FieldType,
        link: LinkConnectors<'_>,
    ) -> Option<SidePair<Normaliser>> {
        // A value no rule reads is copied by default: what a person typed reaches the other
        // side, with a warning, rather than waiting unseen until someone corrects it.
        let choices = [("hold", Invalid::Hold), ("copy", Invalid::Copy)];
        let invalid = self.choose_or(raw_field.invalid.as_ref(), Invalid::Copy, "invalid", &choices)?;
        let mut normaliser = Normaliser::new(field_type)
            .with_empty_is_null(raw_field.empty_is_null.unwrap_or(true))
            .with_invalid(invalid);
        if let Some(region) = &raw_field.region {
            if field_type != FieldType::Phone {
                self.problem(
                    region.span(),
                    format!(
                        "region applies to phone fields only; field {} is {field_type}",
                        raw_field.name.get_ref()
                    ),
                );
                return None;
            }
            normaliser = match normaliser.with_region(region.get_ref()) {
                Ok(normaliser) => normaliser,
                Err(error) => {
                    self.problem(region.span(), error.reason);
                    return None;
                }
            };
        }
        let mut for_side = |side: Side| {
            let formats = link.connectors.get(side).map(|connector| connector.kind.date_formats().to_vec());
            let normaliser = normaliser.clone().with_date_formats(formats.unwrap_or_default());
            let Some(values) = &raw_field.values else { return Some(normaliser) };
            let spellings = side.pick(&values.get_ref().left, &values.get_ref().right);
            let Some(spellings) = spellings else { return Some(normaliser) };
            match normaliser
                .with_spellings(spellings.iter().map(|(value, spelling)| (value.clone(), spelling.clone())))
            {
                Ok(normaliser) => Some(normaliser),
                Err(error) => self.refused(
                    values.span(),
                    format!(
                        "values.{side} of field {}: {} ({})",
                        raw_field.name.get_ref(),
                        error.raw,
                        error.reason
                    ),
                ),
            }
        };
        let left = for_side(Side::Left);
        let right = for_side(Side::Right);
        Some(SidePair::new(left?, right?))
    }

    /// Reads a `tie` or `side`: a connector of the link, `left` or `right`, and for a tie
    /// also `review`.
    fn side(
        &mut self,
        value: &Spanned<String>,
        what: &str,
        link: LinkConnectors<'_>,
        review: bool,
    ) -> Option<Tie> {
        let names = link.names;
        let text = value.get_ref();
        if review && text == "review" {
            return Some(Tie::Review);
        }
        if let Some(side) = super::side_named(names, text) {
            return Some(Tie::Side(side));
        }
        if link.connectors.left.is_none() || link.connectors.right.is_none() {
            // A connector of the link is unknown or invalid, which was reported already;
            // this name may well be right.
            return None;
        }
        let review = if review { " or review" } else { "" };
        self.problem(
            value.span(),
            format!(
                "{what} {text:?} is not a side of this link; expected {}, {}, left, right{review}",
                names.left, names.right
            ),
        );
        None
    }

    /// Names keys of a strategy table that its strategy does not take.
    fn extra_keys(&mut self, raw: &RawStrategy, allowed: &[&str]) {
        let strategy = raw.strategy.get_ref();
        let present = [("grace", &raw.grace), ("tie", &raw.tie), ("side", &raw.side)];
        for (key, value) in present {
            if let Some(value) = value
                && !allowed.contains(&key)
            {
                let takes = match allowed {
                    [] => "takes no other settings".to_string(),
                    allowed => format!("takes only {}", allowed.join(" and ")),
                };
                self.problem(
                    value.span(),
                    format!("`{key}` does not belong to strategy {strategy:?}, which {takes}"),
                );
            }
        }
    }

    fn prefer_side(&mut self, raw: &Spanned<RawStrategy>, link: LinkConnectors<'_>) -> Option<Side> {
        let names = link.names;
        let strategy = raw.get_ref();
        self.extra_keys(strategy, &["side"]);
        let Some(side) = &strategy.side else {
            self.problem(
                strategy.strategy.span(),
                format!("strategy \"prefer\" needs a `side`: {}, {}, left or right", names.left, names.right),
            );
            return None;
        };
        match self.side(side, "side", link, false)? {
            Tie::Side(side) => Some(side),
            Tie::Review => None,
        }
    }

    fn conflicts(
        &mut self,
        raw: &Spanned<RawStrategy>,
        link: LinkConnectors<'_>,
    ) -> Option<ConflictStrategy> {
        #[derive(Clone, Copy)]
        enum Kind {
            LastWriteWins,
            Prefer,
            Review,
        }
        let strategy = raw.get_ref();
        let kind = self.choose(
            &strategy.strategy,
            "conflict strategy",
            &[("last_write_wins", Kind::LastWriteWins), ("prefer", Kind::Prefer), ("review", Kind::Review)],
        )?;
        match kind {
            Kind::LastWriteWins => {
                self.extra_keys(strategy, &["grace", "tie"]);
                let grace = match &strategy.grace {
                    None => Some(DEFAULT_GRACE),
                    Some(grace) => self.duration(grace, "grace"),
                };
                let tie = match &strategy.tie {
                    None => Some(Tie::Review),
                    Some(tie) => self.side(tie, "tie", link, true),
                };
                Some(ConflictStrategy::LastWriteWins { grace: grace?, tie: tie? })
            }
            Kind::Prefer => self.prefer_side(raw, link).map(ConflictStrategy::Prefer),
            Kind::Review => {
                self.extra_keys(strategy, &[]);
                Some(ConflictStrategy::Review)
            }
        }
    }

    fn first_sync(
        &mut self,
        raw: &Spanned<RawStrategy>,
        link: LinkConnectors<'_>,
    ) -> Option<FirstSyncStrategy> {
        let strategy = raw.get_ref();
        match strategy.strategy.get_ref().as_str() {
            "prefer" => self.prefer_side(raw, link).map(FirstSyncStrategy::Prefer),
            "review" => {
                self.extra_keys(strategy, &[]);
                Some(FirstSyncStrategy::Review)
            }
            "last_write_wins" => {
                self.problem(
                    strategy.strategy.span(),
                    "a first sync has no baseline to tell which edit is newer; use strategy \"prefer\" or \"review\"",
                );
                None
            }
            other => {
                self.problem(
                    strategy.strategy.span(),
                    format!("unknown first_sync strategy {other:?}; expected one of prefer, review"),
                );
                None
            }
        }
    }

    fn deletes(
        &mut self,
        deletes: &Spanned<RawDeletes>,
        fields: &[FieldSpec],
        link: LinkConnectors<'_>,
    ) -> Option<DeletePolicy> {
        let soft = match deletes.get_ref() {
            RawDeletes::Policy(policy) if policy == "soft" => {
                self.problem(
                    deletes.span(),
                    "soft deletes need a field and a value: deletes = { soft = { field = \"status\", value = \"inactive\" } }",
                );
                return None;
            }
            RawDeletes::Policy(policy) => {
                #[derive(Clone, Copy)]
                enum Plain {
                    Propagate,
                    Ignore,
                    Review,
                }
                let plain = self.choose(
                    &Spanned::new(deletes.span(), policy.clone()),
                    "deletes policy",
                    &[("propagate", Plain::Propagate), ("ignore", Plain::Ignore), ("review", Plain::Review)],
                )?;
                return Some(match plain {
                    Plain::Propagate => DeletePolicy::Propagate,
                    Plain::Ignore => DeletePolicy::Ignore,
                    Plain::Review => DeletePolicy::Review,
                });
            }
            RawDeletes::Soft(soft) => soft,
        };
        let value = soft.value.get_ref();
        if !(value.is_string() || value.is_number() || value.is_boolean()) {
            self.problem(soft.value.span(), "a soft-delete value must be a string, a number or a boolean");
            return None;
        }
        let field_name = soft.field.get_ref();
        if let Some(field) = fields.iter().find(|field| &field.name == field_name) {
            // A tracked field: write it through its normalisers, so the value must suit them —
            // by their rules, not copied as a value no rule reads.
            for side in Side::BOTH {
                if let Reading::Copied(_, error) | Reading::Invalid(error) =
                    field.normalisers.get(side).read(value)
                {
                    self.problem(
                        soft.value.span(),
                        format!("soft-delete value for field {field_name}: {error}"),
                    );
                    return None;
                }
            }
            return Some(DeletePolicy::Soft { paths: field.paths.clone(), value: value.clone() });
        }
        // Not a tracked field: a path, the same on both sides.
        if field_name.trim().is_empty() {
            self.problem(soft.field.span(), "a soft-delete field cannot be empty");
            return None;
        }
        let problems_before = self.problems.len();
        for side in Side::BOTH {
            self.path(&soft.field, side, "soft-delete field", link);
        }
        (self.problems.len() == problems_before).then(|| DeletePolicy::Soft {
            paths: SidePair::new(field_name.clone(), field_name.clone()),
            value: value.clone(),
        })
    }

    fn guard(&mut self, guard: &RawGuard) -> Option<Guard> {
        let defaults = Guard::default();
        let max_delete = guard
            .max_delete
            .as_ref()
            .map_or(Some(defaults.max_delete), |limit| self.limit(limit, "max_delete"));
        let max_change = guard
            .max_change
            .as_ref()
            .map_or(Some(defaults.max_change), |limit| self.limit(limit, "max_change"));
        Some(Guard { max_delete: max_delete?, max_change: max_change? })
    }

    fn limit(&mut self, limit: &Spanned<RawLimit>, what: &str) -> Option<Limit> {
        let wrong =
            format!("{what} is a share such as \"10%\" (0% to 100%) or a number of records such as 25");
        let parsed = match limit.get_ref() {
            RawLimit::Integer(count) => u64::try_from(*count).ok().map(Limit::Count),
            RawLimit::Float(_) => None,
            RawLimit::Text(text) => match text.trim().strip_suffix('%') {
                Some(percent) => percent
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|percent| (0.0..=100.0).contains(percent))
                    .map(|percent| Limit::Share(percent / 100.0)),
                None => text.trim().parse::<u64>().ok().map(Limit::Count),
            },
        };
        if parsed.is_none() {
            let written = match limit.get_ref() {
                RawLimit::Integer(count) => count.to_string(),
                RawLimit::Float(float) => float.to_string(),
                RawLimit::Text(text) => format!("{text:?}"),
            };
            self.problem(limit.span(), format!("{wrong}, not {written}"));
        }
        parsed
    }

    fn retry(&mut self, retry: &RawRetry) -> Option<RetryPolicy> {
        let defaults = RetryPolicy::default();
        let attempts = match &retry.attempts {
            None => Some(defaults.attempts),
            Some(attempts) => {
                let parsed = u32::try_from(*attempts.get_ref()).ok().filter(|attempts| *attempts >= 1);
                if parsed.is_none() {
                    self.problem(
                        attempts.span(),
                        format!("retry attempts must be at least 1, not {}", attempts.get_ref()),
                    );
                }
                parsed
            }
        };
        let mut duration = |value: &Option<Spanned<String>>, default: Duration, what: &str| match value {
            None => Some(default),
            Some(value) => self.duration(value, what),
        };
        let initial = duration(&retry.initial, defaults.initial, "retry initial");
        let max = duration(&retry.max, defaults.max, "retry max");
        let wait_in_run = duration(&retry.wait_in_run, defaults.wait_in_run, "retry wait_in_run");
        if let Some(initial) = initial
            && initial.is_zero()
        {
            let span = retry.initial.as_ref().map_or(0..0, Spanned::span);
            self.problem(span, "retry initial must be longer than zero");
            return None;
        }
        if let (Some(initial), Some(max)) = (initial, max)
            && max < initial
        {
            let span = retry.max.as_ref().or(retry.initial.as_ref()).map_or(0..0, Spanned::span);
            self.problem(span, "retry max must be at least retry initial");
            return None;
        }
        let (attempts, initial, max, wait_in_run) = (attempts?, initial?, max?, wait_in_run?);
        Some(RetryPolicy { attempts, initial, max, wait_in_run })
    }
}

/// The span of the value at `key` (outermost first) in a connector's table, or of its
/// deepest part that is written there; none when not even the first key is.
fn setting_span(entries: &DeTable<'_>, key: &[String]) -> Option<Range<usize>> {
    let (first, rest) = key.split_first()?;
    let value = entries.get(first.as_str())?;
    let deeper = match value.get_ref() {
        DeValue::Table(table) => setting_span(table, rest),
        _ => None,
    };
    Some(deeper.unwrap_or_else(|| value.span()))
}

/// The connectors of one link, by side: their names, and the valid ones.
#[derive(Clone, Copy)]
struct LinkConnectors<'a> {
    names: &'a SidePair<String>,
    connectors: &'a SidePair<Option<&'a ConnectorConfig>>,
}
