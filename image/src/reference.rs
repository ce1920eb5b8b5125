//! Image names: `HOST/PATH:TAG`, checked as containerd and registries
//! parse them. A name always starts with a registry host, `localhost/` for
//! local images: CRI completes a name without one to `docker.io/…`, which
//! would not find an image imported under the short name.

use crate::error::{ImageError, Result};

/// Where skill images are named when no `--name` is given.
pub const DEFAULT_REPOSITORY_PREFIX: &str = "localhost/skillbox/";
/// The tag of a skill without a version.
pub const DEFAULT_TAG: &str = "latest";

/// A checked image name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageName {
    full: String,
    /// Where the tag starts in `full` (after the `:`).
    tag_at: usize,
}

impl ImageName {
    /// The whole name, `HOST/PATH:TAG` (`io.containerd.image.name`).
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The tag (`org.opencontainers.image.ref.name`).
    pub fn tag(&self) -> &str {
        &self.full[self.tag_at..]
    }

    /// Checks `name`.
    pub fn parse(name: &str) -> Result<ImageName> {
        let bad = |expected: String| ImageError::BadName {
            name: name.to_owned(),
            expected,
        };
        if name.contains('@') {
            return Err(bad("a digest reference; expected HOST/PATH:TAG".to_owned()));
        }
        let (repository, tag) = match name.rfind(':') {
            Some(at) if !name[at..].contains('/') => (&name[..at], &name[at + 1..]),
            _ => {
                return Err(bad(
                    "no tag; expected HOST/PATH:TAG, e.g. localhost/skillbox/hello:1.0.0".to_owned(),
                ))
            }
        };
        if !is_tag(tag) {
            return Err(bad(format!(
                "tag {tag:?}: expected 1–128 of letters, digits, `_`, `.`, `-`, not starting with `.` or `-`"
            )));
        }
        let Some((host, path)) = repository.split_once('/') else {
            return Err(bad(
                "no registry host; expected HOST/PATH:TAG (localhost/… for local images)".to_owned(),
            ));
        };
        if !is_host(host) {
            return Err(bad(format!(
                "{host:?} is not a registry host; expected `localhost`, a host with a `.` or a `host:port` first (localhost/… for local images)"
            )));
        }
        if let Some(part) = path.split('/').find(|part| !is_path_component(part)) {
            return Err(bad(format!(
                "path component {part:?}: expected lowercase letters and digits, separated by `.`, `_`, `__` or `-`"
            )));
        }
        Ok(ImageName {
            full: name.to_owned(),
            tag_at: repository.len() + 1,
        })
    }

    /// `localhost/skillbox/<skill>:<version>` (`latest` without a version;
    /// a semver `+` becomes `_`, which tags cannot hold).
    pub fn default_for(skill: &str, version: Option<&str>) -> Result<ImageName> {
        let tag = version.map_or(DEFAULT_TAG.to_owned(), |v| v.replace('+', "_"));
        ImageName::parse(&format!("{DEFAULT_REPOSITORY_PREFIX}{skill}:{tag}")).map_err(|err| match err {
            ImageError::BadName { name, expected } => ImageError::BadName {
                name,
                expected: format!("{expected} (made from the skill's name and version; give --name)"),
            },
            other => other,
        })
    }
}

fn is_tag(tag: &str) -> bool {
    let mut bytes = tag.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
    first_ok && tag.len() <= 128 && bytes.all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

fn is_host(host: &str) -> bool {
    let (name, port) = match host.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    let labels_ok = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    labels_ok && port_ok && (name == "localhost" || name.contains('.') || port.is_some())
}

fn is_path_component(part: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    // Between runs of alphanumerics: `.`, `_`, `__` or a run of `-`.
    let pieces: Vec<&str> = part.split(alnum).collect();
    !part.is_empty()
        && pieces.first() == Some(&"")
        && pieces.last() == Some(&"")
        && pieces
            .iter()
            .all(|s| matches!(*s, "" | "." | "_" | "__") || s.bytes().all(|b| b == b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_tags() {
        let name = ImageName::parse("localhost/skillbox/hello:1.0.0").unwrap();
        assert_eq!(name.as_str(), "localhost/skillbox/hello:1.0.0");
        assert_eq!(name.tag(), "1.0.0");
        let name = ImageName::parse("registry.example.com:5000/skills/weather-report:v2").unwrap();
        assert_eq!(name.tag(), "v2");
        for ok in ["localhost/a:1", "reg.example.com/a__b/c.d:x", "h:5000/a--b:_"] {
            ImageName::parse(ok).unwrap_or_else(|err| panic!("{ok}: {err}"));
        }
    }

    #[test]
    fn bad_names_say_what_was_expected() {
        let err = |name: &str| ImageName::parse(name).unwrap_err().to_string();
        assert!(
            err("localhost/hello").contains("no tag"),
            "{}",
            err("localhost/hello")
        );
        assert!(err("skillbox/hello:1").contains("not a registry host"));
        assert!(err("hello:1").contains("no registry host"));
        assert!(err("localhost/Hello:1").contains("path component \"Hello\""));
        assert!(err("localhost/a..b:1").contains("path component"));
        assert!(err("localhost/a-_b:1").contains("path component"));
        assert!(err("localhost/a:-x").contains("tag \"-x\""));
        assert!(err("localhost/a@sha256:00").contains("digest reference"));
    }

    #[test]
    fn the_default_name_is_local_and_tagged_with_the_version() {
        let name = ImageName::default_for("hello", Some("1.0.0+build.7")).unwrap();
        assert_eq!(name.as_str(), "localhost/skillbox/hello:1.0.0_build.7");
        let name = ImageName::default_for("hello", None).unwrap();
        assert_eq!(name.as_str(), "localhost/skillbox/hello:latest");
        let err = ImageName::default_for("hello", Some("1 0"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("give --name"), "{err}");
    }
}
