//! The containerd side of `skillbox node install`, pure: which config
//! version the host's `config.toml` is, the drop-in registering the
//! skillbox runtime for it, and the `imports` line that loads the drop-in.
//! Edits go through `toml_edit`, so the administrator's comments and layout
//! are kept.

use toml_edit::{Array, DocumentMut, Item, Value};

use super::layout::{DROP_IN, NODE_CONFIG};

/// What `imports` must hold for containerd to load the drop-in.
pub const IMPORT_GLOB: &str = "/etc/containerd/conf.d/*.toml";

/// The line an administrator adds by hand when install cannot.
pub fn import_line() -> String {
    format!("imports = [\"{IMPORT_GLOB}\"]")
}

/// The containerd config versions that take a drop-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigVersion {
    /// containerd 1.6 and 1.7.
    V2,
    /// containerd 2.x.
    V3,
}

impl ConfigVersion {
    /// The CRI plugin holding `containerd.runtimes` in this version.
    pub fn cri_runtime_plugin(self) -> &'static str {
        match self {
            ConfigVersion::V2 => "io.containerd.grpc.v1.cri",
            ConfigVersion::V3 => "io.containerd.cri.v1.runtime",
        }
    }

    fn number(self) -> i64 {
        match self {
            ConfigVersion::V2 => 2,
            ConfigVersion::V3 => 3,
        }
    }
}

/// Why a containerd config cannot take the drop-in. `file` is the host
/// path; each message ends with what to do.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Refusal {
    #[error("{file}: not valid TOML ({reason}); fix it and add the line `{line}`", line = import_line())]
    Unparseable { file: String, reason: String },
    #[error(
        "{file}: containerd config version {found} cannot take a drop-in; migrate it to version 2 \
         (`containerd config migrate`) and add the line `{line}`",
        line = import_line()
    )]
    UnsupportedVersion { file: String, found: String },
    #[error("{file}: `imports` is not a list of strings; make it one holding `{line}`", line = import_line())]
    ImportsNotList { file: String },
}

/// The version a config declares (`version = 2` or `3`).
pub fn detect(file: &str, text: &str) -> Result<(DocumentMut, ConfigVersion), Refusal> {
    let doc: DocumentMut = text
        .parse()
        .map_err(|err: toml_edit::TomlError| Refusal::Unparseable {
            file: file.to_owned(),
            reason: err
                .to_string()
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned(),
        })?;
    let version = match doc.get("version").and_then(Item::as_integer) {
        Some(2) => ConfigVersion::V2,
        Some(3) => ConfigVersion::V3,
        Some(other) => {
            return Err(Refusal::UnsupportedVersion {
                file: file.to_owned(),
                found: other.to_string(),
            })
        }
        None => {
            return Err(Refusal::UnsupportedVersion {
                file: file.to_owned(),
                found: "1 (no `version`)".to_owned(),
            })
        }
    };
    Ok((doc, version))
}

/// Whether one `imports` entry loads the drop-in. containerd resolves a
/// relative entry against the main config's directory.
fn covers(entry: &str) -> bool {
    let absolute = match entry.strip_prefix("conf.d/") {
        Some(rest) => format!("/etc/containerd/conf.d/{rest}"),
        None => entry.to_owned(),
    };
    absolute == IMPORT_GLOB || absolute == DROP_IN
}

/// Whether the parsed config already imports the drop-in.
pub fn imports_drop_in(doc: &DocumentMut) -> bool {
    doc.get("imports")
        .and_then(Item::as_array)
        .is_some_and(|list| list.iter().filter_map(Value::as_str).any(covers))
}

/// The config with the drop-in imported, or `None` when it already is:
/// an existing `imports` list is extended, else one is added at the top.
pub fn with_import(file: &str, text: &str) -> Result<(Option<String>, ConfigVersion), Refusal> {
    let (mut doc, version) = detect(file, text)?;
    if imports_drop_in(&doc) {
        return Ok((None, version));
    }
    match doc.get_mut("imports") {
        None => {
            let mut list = Array::new();
            list.push(IMPORT_GLOB);
            doc.insert("imports", Item::Value(Value::Array(list)));
        }
        Some(item) => match item.as_array_mut() {
            Some(list) => list.push(IMPORT_GLOB),
            None => {
                return Err(Refusal::ImportsNotList {
                    file: file.to_owned(),
                })
            }
        },
    }
    Ok((Some(doc.to_string()), version))
}

