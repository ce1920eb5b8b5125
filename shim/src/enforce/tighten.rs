//! The rewrites that bring a spec within its effective policy. Each returns
//! the changes it made; a spec that is already tight gets none.

use policy_compiler::oci::{annotations, CgroupLimits};
use policy_compiler::EffectivePolicy;
use runsc_config::RunscFlags;
use serde_json::{json, Map, Value};

use super::Change;

const CAPABILITY_SETS: [&str; 5] = ["bounding", "effective", "inheritable", "permitted", "ambient"];

fn change(field: &str, from: impl Into<String>, to: impl Into<String>) -> Change {
    Change {
        field: field.to_owned(),
        from: from.into(),
        to: to.into(),
    }
}

fn shown(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "unset".to_owned(),
        Some(value) => value.to_string(),
    }
}

/// The object at `key` in `parent`, created empty when absent or not an object.
fn object<'a>(parent: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !parent[key].is_object() {
        parent[key] = Value::Object(Map::new());
    }
    parent[key].as_object_mut().expect("just made an object")
}

/// Applies every rewrite to `spec` for the container of node-unique key
/// `key`.
pub(super) fn tighten(
    key: &str,
    spec: &mut Value,
    policy: &EffectivePolicy,
    flags: &RunscFlags,
) -> Vec<Change> {
    let mut changes = Vec::new();
    root(spec, &mut changes);
    process(spec, &mut changes);
    resources(
        spec,
        &CgroupLimits::for_policy(policy, flags.platform),
        &mut changes,
    );
    mounts(spec, policy, &mut changes);
    cgroups_path(key, spec, &mut changes);
    runsc_flags(spec, flags, &mut changes);
    changes
}

/// Only the process rewrites (capabilities, no new privileges), for an
/// exec's process spec held as `{"process": …}`.
/// Makes the bind mounts at `indices` of `spec.mounts` read-only (host
/// directories an administrator listed: shown, never written).
pub(super) fn read_only_binds(spec: &mut Value, indices: &[usize]) -> Vec<Change> {
    let mut changes = Vec::new();
    let Some(mounts) = spec["mounts"].as_array_mut() else {
        return changes;
    };
    for &index in indices {
        let Some(mount) = mounts.get_mut(index) else {
            continue;
        };
        let destination = mount["destination"].as_str().unwrap_or("").to_owned();
        let options: Vec<Value> = mount["options"].as_array().cloned().unwrap_or_default();
        if options.iter().any(|o| o.as_str() == Some("ro")) {
            continue;
        }
        let mut read_only: Vec<Value> = options.into_iter().filter(|o| o.as_str() != Some("rw")).collect();
        read_only.push(Value::String("ro".to_owned()));
        changes.push(change(
            &format!("mounts[{index}].options ({destination})"),
            shown(mount.get("options")),
            Value::Array(read_only.clone()).to_string(),
        ));
        mount["options"] = Value::Array(read_only);
    }
    changes
}

pub(super) fn process_only(spec: &mut Value) -> Vec<Change> {
    let mut changes = Vec::new();
    process(spec, &mut changes);
    changes
}

fn root(spec: &mut Value, changes: &mut Vec<Change>) {
    let root = object(spec, "root");
    if root.get("readonly") != Some(&Value::Bool(true)) {
        changes.push(change("root.readonly", shown(root.get("readonly")), "true"));
        root.insert("readonly".to_owned(), Value::Bool(true));
    }
}

fn process(spec: &mut Value, changes: &mut Vec<Change>) {
    let process = object(spec, "process");
    let capabilities = process
        .entry("capabilities")
        .or_insert_with(|| Value::Object(Map::new()));
    if !capabilities.is_object() {
        *capabilities = Value::Object(Map::new());
    }
    let mut dropped: Vec<String> = Vec::new();
    for set in CAPABILITY_SETS {
        if let Some(names) = capabilities[set].as_array() {
            for name in names.iter().filter_map(Value::as_str) {
                if !dropped.iter().any(|known| known == name) {
                    dropped.push(name.to_owned());
                }
            }
        }
        capabilities[set] = json!([]);
    }
    if !dropped.is_empty() {
        changes.push(change("process.capabilities", dropped.join(" "), "none"));
    }
    if process.get("noNewPrivileges") != Some(&Value::Bool(true)) {
        changes.push(change(
            "process.noNewPrivileges",
            shown(process.get("noNewPrivileges")),
            "true",
        ));
        process.insert("noNewPrivileges".to_owned(), Value::Bool(true));
    }
}

