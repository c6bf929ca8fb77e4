//! A fast path for the phone normaliser. Parsing and validating a number with `phonenumber`
//! costs about 15 µs, most of it in running a dozen regular expressions one at a time behind
//! a mutex, and loading its metadata about a tenth of a second per process; an initial sync
//! of a million members with two phone fields would spend half a minute there. `fast_e164`
//! reads the common shapes (`06 12345678`, `+31 6 1234 5678`, `020-1234567`) itself, from
//! `phone_metadata.json` — what it needs of the library's metadata, extracted by a test that
//! also checks it is current — and checks validity with one `RegexSet` per region. It answers
//! only where its answer is the library's, valid or not; for anything else it returns `None`
//! and the caller asks the library. `phone_fast_path_agrees_with_the_library` holds it to that
//! over every region's example numbers in many spellings.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock, RwLock};

use phonenumber::country::Id;
use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use serde::{Deserialize, Serialize};

/// The shortest and longest national significant numbers the library accepts.
const NSN_LENGTHS: std::ops::RangeInclusive<usize> = 2..=17;

/// Below this many digits the fast path leaves the number to the library, whose rules for
/// very short input have corners of their own.
const FEWEST_DIGITS: usize = 6;

/// What the library says of a plainly written number that is not valid.
const INVALID: &str = "not a valid number for its country";

/// What the fast path needs of the library's metadata (`phone_metadata.json`).
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Table {
    regions: Vec<Region>,
    /// Per calling code, its regions (indexes into `regions`) in the library's order; the one
    /// entry of a non-geographic code (region "001") is that code's own.
    codes: BTreeMap<u16, Vec<usize>>,
}

/// One region's metadata. Patterns are the library's, laid out with whitespace it ignores.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Region {
    id: String,
    code: u16,
    national_prefix: Option<String>,
    prefix_for_parsing: Option<String>,
    international_prefix: Option<String>,
    leading_digits: Option<String>,
    general: Desc,
    /// The types `phonenumber::validator::number_type` tries after the general pattern: a
    /// number matching any of them is not `Type::Unknown`, so it is valid.
    types: Vec<Desc>,
}

/// A descriptor: its national number pattern and possible lengths (none: any).
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Desc {
    pattern: String,
    lengths: Vec<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    local_lengths: Vec<u16>,
}

impl Desc {
    fn allows(&self, length: usize) -> bool {
        self.lengths.is_empty() || self.lengths.iter().any(|&possible| usize::from(possible) == length)
    }
}

/// The table, read once, with its regions by id (non-geographic ones are found by code).
struct Metadata {
    table: Table,
    by_id: HashMap<String, usize>,
}

fn metadata() -> &'static Metadata {
    static METADATA: OnceLock<Metadata> = OnceLock::new();
    METADATA.get_or_init(|| {
        // The file is part of the build, and checked by `phone_metadata_is_the_librarys`.
        let table: Table = serde_json::from_str(include_str!("phone_metadata.json"))
            .unwrap_or_else(|error| unreachable!("phone_metadata.json is valid: {error}"));
        let by_id = table
            .regions
            .iter()
            .enumerate()
            .filter(|(_, region)| region.id != "001")
            .map(|(index, region)| (region.id.clone(), index))
            .collect();
        Metadata { table, by_id }
    })
}

/// A region's patterns, compiled on first use. `find(value)` starting at 0 is the same test
/// as a match of the pattern anchored at the start: the leftmost match starts at 0 whenever
/// any match does.
#[derive(Debug)]
struct RegionRules {
    general: Regex,
    types: RegexSet,
    leading_digits: Option<Regex>,
    prefix_for_parsing: Option<Regex>,
    international_prefix: Option<Regex>,
}

fn anchored(pattern: &str) -> String {
    format!("^(?:{pattern})")
}

/// A pattern compiled for text of ASCII digits, which is all the fast path matches: without
/// Unicode classes (`\d` is `[0-9]`), which compiles every region's rules in a tenth of the
/// time (30 ms against 300 ms), a cost each process pays for the regions its numbers are in.
fn regex(pattern: &str) -> Option<Regex> {
    RegexBuilder::new(&anchored(pattern)).ignore_whitespace(true).unicode(false).build().ok()
}

impl RegionRules {
    fn new(region: &Region) -> Option<Self> {
        let optional = |pattern: &Option<String>| match pattern {
            Some(pattern) => regex(pattern).map(Some),
            None => Some(None),
        };
        Some(Self {
            general: regex(&region.general.pattern)?,
            types: RegexSetBuilder::new(region.types.iter().map(|desc| anchored(&desc.pattern)))
                .ignore_whitespace(true)
                .unicode(false)
                .build()
                .ok()?,
            leading_digits: optional(&region.leading_digits)?,
            prefix_for_parsing: optional(&region.prefix_for_parsing)?,
            international_prefix: optional(&region.international_prefix)?,
        })
    }
}