/// The main config written when the host has none.
pub fn minimal_config(version: ConfigVersion) -> String {
    format!(
        "# Written by `skillbox node install`; `skillbox node uninstall` removes it.\nversion = {}\n{}\n",
        version.number(),
        import_line()
    )
}

/// The drop-in registering the `skillbox` runtime handler.
pub fn drop_in(version: ConfigVersion) -> String {
    let table = format!(
        "plugins.\"{}\".containerd.runtimes.skillbox",
        version.cri_runtime_plugin()
    );
    format!(
        "# Written by `skillbox node install`; `skillbox node uninstall` removes it.\n\
         version = {number}\n\n\
         [{table}]\n\
         runtime_type = \"io.containerd.skillbox.v1\"\n\
         pod_annotations = [\"io.skillbox.*\"]\n\
         container_annotations = [\"io.skillbox.*\"]\n\n\
         [{table}.options]\n\
         ConfigPath = \"{NODE_CONFIG}\"\n",
        number = version.number()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "/etc/containerd/config.toml";

    #[test]
    fn adds_imports_at_the_top_level_keeping_comments() {
        let text = "# main config\nversion = 2\n\n# cri\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"pause\" # pinned\n";
        let (out, version) = with_import(FILE, text).unwrap();
        let out = out.unwrap();
        assert_eq!(version, ConfigVersion::V2);
        assert!(out.contains("# main config") && out.contains("# cri") && out.contains("# pinned"));
        let (doc, _) = detect(FILE, &out).unwrap();
        assert!(imports_drop_in(&doc));
        assert!(doc["plugins"]["io.containerd.grpc.v1.cri"].is_table());
    }

    #[test]
    fn extends_an_imports_list_only_when_needed() {
        let text = "version = 2\nimports = [\"/etc/other.toml\"] # keep\n";
        let out = with_import(FILE, text).unwrap().0.unwrap();
        assert!(out.contains("\"/etc/other.toml\"") && out.contains(IMPORT_GLOB) && out.contains("# keep"));
        for covered in ["conf.d/*.toml", IMPORT_GLOB, DROP_IN, "conf.d/skillbox.toml"] {
            let text = format!("version = 3\nimports = [\"{covered}\"]\n");
            assert_eq!(with_import(FILE, &text).unwrap(), (None, ConfigVersion::V3));
        }
    }

    #[test]
    fn refuses_version_1_and_garbage_naming_the_line() {
        for text in ["[plugins.cri]\n", "version = 1\n", "version = = 2\n"] {
            let message = with_import(FILE, text).unwrap_err().to_string();
            assert!(message.starts_with(FILE), "{message}");
            assert!(message.contains(&import_line()), "{message}");
        }
        let err = with_import(FILE, "version = 2\nimports = \"x\"\n").unwrap_err();
        assert_eq!(
            err,
            Refusal::ImportsNotList {
                file: FILE.to_owned()
            }
        );
    }

    #[test]
    fn drop_in_names_the_plugin_of_its_version() {
        for (version, plugin) in [
            (ConfigVersion::V2, "io.containerd.grpc.v1.cri"),
            (ConfigVersion::V3, "io.containerd.cri.v1.runtime"),
        ] {
            let doc: DocumentMut = drop_in(version).parse().unwrap();
            let runtime = &doc["plugins"][plugin]["containerd"]["runtimes"]["skillbox"];
            assert_eq!(
                runtime["runtime_type"].as_str(),
                Some("io.containerd.skillbox.v1")
            );
            assert_eq!(runtime["options"]["ConfigPath"].as_str(), Some(NODE_CONFIG));
            assert_eq!(doc["version"].as_integer(), Some(version.number()));
        }
        for version in [ConfigVersion::V2, ConfigVersion::V3] {
            let (doc, detected) = detect(FILE, &minimal_config(version)).unwrap();
            assert!(imports_drop_in(&doc));
            assert_eq!(detected, version);
        }
    }
}
