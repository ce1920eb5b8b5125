//! The containerd side of `skillbox node install`, pure: which config
//! version the host's `config.toml` is, the drop-in registering the
//! skillbox runtime for it, and the `imports` line that loads the drop-in.
//! Edits go through `toml_edit`, so the administrator's comments and layout
//! are kept.

use toml_edit::{Array, DocumentMut, Item, Table, Value};

use super::layout::{CONTAINERD_CONFIG, DROP_IN, NODE_CONFIG};

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

/// The config without the `imports` entry install added (and without
/// `imports` when that was its only entry): what uninstall writes back when
/// the config changed since install, so the administrator's edits stay.
pub fn without_import(file: &str, text: &str) -> Result<String, Refusal> {
    let (mut doc, _) = detect(file, text)?;
    let emptied = match doc.get_mut("imports").and_then(Item::as_array_mut) {
        None => return Ok(text.to_owned()),
        Some(list) => {
            list.retain(|entry| entry.as_str() != Some(IMPORT_GLOB));
            list.is_empty()
        }
    };
    if emptied {
        doc.remove("imports");
    }
    Ok(doc.to_string())
}

/// The main config written when the host has none.
pub fn minimal_config(version: ConfigVersion) -> String {
    format!(
        "# Written by `skillbox node install`; `skillbox node uninstall` removes it.\nversion = {}\n{}\n",
        version.number(),
        import_line()
    )
}

/// The runtime containerd's CRI plugin uses when none is named.
const DEFAULT_RUNTIME: &str = "runc";

/// The drop-in registering the `skillbox` runtime handler, for the host's
/// main config `main` (`None`: it has none).
///
/// containerd 1.6 and 1.7 (config version 2) do not merge an imported
/// plugin section into the main config's: the imported section replaces
/// it whole, and a `runtimes` table replaces the built-in one. So a version
/// 2 drop-in carries the main config's CRI section as it is, with the
/// default runtime made explicit when the main config leaves it to the
/// built-in defaults, plus `skillbox`. containerd 2.x (version 3) merges
/// imports key by key: its drop-in adds `skillbox` (and the default runtime,
/// for the same reason) and nothing else.
pub fn drop_in(version: ConfigVersion, main: Option<&DocumentMut>) -> String {
    let plugin = version.cri_runtime_plugin();
    let main_section = main
        .and_then(|doc| doc.get("plugins"))
        .and_then(|plugins| plugins.get(plugin))
        .and_then(Item::as_table_like);
    let mut section = Table::new();
    if let (ConfigVersion::V2, Some(main_section)) = (version, main_section) {
        for (key, item) in main_section.iter() {
            section.insert(key, item.clone());
        }
    }
    let containerd = implicit_table(&mut section, "containerd");
    let default_runtime = main_section
        .and_then(|s| s.get("containerd"))
        .and_then(|c| c.get("default_runtime_name"))
        .and_then(Item::as_str)
        .unwrap_or(DEFAULT_RUNTIME)
        .to_owned();
    let main_has_default = main_section
        .and_then(|s| s.get("containerd"))
        .and_then(|c| c.get("runtimes"))
        .and_then(|r| r.get(&default_runtime))
        .is_some();
    let runtimes = implicit_table(containerd, "runtimes");
    if !main_has_default && default_runtime == DEFAULT_RUNTIME {
        let mut runc = Table::new();
        runc.insert("runtime_type", toml_edit::value("io.containerd.runc.v2"));
        runtimes.insert(DEFAULT_RUNTIME, Item::Table(runc));
    }
    runtimes.insert("skillbox", Item::Table(skillbox_runtime()));

    let mut doc = DocumentMut::new();
    doc.insert("version", toml_edit::value(version.number()));
    let plugins = implicit_table(doc.as_table_mut(), "plugins");
    plugins.insert(plugin, Item::Table(section));
    format!(
        "# Written by `skillbox node install` from {CONTAINERD_CONFIG}; `skillbox node uninstall` removes it.\n{doc}"
    )
}

/// The `skillbox` runtime's table.
fn skillbox_runtime() -> Table {
    let mut annotations = Array::new();
    annotations.push("io.skillbox.*");
    let mut options = Table::new();
    options.insert("ConfigPath", toml_edit::value(NODE_CONFIG));
    let mut runtime = Table::new();
    runtime.insert("runtime_type", toml_edit::value("io.containerd.skillbox.v1"));
    runtime.insert("pod_annotations", toml_edit::value(annotations.clone()));
    runtime.insert("container_annotations", toml_edit::value(annotations));
    runtime.insert("options", Item::Table(options));
    runtime
}

