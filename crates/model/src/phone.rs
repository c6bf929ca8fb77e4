//! A fast path for the phone normaliser. Parsing and validating a number with `phonenumber`
//! costs about 15 µs, most of it in running a dozen regular expressions one at a time behind
//! a mutex; an initial sync of a million members with two phone fields spends half a minute
//! there. `fast_e164` reads the common shapes (`06 12345678`, `+31 6 1234 5678`,
//! `020-1234567`) itself and checks validity with one `RegexSet` per region built from the
//! same metadata, and answers only where its answer is the library's: for anything else it
//! returns `None` and the caller asks the library. `phone_fast_path_agrees_with_the_library`
//! holds it to that over every region's example numbers in many spellings.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use phonenumber::country::Id;
use phonenumber::metadata::{DATABASE, Descriptor, Metadata};
use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

/// The shortest and longest national significant numbers the library accepts.
const NSN_LENGTHS: std::ops::RangeInclusive<usize> = 2..=17;

/// Below this many digits the fast path leaves the number to the library, whose rules for
/// very short input have corners of their own.
const FEWEST_DIGITS: usize = 6;

/// A descriptor's test: its possible lengths (none: any) and whether its pattern matches at
/// the start of a national number, as `Descriptor::is_match` does.
#[derive(Debug)]
struct LengthRule(Vec<u16>);

impl LengthRule {
    fn of(descriptor: &Descriptor) -> Self {
        Self(descriptor.possible_length().to_vec())
    }

    fn allows(&self, length: usize) -> bool {
        self.0.is_empty() || self.0.iter().any(|&possible| usize::from(possible) == length)
    }
}

/// What validating a national number against one region needs, compiled once.
#[derive(Debug)]
struct RegionRules {
    general: Regex,
    general_lengths: LengthRule,
    /// The patterns of the number types that make a number valid, in one set.
    types: RegexSet,
    type_lengths: Vec<LengthRule>,
    leading_digits: Option<Regex>,
}

impl RegionRules {
    fn new(meta: &Metadata) -> Option<Self> {
        let descriptors = meta.descriptors();
        // The types `phonenumber::validator::number_type` tries after the general pattern:
        // a number matching any of them is not `Type::Unknown`, so it is valid.
        let types: Vec<&Descriptor> = [
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
        ]
        .into_iter()
        .flatten()
        .collect();
        // `find(value)` starting at 0 is the same test as a match of the pattern anchored at
        // the start: the leftmost match starts at 0 whenever any match does. The metadata's
        // patterns are laid out with whitespace, which the library ignores.
        let anchored = |pattern: &str| format!("^(?:{pattern})");
        let regex =
            |pattern: &str| RegexBuilder::new(&anchored(pattern)).ignore_whitespace(true).build().ok();
        Some(Self {
            general: regex(descriptors.general().national_number().as_str())?,
            general_lengths: LengthRule::of(descriptors.general()),
            types: RegexSetBuilder::new(
                types.iter().map(|descriptor| anchored(descriptor.national_number().as_str())),
            )
            .ignore_whitespace(true)
            .build()
            .ok()?,
            type_lengths: types.iter().map(|descriptor| LengthRule::of(descriptor)).collect(),
            leading_digits: match meta.leading_digits() {
                Some(pattern) => Some(regex(pattern.as_str())?),
                None => None,
            },
        })
    }

    /// `phonenumber::validator::number_type(meta, national) != Type::Unknown`.
    fn is_valid(&self, national: &str) -> bool {
        let length = national.len();
        if !(self.general_lengths.allows(length) && self.general.is_match(national)) {
            return false;
        }
        self.types.matches(national).iter().any(|index| self.type_lengths[index].allows(length))
    }
}

/// The compiled rules of every region asked about so far, and the regions of each calling code.
#[derive(Default)]
struct Rules {
    regions: RwLock<HashMap<String, Option<Arc<RegionRules>>>>,
}

fn rules() -> &'static Rules {
    static RULES: OnceLock<Rules> = OnceLock::new();
    RULES.get_or_init(Rules::default)
}

impl Rules {
    fn region(&self, id: &str) -> Option<Arc<RegionRules>> {
        if let Some(found) = self.regions.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(id) {
            return found.clone();
        }
        let compiled = DATABASE.by_id(id).and_then(RegionRules::new).map(Arc::new);
        self.regions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(id.to_string())
            .or_insert(compiled)
            .clone()
    }