/// Every region's compiled rules, by index in the table.
fn rules(index: usize) -> Option<Arc<RegionRules>> {
    static RULES: OnceLock<RwLock<HashMap<usize, Option<Arc<RegionRules>>>>> = OnceLock::new();
    let compiled = RULES.get_or_init(RwLock::default);
    if let Some(found) = compiled.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&index) {
        return found.clone();
    }
    let made = metadata().table.regions.get(index).and_then(RegionRules::new).map(Arc::new);
    compiled.write().unwrap_or_else(std::sync::PoisonError::into_inner).entry(index).or_insert(made).clone()
}

/// Whether the region's pattern matches `text` at its start.
fn matches_at_start(pattern: Option<&Regex>, text: &str) -> bool {
    pattern.is_some_and(|pattern| pattern.is_match(text))
}

/// `phonenumber::validator::number_type(meta, national) != Type::Unknown` for one region.
fn valid_in(index: usize, national: &str) -> bool {
    let (Some(region), Some(rules)) = (metadata().table.regions.get(index), rules(index)) else {
        return false;
    };
    let length = national.len();
    if !(region.general.allows(length) && rules.general.is_match(national)) {
        return false;
    }
    rules.types.matches(national).iter().any(|matched| region.types[matched].allows(length))
}

/// `phonenumber::is_valid` for a number with this calling code and national number (no
/// leading zero), region by region as `validator::source_for` chooses it.
fn is_valid(code: u16, national: &str) -> bool {
    let Some(regions) = metadata().table.codes.get(&code) else { return false };
    let chosen = match regions.as_slice() {
        [only] => Some(*only),
        several => several.iter().copied().find(|&index| match rules(index) {
            Some(rules) => match &rules.leading_digits {
                Some(leading) => leading.is_match(national),
                None => valid_in(index, national),
            },
            None => false,
        }),
    };
    chosen.is_some_and(|index| valid_in(index, national))
}

/// The digits of `text` and whether it began with `+`, when it is written with nothing but
/// digits, one leading `+`, spaces, hyphens, dots and parentheses; `None` otherwise.
fn plain_digits(text: &str) -> Option<(String, bool)> {
    let (plus, rest) = match text.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let mut digits = String::with_capacity(rest.len());
    for character in rest.chars() {
        match character {
            '0'..='9' => digits.push(character),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return None,
        }
    }
    // A parenthesis before the first digit or a separator at either end is a corner the
    // library's extraction rules treat in ways of their own.
    let first = rest.chars().next()?;
    let last = rest.chars().next_back()?;
    (first.is_ascii_digit() && last.is_ascii_digit()).then_some((digits, plus))
}

/// What `phonenumber` makes of `text`: its E.164 form, or why it has none.
pub(crate) fn library_e164(region: Option<Id>, text: &str) -> Result<String, String> {
    let parsed = phonenumber::parse(region, text).map_err(|error| error.to_string())?;
    if !phonenumber::is_valid(&parsed) {
        return Err(INVALID.into());
    }
    Ok(parsed.format().mode(phonenumber::Mode::E164).to_string())
}

