//! Applying, extending, reading and removing a sandbox's nftables table
//! with the `nft` program, in a chosen network namespace.
//!
//! Every change is one `nft -j -f -` batch, which nft applies atomically:
//! a table is never half there. [`Firewall`] is the seam: [`Nft`] runs the
//! real program (inside a named namespace through `ip netns exec`), and
//! [`RecordingFirewall`] records calls for unit tests of the code above.

use std::ffi::OsString;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;

use policy_compiler::network::Port;
use serde_json::Value;

use crate::rules::{remove_batch, SandboxTable, FAMILY};

/// The network namespace `nft` acts in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespace {
    /// The caller's own namespace.
    Current,
    /// A namespace named under `/run/netns` (as `ip netns add` makes).
    Named(String),
}

impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Namespace::Current => f.write_str("(current)"),
            Namespace::Named(name) => f.write_str(name),
        }
    }
}

/// A failed `nft` run. Each variant names the command and the namespace.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("could not start `{command}` for network namespace {namespace}: {source}")]
    Start {
        command: String,
        namespace: Namespace,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` in network namespace {namespace} failed ({status}): {stderr}")]
    Failed {
        command: String,
        namespace: Namespace,
        status: ExitStatus,
        stdout: String,
        stderr: String,
    },
    #[error("`{command}` in network namespace {namespace} printed JSON that could not be read: {source}")]
    Output {
        command: String,
        namespace: Namespace,
        #[source]
        source: serde_json::Error,
    },
}

/// What the egress code needs from the firewall.
pub trait Firewall {
    /// Creates (or replaces) the sandbox's table.
    fn apply(&self, table: &SandboxTable) -> Result<(), NftError>;
    /// Lets the sandbox reach `addr` on `ports` (`None`: every TCP port)
    /// for `ttl_secs` plus the table's grace. Does nothing for an address
    /// family the sandbox is refused.
    fn learn(
        &self,
        table: &SandboxTable,
        addr: IpAddr,
        ports: Option<&[Port]>,
        ttl_secs: u32,
    ) -> Result<(), NftError>;
    /// The table `name` as `nft -j list table` prints it, or `None` when
    /// there is no such table.
    fn list(&self, name: &str) -> Result<Option<Value>, NftError>;
    /// Removes the table `name`; succeeds when it is already gone.
    fn remove(&self, name: &str) -> Result<(), NftError>;
}

/// The real firewall: runs `nft` (through `ip netns exec` for a named
/// namespace).
#[derive(Debug, Clone)]
pub struct Nft {
    namespace: Namespace,
    nft: PathBuf,
    ip: PathBuf,
}

impl Nft {
    /// `nft` and `ip` from `PATH`, acting in `namespace`.
    pub fn new(namespace: Namespace) -> Nft {
        Nft {
            namespace,
            nft: PathBuf::from("nft"),
            ip: PathBuf::from("ip"),
        }
    }

    /// Uses these programs instead of `nft` and `ip` from `PATH`.
    pub fn with_programs(mut self, nft: PathBuf, ip: PathBuf) -> Nft {
        self.nft = nft;
        self.ip = ip;
        self
    }

    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    fn argv(&self, args: &[&str]) -> Vec<OsString> {
        let mut argv = Vec::new();
        if let Namespace::Named(name) = &self.namespace {
            argv.extend([self.ip.clone().into(), "netns".into(), "exec".into(), name.into()]);
        }
        argv.push(self.nft.clone().into());
        argv.extend(args.iter().map(OsString::from));
        argv
    }

    /// Runs `nft args…` with `stdin`, returning its stdout.
    fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Result<String, NftError> {
        let argv = self.argv(args);
        let command = command_line(&argv);
        let start_error = |source| NftError::Start {
            command: command.clone(),
            namespace: self.namespace.clone(),
            source,
        };
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(start_error)?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A write error (nft exited early) shows in its status and stderr.
            let _ = pipe.write_all(input);
        }
        let output = child.wait_with_output().map_err(start_error)?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            return Err(NftError::Failed {
                command,
                namespace: self.namespace.clone(),
                status: output.status,
                stdout,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        Ok(stdout)
    }

    /// Applies one `nft -j` batch atomically.
    pub fn apply_batch(&self, batch: &Value) -> Result<(), NftError> {
        self.run(&["-j", "-f", "-"], Some(batch.to_string().as_bytes()))
            .map(drop)
    }

    fn json(&self, args: &[&str]) -> Result<Value, NftError> {
        let stdout = self.run(args, None)?;
        serde_json::from_str(&stdout).map_err(|source| NftError::Output {
            command: command_line(&self.argv(args)),
            namespace: self.namespace.clone(),
            source,
        })
    }

    /// Names of the `inet` tables in the namespace.
    pub fn tables(&self) -> Result<Vec<String>, NftError> {
        let listing = self.json(&["-j", "list", "tables", FAMILY])?;
        Ok(listing["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| item["table"]["name"].as_str().map(str::to_owned))
            .collect())
    }
}

fn command_line(argv: &[OsString]) -> String {
    argv.iter()
        .map(|arg| arg.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

impl Firewall for Nft {
    fn apply(&self, table: &SandboxTable) -> Result<(), NftError> {
        tracing::debug!(table = table.name(), namespace = %self.namespace, "applying egress table");
        self.apply_batch(&table.apply_batch())
    }

    fn learn(
        &self,
        table: &SandboxTable,
        addr: IpAddr,
        ports: Option<&[Port]>,
        ttl_secs: u32,
    ) -> Result<(), NftError> {
        match table.learn_batch(addr, ports, ttl_secs) {
            Some(batch) => self.apply_batch(&batch),
            None => Ok(()),
        }
    }

    fn list(&self, name: &str) -> Result<Option<Value>, NftError> {
        if !self.tables()?.iter().any(|table| table == name) {
            return Ok(None);
        }
        self.json(&["-j", "list", "table", FAMILY, name]).map(Some)
    }

    fn remove(&self, name: &str) -> Result<(), NftError> {
        tracing::debug!(table = name, namespace = %self.namespace, "removing egress table");
        self.apply_batch(&remove_batch(name))
    }
}

/// One call a [`RecordingFirewall`] received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirewallCall {
    Apply {
        table: String,
    },
    Learn {
        table: String,
        addr: IpAddr,
        ports: Option<Vec<Port>>,
        ttl_secs: u32,
    },
    List {
        table: String,
    },
    Remove {
        table: String,
    },
}

/// A fake [`Firewall`] for unit tests: records calls, keeps applied tables'
/// batches, and fails nothing.
#[derive(Debug, Default)]
pub struct RecordingFirewall {
    calls: Mutex<Vec<FirewallCall>>,
    tables: Mutex<Vec<(String, Value)>>,
}

impl RecordingFirewall {
    pub fn calls(&self) -> Vec<FirewallCall> {
        self.calls.lock().expect("poisoned").clone()
    }

    fn record(&self, call: FirewallCall) {
        self.calls.lock().expect("poisoned").push(call);
    }
}

impl Firewall for RecordingFirewall {
    fn apply(&self, table: &SandboxTable) -> Result<(), NftError> {
        self.record(FirewallCall::Apply {
            table: table.name().to_owned(),
        });
        let mut tables = self.tables.lock().expect("poisoned");
        tables.retain(|(name, _)| name != table.name());
        tables.push((table.name().to_owned(), table.apply_batch()));
        Ok(())
    }

    fn learn(
        &self,
        table: &SandboxTable,
        addr: IpAddr,
        ports: Option<&[Port]>,
        ttl_secs: u32,
    ) -> Result<(), NftError> {
        self.record(FirewallCall::Learn {
            table: table.name().to_owned(),
            addr,
            ports: ports.map(<[Port]>::to_vec),
            ttl_secs,
        });
        Ok(())
    }

    fn list(&self, name: &str) -> Result<Option<Value>, NftError> {
        self.record(FirewallCall::List {
            table: name.to_owned(),
        });
        let tables = self.tables.lock().expect("poisoned");
        Ok(tables
            .iter()
            .find(|(table, _)| table == name)
            .map(|(_, batch)| batch.clone()))
    }

    fn remove(&self, name: &str) -> Result<(), NftError> {
        self.record(FirewallCall::Remove {
            table: name.to_owned(),
        });
        self.tables
            .lock()
            .expect("poisoned")
            .retain(|(table, _)| table != name);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_namespace_runs_nft_through_ip_netns_exec() {
        let nft = Nft::new(Namespace::Named("skillbox-x".into()));
        assert_eq!(
            nft.argv(&["-j", "-f", "-"]),
            ["ip", "netns", "exec", "skillbox-x", "nft", "-j", "-f", "-"].map(OsString::from)
        );
        let nft = Nft::new(Namespace::Current);
        assert_eq!(
            nft.argv(&["list", "tables"]),
            ["nft", "list", "tables"].map(OsString::from)
        );
    }

    #[test]
    fn errors_name_the_command_namespace_and_stderr() {
        let nft = Nft::new(Namespace::Named("skillbox-test-rules-none".into()))
            .with_programs("/nonexistent/nft".into(), "/nonexistent/ip".into());
        let err = nft.remove("skillbox-x").unwrap_err().to_string();
        assert!(
            err.contains("/nonexistent/ip netns exec skillbox-test-rules-none /nonexistent/nft -j -f -"),
            "{err}"
        );
        assert!(
            err.contains("network namespace skillbox-test-rules-none"),
            "{err}"
        );
        // A failing program: its status and stderr are in the message.
        let nft = Nft::new(Namespace::Current).with_programs("sh".into(), "ip".into());
        let err = nft
            .run(&["-c", "echo oops >&2; exit 3"], None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`sh -c echo oops >&2; exit 3` in network namespace (current) failed"),
            "{err}"
        );
        assert!(err.contains("exit status: 3") && err.ends_with("oops"), "{err}");
    }

    #[test]
    fn the_recording_firewall_keeps_what_was_applied() {
        let network =
            serde_json::from_value(serde_json::json!({"allow": [], "deny": [], "always_deny": []})).unwrap();
        let facts = crate::rules::SandboxFacts {
            sandbox_id: "rec".into(),
            outer_veth: "v0".into(),
            sandbox_addrs: vec!["10.200.0.2".parse().unwrap()],
            dns_proxy: vec!["10.200.0.1:53".parse().unwrap()],
            node_addrs: Vec::new(),
            grace_secs: 0,
            log_group: None,
        };
        let table = SandboxTable::build(&network, &facts).unwrap();
        let fake = RecordingFirewall::default();
        fake.apply(&table).unwrap();
        assert_eq!(fake.list("skillbox-rec").unwrap(), Some(table.apply_batch()));
        fake.learn(&table, "192.0.2.9".parse().unwrap(), None, 30)
            .unwrap();
        fake.remove("skillbox-rec").unwrap();
        assert_eq!(fake.list("skillbox-rec").unwrap(), None);
        assert_eq!(fake.calls().len(), 5);
        assert_eq!(
            fake.calls()[2],
            FirewallCall::Learn {
                table: "skillbox-rec".into(),
                addr: "192.0.2.9".parse().unwrap(),
                ports: None,
                ttl_secs: 30
            }
        );
    }
}
