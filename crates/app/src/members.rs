//! The member schema the demo, the benchmark and the tests share: a member's tracked fields
//! with their types, and the configuration text that declares them (`[[links.LINK.fields]]`
//! tables, an SQLite member table's connector, a link preferring one side).

/// One tracked field of a member: its name and its type as a configuration spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberField {
    /// The field's name in the link.
    pub name: &'static str,
    /// Its type: `text`, `email`, `phone` (Dutch numbers), `date`, `bool`, `int` or `json`.
    pub field_type: &'static str,
}

/// Every field a member may have, as the federation registers, the club sites and the
/// benchmark's generated members hold them.
pub const MEMBER_FIELDS: [MemberField; 11] = [
    MemberField { name: "first_name", field_type: "text" },
    MemberField { name: "last_name", field_type: "text" },
    MemberField { name: "email", field_type: "email" },
    MemberField { name: "phone", field_type: "phone" },
    MemberField { name: "mobile", field_type: "phone" },
    MemberField { name: "birth_date", field_type: "date" },
    MemberField { name: "street", field_type: "text" },
    MemberField { name: "city", field_type: "text" },
    MemberField { name: "active", field_type: "bool" },
    MemberField { name: "shirt_number", field_type: "int" },
    MemberField { name: "tags", field_type: "json" },
];

/// The member field called `name`.
///
/// # Panics
///
/// When a member has no such field.
pub fn member_field(name: &str) -> MemberField {
    MEMBER_FIELDS
        .into_iter()
        .find(|field| field.name == name)
        .unwrap_or_else(|| panic!("a member has no field {name}"))
}

/// One `[[links.LINK.fields]]` table: the field `name` of `field_type` (text, the default, goes
/// unsaid; a phone has the region `NL`) at `left` and `right`.
pub fn field_toml(link: &str, name: &str, field_type: &str, left: &str, right: &str) -> String {
    let declared = match field_type {
        "text" => String::new(),
        "phone" => "type = \"phone\"\nregion = \"NL\"\n".to_string(),
        other => format!("type = \"{other}\"\n"),
    };
    format!(
        "\n[[links.{link}.fields]]\nname = \"{name}\"\n{declared}left = \"{left}\"\nright = \"{right}\"\n"
    )
}

/// The `[[links.LINK.fields]]` tables of `fields`, each given as its name, its type, its left
/// path and its right path.
pub fn fields_toml(link: &str, fields: &[(&str, &str, &str, &str)]) -> String {
    fields
        .iter()
        .map(|(name, field_type, left, right)| field_toml(link, name, field_type, left, right))
        .collect()
}

/// The `[[links.LINK.fields]]` tables of the member fields `fields`, each given as its name, its
/// left path and its right path.
///
/// # Panics
///
/// When a name is not a member field.
pub fn member_fields_toml(link: &str, fields: &[(&str, &str, &str)]) -> String {
    fields
        .iter()
        .map(|(name, left, right)| field_toml(link, name, member_field(name).field_type, left, right))
        .collect()
}

/// A `[connectors.NAME]` table of the member table `table` in the SQLite file `path`, keyed by
/// `key` and modified at `modified`; a test adds its further settings on the lines after it.
pub fn sqlite_connector_toml(name: &str, path: &str, table: &str, key: &str, modified: &str) -> String {
    format!(
        "[connectors.{name}]\nkind = \"sqlite\"\npath = \"{path}\"\ntable = \"{table}\"\nkey = \"{key}\"\nmodified = \"{modified}\"\n"
    )
}

/// A `[links.LINK]` table between the connectors `left` and `right`, keyed by `keys` (left and
/// right), whose conflicts the last write wins with `tie` deciding inside five seconds, and
/// whose first sync prefers `tie`; a test adds its further policies on the lines after it.
pub fn link_toml(link: &str, left: &str, right: &str, keys: (&str, &str), tie: &str) -> String {
    let (left_key, right_key) = keys;
    format!(
        "[links.{link}]\nleft = \"{left}\"\nright = \"{right}\"\nkey = {{ left = \"{left_key}\", right = \"{right_key}\" }}\n\
         conflicts = {{ strategy = \"last_write_wins\", grace = \"5s\", tie = \"{tie}\" }}\n\
         first_sync = {{ strategy = \"prefer\", side = \"{tie}\" }}\n"
    )
}
