//! The JSON Schema of `security_policy`, generated from the Rust types that
//! parse it, so the published schema can never drift from the parser.

use crate::manifest::SecurityPolicy;

/// Where the committed schema lives, relative to the workspace root.
pub const SCHEMA_PATH: &str = "schema/security_policy.schema.json";

/// The schema as pretty JSON with a trailing newline.
pub fn security_policy_schema() -> String {
    let schema = schemars::schema_for!(SecurityPolicy);
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema serializes");
    text.push('\n');
    text
}
