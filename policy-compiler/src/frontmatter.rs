//! Splits the YAML frontmatter off `SKILL.md` and deserializes it, keeping
//! the YAML path of every error.

use std::path::Path;

use crate::error::{Error, Result};
use crate::manifest::Frontmatter;

const FENCE: &str = "---";

/// Returns the YAML between the opening `---` line and the closing `---`
/// (or `...`) line.
fn split(text: &str) -> Option<&str> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let rest = text
        .strip_prefix(FENCE)
        .and_then(|rest| rest.strip_prefix("\r\n").or_else(|| rest.strip_prefix('\n')))?;
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\r', '\n']);
        if bare == FENCE || bare == "..." {
            return Some(&rest[..offset]);
        }
        offset += line.len();
    }
    None
}

/// Parses the frontmatter of the `SKILL.md` at `file` whose text is `text`.
pub fn parse(file: &Path, text: &str) -> Result<Frontmatter> {
    let yaml = split(text).ok_or_else(|| Error::Frontmatter {
        file: file.to_owned(),
        reason: "expected YAML frontmatter: a first line '---', the metadata, then a closing '---' line"
            .to_owned(),
    })?;
    if yaml.trim().is_empty() {
        return Err(Error::Frontmatter {
            file: file.to_owned(),
            reason: "frontmatter is empty: expected at least `name` and `description`".to_owned(),
        });
    }
    let deserializer = serde_yaml_ng::Deserializer::from_str(yaml);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let field = err.path().to_string();
        let message = err.inner().to_string();
        if field == "." {
            Error::Frontmatter {
                file: file.to_owned(),
                reason: message,
            }
        } else {
            Error::InvalidField {
                file: file.to_owned(),
                field,
                message,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Frontmatter> {
        parse(Path::new("SKILL.md"), text)
    }

    #[test]
    fn splits_frontmatter() {
        assert_eq!(split("---\na: 1\n---\nbody"), Some("a: 1\n"));
        assert_eq!(split("---\r\na: 1\r\n---\r\n"), Some("a: 1\r\n"));
        assert_eq!(split("no frontmatter"), None);
        assert_eq!(split("---\na: 1\n"), None);
    }

    #[test]
    fn keeps_unknown_top_level_keys() {
        let fm = parse_str("---\nname: a\ndescription: d\nlicense: MIT\n---\n").unwrap();
        assert_eq!(fm.name.as_str(), "a");
        assert!(fm.extra.contains_key("license"));
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