    /// `phonenumber::is_valid` for a number with this calling code and national number
    /// (no leading zero), region by region as `validator::source_for` chooses it.
    fn is_valid(&self, code: u16, national: &str) -> bool {
        let Some(regions) = DATABASE.region(&code) else { return false };
        let chosen = if regions.len() == 1 {
            // "001" stands for a non-geographic code; its metadata is the code's first.
            Some(regions[0])
        } else {
            regions.iter().copied().find(|region| match self.region(region) {
                Some(rules) => match &rules.leading_digits {
                    Some(leading) => leading.is_match(national),
                    None => rules.is_valid(national),
                },
                None => false,
            })
        };
        let Some(region) = chosen else { return false };
        let rules = if region == "001" {
            DATABASE.by_code(&code).and_then(|metas| metas.first().map(|meta| meta.id().to_string()))
        } else {
            Some(region.to_string())
        };
        rules.and_then(|id| self.region(&id)).is_some_and(|rules| rules.is_valid(national))
    }
}

/// Whether the library's pattern `$pattern` (an `Option` of its cached regex) matches `$text`
/// at its start, as its own `find(…).start() == 0` tests do.
macro_rules! matches_at_start {
    ($pattern:expr, $text:expr) => {
        $pattern.and_then(|pattern| pattern.find($text)).is_some_and(|found| found.start() == 0)
    };
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

/// Starts loading the phone number metadata on a thread of its own (it takes about a tenth
/// of a second, once per process), so that the first number a run normalises does not wait
/// for all of it. Later calls do nothing.
pub fn preload_phone_metadata() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        // If the thread cannot be started, the first number loads the metadata itself.
        let _ = std::thread::Builder::new().name("phone-metadata".into()).spawn(|| {
            let _ = DATABASE.by_id("NL");
        });
    });
}

/// What `phonenumber` makes of `text`: its E.164 form, or why it has none.
pub(crate) fn library_e164(region: Option<Id>, text: &str) -> Result<String, String> {
    let parsed = phonenumber::parse(region, text).map_err(|error| error.to_string())?;
    if !phonenumber::is_valid(&parsed) {
        return Err("not a valid number for its country".into());
    }
    Ok(parsed.format().mode(phonenumber::Mode::E164).to_string())
}

/// The E.164 form of `text` (already trimmed) when it is valid and simply written, exactly as
/// `phonenumber::parse(region, text)` followed by `is_valid` and E.164 formatting gives it;
/// `None` when the library must decide (an invalid number, an extension, a national prefix
/// rule with a pattern, and other corners).
pub(crate) fn fast_e164(region: Option<Id>, text: &str) -> Option<String> {
    let (digits, plus) = plain_digits(text)?;
    if digits.len() < FEWEST_DIGITS || digits.starts_with('0') && plus {
        return None;
    }
    let default = match region {
        Some(id) => Some(DATABASE.by_id(id.as_ref())?),
        None => None,
    };
    // An international prefix the default region dials (`00`, `011`) is the library's to strip.
    if matches_at_start!(default.and_then(Metadata::international_prefix), &digits) {
        return None;
    }
    let (code, national) = if plus {
        // Calling codes are one to three digits and none is the start of another.
        let (code, national) = (1..=3).find_map(|length| {
            let code: u16 = digits[..length].parse().ok()?;
            DATABASE.by_code(&code).map(|_| (code, &digits[length..]))
        })?;
        // The library strips a national prefix here: with a default region *that* region's,
        // without one the prefix of the code's region (chosen by the number when several
        // regions share the code: left to the library). Where one would be stripped, it decides.
        let meta = match default {
            Some(meta) => meta,
            None if DATABASE.region(&code)?.len() == 1 => DATABASE.by_code(&code)?.into_iter().next()?,
            None => return None,
        };
        if meta.national_prefix().is_some_and(|prefix| national.starts_with(prefix))
            || matches_at_start!(meta.national_prefix_for_parsing(), national)
        {
            return None;
        }
        (code, national)
    } else {
        let meta = default?;
        let code = meta.country_code();
        // A national number spelt with its calling code but no `+` is read by a rule of its own.
        if digits.starts_with(&code.to_string()) || meta.national_prefix_for_parsing().is_some() {
            return None;
        }
        let national = match meta.national_prefix() {
            Some(prefix) if digits.starts_with(prefix) => {
                let stripped = &digits[prefix.len()..];
                // The library strips the prefix a second time when it is there again, and keeps
                // it when what remains is too short for the region.
                let general = meta.descriptors().general();
                let minimum = general.possible_length().first().map_or(0, |&length| usize::from(length));
                let local_only = general.possible_local_length().contains(&(stripped.len() as u16));
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
    rules().is_valid(code, national).then(|| format!("+{code}{national}"))
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

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
                            answered += 1;
                            assert_eq!(
                                Ok(fast),
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
        for text in ["06 12345678", "+31 6 1234 5678", "020-1234567", "0612345678", "+44 20 7946 0958"] {
            assert_eq!(
                fast_e164(dutch, text).as_deref(),
                library_e164(dutch, text).ok().as_deref(),
                "{text}"
            );
            assert!(fast_e164(dutch, text).is_some(), "{text} takes the fast path");
        }
    }
}
