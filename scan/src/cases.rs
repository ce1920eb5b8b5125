//! The cases a scan runs besides the default one (the entrypoint with no
//! arguments and empty stdin): a YAML file, `--cases FILE` or `scan.yaml`
//! at the skill's root. Its JSON Schema is `schema/scan-cases.schema.json`.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use schemars::JsonSchema;
use serde::Deserialize;

/// The default case's name; a file may not use it.
pub const DEFAULT_CASE: &str = "default";

/// A cases file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "scan cases")]
pub struct CasesFile {
    /// The cases, run in this order after the default one.
    pub cases: Vec<Case>,
}

/// One run of the skill.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Unique; 1–63 letters, digits, `-` and `_`; not `default`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,63}$"))]
    pub name: String,
    /// Arguments appended to the entrypoint.
    #[serde(default)]
    pub args: Vec<String>,
    /// The skill's standard input (empty when absent).
    #[serde(default)]
    pub stdin: Option<String>,
    /// Files or directories, relative to the cases file, handed to the
    /// skill read-only at `/workspace/in` (as `skillbox run --input`).
    #[serde(default)]
    pub inputs: Vec<PathBuf>,
    /// The exit status the case should end with; another is a finding.
    #[serde(default)]
    pub expect_exit: Option<i32>,
}

impl Case {
    /// The entrypoint with no arguments and empty stdin.
    pub fn default_case() -> Case {
        Case {
            name: DEFAULT_CASE.to_owned(),
            args: Vec::new(),
            stdin: None,
            inputs: Vec::new(),
            expect_exit: None,
        }
    }
}

/// Parses a cases file; every error names the file and the field.
pub fn parse(file: &Path, text: &str) -> Result<Vec<Case>, String> {
    let shown = file.display();
    // serde_yaml_ng's messages name the field (`cases[0].args: …`).
    let parsed: CasesFile = serde_yaml_ng::from_str(text).map_err(|err| format!("{shown}: {err}"))?;
    let mut names = BTreeSet::new();
    for (index, case) in parsed.cases.iter().enumerate() {
        let field = format!("{shown}: cases[{index}]");
        let valid = !case.name.is_empty()
            && case.name.len() <= 63
            && case
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(format!(
                "{field}.name: {:?} is not 1-63 letters, digits, '-' or '_'",
                case.name
            ));
        }
        if case.name == DEFAULT_CASE || !names.insert(case.name.as_str()) {
            return Err(format!(
                "{field}.name: {:?} is used twice (`default` is the built-in case)",
                case.name
            ));
        }
        for (i, input) in case.inputs.iter().enumerate() {
            let inside = input
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
            if !inside || input.as_os_str().is_empty() {
                return Err(format!(
                    "{field}.inputs[{i}]: {} must be a path inside the cases file's directory (relative, no `..`)",
                    input.display()
                ));
            }
        }
    }
    Ok(parsed.cases)
}

/// The JSON Schema of a cases file.
pub fn schema() -> String {
    let schema = schemars::schema_for!(CasesFile);
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema serializes");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "scan.yaml";

    #[test]
    fn a_file_of_cases_is_read_with_defaults() {
        let text = "cases:\n  - name: summarise\n    args: [--short]\n    stdin: \"hello\\n\"\n    inputs: [data/a.csv]\n    expect_exit: 0\n  - name: empty\n";
        let cases = parse(Path::new(FILE), text).unwrap();
        assert_eq!(cases.len(), 2);
        assert_eq!(cases[0].args, ["--short"]);
        assert_eq!(cases[0].stdin.as_deref(), Some("hello\n"));
        assert_eq!(cases[0].inputs, [PathBuf::from("data/a.csv")]);
        assert_eq!(cases[1].expect_exit, None);
    }

    #[test]
    fn bad_files_name_the_field() {
        for (text, expected) in [
            (
                "cases:\n  - name: a\n    argz: []\n",
                "cases[0]: unknown field `argz`",
            ),
            (
                "cases:\n  - name: a\n  - name: a\n",
                "cases[1].name: \"a\" is used twice",
            ),
            (
                "cases:\n  - name: default\n",
                "cases[0].name: \"default\" is used twice",
            ),
            ("cases:\n  - name: \"a b\"\n", "cases[0].name: \"a b\" is not"),
            (
                "cases:\n  - name: a\n    inputs: [../secret]\n",
                "cases[0].inputs[0]: ../secret must be a path inside",
            ),
            (
                "cases:\n  - name: a\n    inputs: [/etc/passwd]\n",
                "cases[0].inputs[0]: /etc/passwd must be",
            ),
            (
                "cases:\n  - name: a\n    expect_exit: x\n",
                "cases[0].expect_exit: invalid type",
            ),
            ("{}\n", "missing field `cases`"),
        ] {
            let err = parse(Path::new(FILE), text).unwrap_err();
            assert!(
                err.starts_with("scan.yaml: ") && err.contains(expected),
                "{text:?}: {err}"
            );
        }
    }
}