/// What `phonenumber::parse(region, text)` followed by `is_valid` and E.164 formatting gives
/// for `text` (already trimmed) — the number, or why it is not valid — when it is simply
/// written; `None` when the library must decide (an extension, a national prefix rule with a
/// pattern, a code shared by several regions without a default region, and other corners).
pub(crate) fn fast_e164(region: Option<Id>, text: &str) -> Option<Result<String, String>> {
    let (digits, plus) = plain_digits(text)?;
    if digits.len() < FEWEST_DIGITS || digits.starts_with('0') && plus {
        return None;
    }
    let metadata = metadata();
    let default = match region {
        Some(id) => Some(*metadata.by_id.get(id.as_ref())?),
        None => None,
    };
    let region_of = |index: usize| &metadata.table.regions[index];
    // An international prefix the default region dials (`00`, `011`) is the library's to strip.
    if let Some(index) = default
        && matches_at_start(rules(index)?.international_prefix.as_ref(), &digits)
    {
        return None;
    }
    let (code, national) = if plus {
        // Calling codes are one to three digits and none is the start of another.
        let (code, national) = (1..=3).find_map(|length| {
            let code: u16 = digits[..length].parse().ok()?;
            metadata.table.codes.contains_key(&code).then(|| (code, &digits[length..]))
        })?;
        // The library strips a national prefix here: with a default region *that* region's,
        // without one the prefix of the code's region (chosen by the number when several
        // regions share the code: left to the library). Where one would be stripped, it decides.
        let index = match (default, metadata.table.codes.get(&code).map(Vec::as_slice)) {
            (Some(index), _) => index,
            (None, Some([only])) => *only,
            (None, _) => return None,
        };
        let meta = region_of(index);
        if meta.national_prefix.as_deref().is_some_and(|prefix| national.starts_with(prefix))
            || matches_at_start(rules(index)?.prefix_for_parsing.as_ref(), national)
        {
            return None;
        }
        (code, national)
    } else {
        let meta = region_of(default?);
        let code = meta.code;
        // A national number spelt with its calling code but no `+` is read by a rule of its own.
        if digits.starts_with(&code.to_string()) || meta.prefix_for_parsing.is_some() {
            return None;
        }
        let national = match meta.national_prefix.as_deref() {
            Some(prefix) if digits.starts_with(prefix) => {
                let stripped = &digits[prefix.len()..];
                // The library strips the prefix a second time when it is there again, and keeps
                // it when what remains is too short for the region.
                let minimum = meta.general.lengths.first().map_or(0, |&length| usize::from(length));
                let local_only = meta.general.local_lengths.contains(&(stripped.len() as u16));
                if stripped.starts_with(prefix) || (stripped.len() < minimum && !local_only) {
                    return None;
                }
                stripped
            }
            _ => digits.as_str(),
        };
        (code, national)
    };
    if !NSN_LENGTHS.contains(&national.len()) || national.starts_with('0') {
        return None;
    }
    Some(if is_valid(code, national) { Ok(format!("+{code}{national}")) } else { Err(INVALID.into()) })
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use phonenumber::metadata::{DATABASE, Descriptor};

    use super::*;

    /// Runs of whitespace made one space: the patterns are compiled ignoring whitespace, as the
    /// library compiles them, so this changes nothing but the size of the file.
    fn compact(pattern: &str) -> String {
        pattern.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    fn desc(descriptor: &Descriptor) -> Desc {
        Desc {
            pattern: compact(descriptor.national_number().as_str()),
            lengths: descriptor.possible_length().to_vec(),
            local_lengths: descriptor.possible_local_length().to_vec(),
        }
    }

    /// The table as the library's metadata gives it now.
    fn extract() -> Table {
        // The library lists its regions by id, so the non-geographic ones ("001", one per
        // calling code) come from their codes.
        let non_geographic =
            (1..1000u16).filter(|code| DATABASE.region(code).is_some_and(|ids| ids == ["001"]));
        let metas: Vec<&phonenumber::metadata::Metadata> = DATABASE
            .iter()
            .filter(|meta| meta.id() != "001")
            .chain(
                non_geographic
                    .filter_map(|code| DATABASE.by_code(&code).and_then(|metas| metas.first().copied())),
            )
            .collect();
        let mut regions: Vec<Region> = metas
            .into_iter()
            .map(|meta| {
                let descriptors = meta.descriptors();
                let types = [
                    descriptors.premium_rate(),
                    descriptors.toll_free(),
                    descriptors.shared_cost(),
                    descriptors.voip(),
                    descriptors.personal_number(),
                    descriptors.pager(),
                    descriptors.uan(),
                    descriptors.voicemail(),
                    descriptors.fixed_line(),
                    descriptors.mobile(),
                ];
                Region {
                    id: meta.id().to_string(),
                    code: meta.country_code(),
                    national_prefix: meta.national_prefix().map(str::to_string),
                    prefix_for_parsing: meta
                        .national_prefix_for_parsing()
                        .map(|pattern| compact(pattern.as_str())),
                    international_prefix: meta
                        .international_prefix()
                        .map(|pattern| compact(pattern.as_str())),
                    leading_digits: meta.leading_digits().map(|pattern| compact(pattern.as_str())),
                    general: desc(descriptors.general()),
                    types: types.into_iter().flatten().map(desc).collect(),
                }
            })
            .collect();
        // The library keeps its regions in a map: sorted, the file is the same from run to run.
        regions.sort_by(|a, b| (a.code, &a.id).cmp(&(b.code, &b.id)));
        let position =
            |id: &str, code: u16| regions.iter().position(|region| region.id == id && region.code == code);
        let mut codes = BTreeMap::new();
        for code in 1..1000 {
            let Some(ids) = DATABASE.region(&code) else { continue };
            let indexes: Option<Vec<usize>> = if ids == ["001"] {
                DATABASE
                    .by_code(&code)
                    .and_then(|metas| metas.first().and_then(|meta| position(meta.id(), code)))
                    .map(|index| vec![index])
            } else {
                ids.iter().map(|id| position(id, code)).collect()
            };
            let Some(indexes) = indexes else {
                panic!("code {code}: regions {ids:?} are not all in the table")
            };
            codes.insert(code, indexes);
        }
        Table { regions, codes }
    }

    /// The embedded table is what the library's metadata says: after an upgrade of
    /// `phonenumber`, `FIELDSYNC_WRITE_PHONE_METADATA=1 cargo test -p fieldsync-model
    /// phone_metadata` writes it anew.
    #[test]
    fn phone_metadata_is_the_librarys() {
        let current = extract();
        if std::env::var_os("FIELDSYNC_WRITE_PHONE_METADATA").is_some() {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/phone_metadata.json");
            std::fs::write(path, serde_json::to_string(&current).unwrap() + "\n").unwrap();
        }
        assert!(
            metadata().table == current,
            "src/phone_metadata.json is not the metadata of the phonenumber crate in use: \
             FIELDSYNC_WRITE_PHONE_METADATA=1 cargo test -p fieldsync-model phone_metadata"
        );
    }

    /// Ways people write a number: `national` is what follows the national prefix (if the
    /// region has one), `code` the calling code.
    fn spellings(code: u16, national: &str, prefix: Option<&str>) -> Vec<String> {
        let prefix = prefix.unwrap_or("");
        let (head, tail) = national.split_at(national.len().min(3));
        vec![
            format!("{prefix}{national}"),
            format!("{prefix}{head} {tail}"),
            format!("{prefix}{head}-{tail}"),
            format!("({prefix}{head}) {tail}"),
            format!("{national}"),
            format!("+{code}{national}"),
            format!("+{code} {head} {tail}"),
            format!("+{code} ({prefix}){national}"),
            format!("+{code}.{head}.{tail}"),
            format!("{code}{national}"),
            format!("+{code}{prefix}{national}"),
        ]
    }

    /// The example number, and the same with its last digit changed, one digit dropped and
    /// one added, so that invalid numbers are tried too.
    fn mutations(national: &str) -> Vec<String> {
        let mut list = vec![national.to_string()];
        if let Some(last) = national.chars().last() {
            let changed = char::from(b'0' + (last.to_digit(10).unwrap_or(0) as u8 + 7) % 10);
            list.push(format!("{}{changed}", &national[..national.len() - 1]));
            list.push(national[..national.len() - 1].to_string());
        }
        list.push(format!("{national}4"));
        list
    }

    #[test]
    fn phone_fast_path_agrees_with_the_library() {
        let defaults: Vec<Option<Id>> = [None, Some("NL")]
            .into_iter()
            .map(|region| region.map(|region| Id::from_str(region).unwrap()))
            .collect();
        // Cases the library finds valid, and how many of them the fast path answered.
        let mut valid = 0;
        let mut answered = 0;
        for meta in DATABASE.iter() {
            let descriptors = meta.descriptors();
            let examples: Vec<&str> = [descriptors.fixed_line(), descriptors.mobile()]
                .into_iter()
                .flatten()
                .filter_map(Descriptor::example)
                .collect();
            let own = Id::from_str(meta.id()).ok();
            for example in examples {
                for national in mutations(example) {
                    for text in spellings(meta.country_code(), &national, meta.national_prefix()) {
                        for region in defaults.iter().copied().chain([own]) {
                            let library = library_e164(region, &text);
                            valid += usize::from(library.is_ok());
                            let Some(fast) = fast_e164(region, &text) else { continue };
                            answered += usize::from(fast.is_ok());
                            assert_eq!(
                                fast,
                                library,
                                "{text:?} with default region {region:?} (example of {})",
                                meta.id()
                            );
                        }
                    }
                }
            }
        }
        // The fast path must carry the common shapes, or it would be no faster.
        assert!(answered * 2 > valid, "the fast path answered only {answered} of {valid} valid numbers");
        let dutch = Some(Id::NL);
        for text in
            ["06 12345678", "+31 6 1234 5678", "020-1234567", "0612345678", "+44 20 7946 0958", "06 1234567"]
        {
            assert_eq!(fast_e164(dutch, text), Some(library_e164(dutch, text)), "{text} takes the fast path");
        }
        assert_eq!(
            fast_e164(dutch, "06 1234567"),
            Some(Err(INVALID.to_string())),
            "too short for a Dutch mobile"
        );
    }

    #[test]
    fn every_regions_rules_compile_for_the_fast_path() {
        let failed: Vec<&str> = (0..metadata().table.regions.len())
            .filter(|&index| rules(index).is_none())
            .map(|index| metadata().table.regions[index].id.as_str())
            .collect();
        assert!(
            failed.is_empty(),
            "these regions' patterns do not compile, so the library reads them: {failed:?}"
        );
    }
}