/// The table `key` of `parent`, made (implicit: no header of its own) when
/// missing or not a table.
fn implicit_table<'a>(parent: &'a mut Table, key: &str) -> &'a mut Table {
    if !parent.get(key).is_some_and(Item::is_table) {
        let mut table = Table::new();
        table.set_implicit(true);
        parent.insert(key, Item::Table(table));
    }
    parent[key].as_table_mut().expect("just made a table")
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
    fn without_import_takes_back_only_the_entry_install_added() {
        let original =
            "# admin\nversion = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"p\"\n";
        let installed = with_import(FILE, original).unwrap().0.unwrap();
        let edited = installed.replace("\"p\"", "\"p2\"");
        let back = without_import(FILE, &edited).unwrap();
        assert_eq!(back, original.replace("\"p\"", "\"p2\""));
        let other = "version = 2\nimports = [\"/etc/other.toml\"]\n";
        let installed = with_import(FILE, other).unwrap().0.unwrap();
        assert_eq!(without_import(FILE, &installed).unwrap(), other);
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
            let doc: DocumentMut = drop_in(version, None).parse().unwrap();
            let runtimes = &doc["plugins"][plugin]["containerd"]["runtimes"];
            let runtime = &runtimes["skillbox"];
            assert_eq!(
                runtime["runtime_type"].as_str(),
                Some("io.containerd.skillbox.v1")
            );
            assert_eq!(runtime["options"]["ConfigPath"].as_str(), Some(NODE_CONFIG));
            // Without a main config the built-in runc is made explicit: the
            // drop-in's runtimes table would otherwise replace it.
            assert_eq!(
                runtimes["runc"]["runtime_type"].as_str(),
                Some("io.containerd.runc.v2")
            );
            assert_eq!(doc["version"].as_integer(), Some(version.number()));
        }
        for version in [ConfigVersion::V2, ConfigVersion::V3] {
            let (doc, detected) = detect(FILE, &minimal_config(version)).unwrap();
            assert!(imports_drop_in(&doc));
            assert_eq!(detected, version);
        }
    }

    #[test]
    fn a_version_2_drop_in_carries_the_main_cri_section_whole() {
        let main = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"pause:3\"\n\
                    [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  default_runtime_name = \"crun\"\n\
                    [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.crun]\n  runtime_type = \"io.containerd.runc.v2\"\n\
                    [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.crun.options]\n  BinaryName = \"crun\"\n\
                    [plugins.\"io.containerd.grpc.v1.cri\".cni]\n  bin_dir = \"/opt/cni/bin\"\n";
        let (main, _) = detect(FILE, main).unwrap();
        let doc: DocumentMut = drop_in(ConfigVersion::V2, Some(&main)).parse().unwrap();
        let cri = &doc["plugins"]["io.containerd.grpc.v1.cri"];
        assert_eq!(cri["sandbox_image"].as_str(), Some("pause:3"));
        assert_eq!(cri["cni"]["bin_dir"].as_str(), Some("/opt/cni/bin"));
        assert_eq!(cri["containerd"]["default_runtime_name"].as_str(), Some("crun"));
        let runtimes = cri["containerd"]["runtimes"].as_table().unwrap();
        assert_eq!(
            runtimes.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            ["crun", "skillbox"],
            "the main config names its default runtime: no runc added"
        );
        assert_eq!(runtimes["crun"]["options"]["BinaryName"].as_str(), Some("crun"));
    }

    #[test]
    fn a_version_3_drop_in_adds_only_runtimes() {
        let main = "version = 3\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n\
                    [plugins.\"io.containerd.cri.v1.images\"]\n  snapshotter = \"overlayfs\"\n";
        let (main, _) = detect(FILE, main).unwrap();
        let doc: DocumentMut = drop_in(ConfigVersion::V3, Some(&main)).parse().unwrap();
        let plugins = doc["plugins"].as_table().unwrap();
        assert_eq!(plugins.len(), 1, "{doc}");
        let runtimes = doc["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]
            .as_table()
            .unwrap();
        assert_eq!(runtimes.iter().map(|(k, _)| k).collect::<Vec<_>>(), ["skillbox"]);
    }
}
