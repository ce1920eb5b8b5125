//! Splits the YAML frontmatter off `SKILL.md` and deserializes it, keeping
//! the YAML path of every error.

use std::path::Path;

use crate::error::{Error, Result};
use crate::manifest::Frontmatter;
use crate::plain_yaml::{self, Finding};

const FENCE: &str = "---";

/// Where the frontmatter ends, if it does.
enum Split {
    /// The YAML, preceded by one empty line standing in for the opening
    /// `---`, so that the parser's line numbers are SKILL.md's line numbers.
    Found(String),
    NoOpening,
    NoClosing,
}

/// Finds the YAML between the opening `---` line and the closing `---` (or
/// `...`) line.
fn split(text: &str) -> Split {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let Some(rest) = text
        .strip_prefix(FENCE)
        .and_then(|rest| rest.strip_prefix("\r\n").or_else(|| rest.strip_prefix('\n')))
    else {
        return Split::NoOpening;
    };
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\r', '\n']);
        if bare == FENCE || bare == "..." {
            return Split::Found(format!("\n{}", &rest[..offset]));
        }
        offset += line.len();
    }
    Split::NoClosing
}

/// serde_yaml prefixes messages with its own, coarser path; the precise path
/// is reported separately, so drop it.
fn without_yaml_path(message: &str) -> &str {
    match message.split_once(": ") {
        Some((head, rest)) if !head.is_empty() && !head.contains(char::is_whitespace) => rest,
        _ => message,
    }
}

/// Parses the frontmatter of the `SKILL.md` at `file` whose text is `text`.
pub fn parse(file: &Path, text: &str) -> Result<Frontmatter> {
    let frontmatter_error = |reason: &str| Error::Frontmatter {
        file: file.to_owned(),
        reason: reason.to_owned(),
    };
    let yaml = match split(text) {
        Split::Found(yaml) => yaml,
        Split::NoOpening => {
            return Err(frontmatter_error(
                "expected YAML frontmatter: a first line '---', the metadata, then a closing '---' line",
            ))
        }
        Split::NoClosing => {
            return Err(frontmatter_error(
                "the frontmatter opened by '---' on line 1 has no closing '---' line",
            ))
        }
    };
    if yaml.trim().is_empty() {
        return Err(frontmatter_error(
            "frontmatter is empty: expected at least `name` and `description`",
        ));
    }
    // Refused before deserializing: serde_yaml_ng would resolve or ignore them.
    let plain = plain_yaml::check(&yaml);
    if let Err(Finding::Construct { what, line, column }) = &plain {
        return Err(frontmatter_error(&format!(
            "anchors, aliases and merge keys are not accepted in the frontmatter: found {what} at line {line} column {column}; write the values out in full"
        )));
    }
    let deserializer = serde_yaml_ng::Deserializer::from_str(&yaml);
    let frontmatter = serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let field = err.path().to_string();
        let message = err.inner().to_string();
        // A position the parser never reached (`?`) means the YAML itself
        // is malformed; the root (`.`) means the metadata as a whole is.
        if field.contains('?') {
            frontmatter_error(&format!("invalid YAML: {message}"))
        } else if field == "." {
            frontmatter_error(without_yaml_path(&message))
        } else {
            Error::InvalidField {
                file: file.to_owned(),
                field,
                message: without_yaml_path(&message).to_owned(),
            }
        }
    })?;
    // Text one parser reads and the other cannot is refused: the check
    // above could not vouch for it.
    if let Err(Finding::Unparsed(message)) = plain {
        return Err(frontmatter_error(&format!("invalid YAML: {message}")));
    }
    Ok(frontmatter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Frontmatter> {
        parse(Path::new("SKILL.md"), text)
    }

    fn found(text: &str) -> Option<String> {
        match split(text) {
            Split::Found(yaml) => Some(yaml),
            _ => None,
        }
    }

    #[test]
    fn splits_frontmatter() {
        assert_eq!(found("---\na: 1\n---\nbody").as_deref(), Some("\na: 1\n"));
        assert_eq!(found("---\r\na: 1\r\n---\r\n").as_deref(), Some("\na: 1\r\n"));
        assert!(matches!(split("no frontmatter"), Split::NoOpening));
        assert!(matches!(split("---\na: 1\n"), Split::NoClosing));
    }

    #[test]
    fn messages_name_the_precise_path_and_skill_md_line() {
        let err =
            parse_str("---\nname: a\ndescription: d\nsecurity_policy:\n  version: 1\n  netwrok: {}\n---\n")
                .unwrap_err()
                .to_string();
        assert!(
            err.starts_with("SKILL.md: security_policy.netwrok: unknown field `netwrok`, expected one of"),
            "{err}"
        );
        assert!(err.ends_with("at line 6 column 3"), "{err}");
    }

    #[test]
    fn keeps_unknown_top_level_keys() {
        let fm = parse_str("---\nname: a\ndescription: d\nlicense: MIT\n---\n").unwrap();
        assert_eq!(fm.name.as_str(), "a");
        assert!(fm.extra.contains_key("license"));
    }

    fn refusal(yaml: &str) -> String {
        parse_str(&format!("---\nname: a\ndescription: d\n{yaml}---\n"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn anchors_aliases_and_merge_keys_are_refused_naming_line_and_construct() {
        let prefix = "SKILL.md: anchors, aliases and merge keys are not accepted in the frontmatter: found";
        let cases = [
            // The policy given only under a merge key, which serde_yaml_ng would ignore.
            (
                "<<:\n  security_policy: {version: 1, network: {allow: [{cidr: 0.0.0.0/0}]}}\n",
                "the merge key `<<` at line 4 column 1",
            ),
            (
                "base: &base {version: 1}\nsecurity_policy:\n  <<: *base\n",
                "the anchor `&base` at line 4 column 7",
            ),
            (
                "security_policy:\n  version: 1\n  env: {pass: &names [A]}\nnames: *names\n",
                "the anchor `&names` at line 6 column 15",
            ),
            (
                "? !!merge x\n: {security_policy: {version: 1}}\n",
                "a key tagged `!!merge` at line 4 column 3",
            ),
            (
                "\"<<\": {license: MIT}\n",
                "the merge key `<<` at line 4 column 1",
            ),
        ];
        for (yaml, found) in cases {
            assert_eq!(
                refusal(yaml),
                format!("{prefix} {found}; write the values out in full"),
                "{yaml}"
            );
        }
        // An alias of no anchor is not YAML at all.
        assert_eq!(
            refusal("security_policy: *policy\n"),
            "SKILL.md: security_policy: unknown anchor at line 4 column 18"
        );
        // `&`, `*` and `<<` inside values are text.
        let fm =
            parse_str("---\nname: a\ndescription: \"*.md & <<more>>\"\nnote: fish & chips\n---\n").unwrap();
        assert_eq!(fm.description.0, "*.md & <<more>>");
    }

    #[test]
    fn errors_carry_the_yaml_path() {
        let err = parse_str(
            "---\nname: a\ndescription: d\nsecurity_policy:\n  version: 1\n  network:\n    allow:\n      - { domain: a.com }\n      - { cidr: 10.0.0.1/8 }\n---\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("SKILL.md: security_policy.network.allow[1].cidr: "),
            "{err}"
        );
        assert!(err.contains("did you mean 10.0.0.0/8"), "{err}");
    }
}