/// Sets `field` (an integer) to `asked` when that is a positive value no
/// higher than `most`, else to `most`.
fn at_most(parent: &mut Map<String, Value>, key: &str, field: &str, most: i64, changes: &mut Vec<Change>) {
    let asked = parent.get(key).and_then(Value::as_i64);
    let kept = asked.filter(|asked| (1..=most).contains(asked)).unwrap_or(most);
    if asked != Some(kept) {
        changes.push(change(field, shown(parent.get(key)), kept.to_string()));
        parent.insert(key.to_owned(), json!(kept));
    }
}

fn resources(spec: &mut Value, limits: &CgroupLimits, changes: &mut Vec<Change>) {
    let linux = object(spec, "linux");
    if !linux.get("resources").is_some_and(Value::is_object) {
        linux.insert("resources".to_owned(), Value::Object(Map::new()));
    }
    let resources = linux
        .get_mut("resources")
        .and_then(Value::as_object_mut)
        .expect("just made an object");

    let memory = object_in(resources, "memory");
    at_most(
        memory,
        "limit",
        "linux.resources.memory.limit",
        limits.memory_bytes,
        changes,
    );
    // No swap on top of the limit.
    let limit = memory["limit"].clone();
    if memory.get("swap") != Some(&limit) {
        changes.push(change(
            "linux.resources.memory.swap",
            shown(memory.get("swap")),
            limit.to_string(),
        ));
        memory.insert("swap".to_owned(), limit);
    }

    let cpu = object_in(resources, "cpu");
    let asked_quota = cpu.get("quota").and_then(Value::as_i64).filter(|q| *q > 0);
    let asked_period = cpu.get("period").and_then(Value::as_u64).filter(|p| *p > 0);
    let within = match (asked_quota, asked_period) {
        // quota/period <= policy quota/policy period, in integers.
        (Some(quota), Some(period)) => {
            (quota as u128) * u128::from(limits.cpu_period_us)
                <= (limits.cpu_quota_us as u128) * u128::from(period)
        }
        _ => false,
    };
    if !within {
        changes.push(change(
            "linux.resources.cpu",
            format!(
                "quota {} period {}",
                shown(cpu.get("quota")),
                shown(cpu.get("period"))
            ),
            format!("quota {} period {}", limits.cpu_quota_us, limits.cpu_period_us),
        ));
        cpu.insert("quota".to_owned(), json!(limits.cpu_quota_us));
        cpu.insert("period".to_owned(), json!(limits.cpu_period_us));
    }

    let pids = object_in(resources, "pids");
    at_most(pids, "limit", "linux.resources.pids.limit", limits.pids, changes);

    // Raw cgroup v2 files could set any limit behind the fields above.
    if let Some(unified) = resources.remove("unified") {
        if unified.as_object().is_some_and(|u| !u.is_empty()) {
            changes.push(change("linux.resources.unified", unified.to_string(), "removed"));
        }
    }
}

fn object_in<'a>(parent: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    if !parent.get(key).is_some_and(Value::is_object) {
        parent.insert(key.to_owned(), Value::Object(Map::new()));
    }
    parent
        .get_mut(key)
        .and_then(Value::as_object_mut)
        .expect("just made an object")
}

fn forced_read_only(mount: &Value) -> bool {
    let destination = mount["destination"].as_str().unwrap_or("");
    matches!(mount["type"].as_str(), Some("sysfs" | "cgroup" | "cgroup2"))
        || destination == "/sys"
        || destination.starts_with("/sys/")
}

fn mounts(spec: &mut Value, policy: &EffectivePolicy, changes: &mut Vec<Change>) {
    if !spec["mounts"].is_array() {
        spec["mounts"] = json!([]);
    }
    let mounts = spec["mounts"].as_array_mut().expect("just made an array");
    for (index, mount) in mounts.iter_mut().enumerate() {
        if !forced_read_only(mount) {
            continue;
        }
        let options: Vec<String> = mount["options"]
            .as_array()
            .map(|o| o.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        if options.iter().any(|o| o == "ro") && !options.iter().any(|o| o == "rw") {
            continue;
        }
        let mut tight: Vec<String> = options.iter().filter(|o| *o != "rw").cloned().collect();
        if !tight.iter().any(|o| o == "ro") {
            tight.push("ro".to_owned());
        }
        let destination = mount["destination"].as_str().unwrap_or("").to_owned();
        changes.push(change(
            &format!("mounts[{index}].options ({destination})"),
            options.join(","),
            tight.join(","),
        ));
        mount["options"] = json!(tight);
    }
    // Each writable directory of the policy is a tmpfs of its size (an
    // image's skill declares them; a compiled bundle has them already).
    for dir in &policy.writable {
        let destination = dir.path.as_str();
        if mounts
            .iter()
            .any(|m| m["destination"].as_str() == Some(destination))
        {
            continue;
        }
        let options = vec![
            "nosuid".to_owned(),
            "nodev".to_owned(),
            "mode=1777".to_owned(),
            format!("size={}", dir.size.bytes()),
        ];
        changes.push(change(
            &format!("mounts ({destination})"),
            "unset",
            format!("tmpfs {}", options.join(",")),
        ));
        mounts.push(json!({
            "destination": destination,
            "type": "tmpfs",
            "source": "tmpfs",
            "options": options,
        }));
    }
    // gVisor adds a writable tmpfs of unlimited size at /tmp when the spec
    // has none: a read-only one when the policy gives no /tmp.
    if !mounts.iter().any(|m| m["destination"].as_str() == Some("/tmp")) {
        let options = ["ro", "nosuid", "nodev", "noexec"].map(str::to_owned).to_vec();
        changes.push(change(
            "mounts (/tmp)",
            "unset",
            format!("tmpfs {}", options.join(",")),
        ));
        mounts.push(json!({
            "destination": "/tmp",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": options,
        }));
    }
}

/// A spec without a cgroup gets its own, named by the container's
/// node-unique key (never by anything the skill chose); a systemd-driver
/// path (kubelet's `cgroup_parent` under the systemd driver) becomes the
/// cgroupfs path systemd would give it, which skillbox creates and runsc
/// joins.
fn cgroups_path(key: &str, spec: &mut Value, changes: &mut Vec<Change>) {
    let linux = object(spec, "linux");
    let given = linux
        .get("cgroupsPath")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if let Some(path) = skillbox_sandbox::spec::systemd_cgroups_path(&given) {
        changes.push(change("linux.cgroupsPath", format!("{given:?}"), &path));
        linux.insert("cgroupsPath".to_owned(), Value::String(path));
        return;
    }
    if !given.is_empty() {
        return;
    }
    let path = format!("/skillbox/{key}");
    changes.push(change(
        "linux.cgroupsPath",
        shown(linux.get("cgroupsPath")),
        &path,
    ));
    linux.insert("cgroupsPath".to_owned(), Value::String(path));
}

fn runsc_flags(spec: &mut Value, flags: &RunscFlags, changes: &mut Vec<Change>) {
    let notes = object(spec, "annotations");
    let computed = serde_json::to_string(flags).expect("runsc flags serialize");
    let field = format!("annotations.\"{}\"", annotations::RUNSC_FLAGS);
    match notes.get(annotations::RUNSC_FLAGS) {
        Some(Value::String(given)) if *given == computed => {}
        Some(given) => {
            // The shim computes the flags; a bundle cannot choose them.
            changes.push(change(&field, given.to_string(), &computed));
            notes.insert(annotations::RUNSC_FLAGS.to_owned(), Value::String(computed));
        }
        None => {
            notes.insert(annotations::RUNSC_FLAGS.to_owned(), Value::String(computed));
        }
    }
}
