//! Applying, extending, reading and removing a sandbox's nftables table,
//! in a chosen network namespace.
//!
//! Every change to a table's rules is one `nft -j` batch (JSON, or nft's
//! text syntax for the NAT table), applied atomically in process through
//! libnftables (`libnftables`): a table is never half there. Learned addresses go
//! into its sets over a netfilter netlink socket (`netlink`), one atomic
//! batch per answer, without a process; so does removal (one batch for
//! the sandbox's tables). `nft` itself runs only to list a table.
//! [`Firewall`] is the seam: [`Nft`] is the real one (its context and
//! socket opened, and `nft` started, from a thread inside the namespace),
//! and [`RecordingFirewall`] records calls for unit tests of the code above.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use policy_compiler::network::Port;
use serde_json::Value;

use crate::command::{self, RunError};
use crate::netns::NETNS_DIR;
use crate::rules::{SandboxTable, FAMILY};

mod libnftables;
mod netlink;
pub use libnftables::NftContext;
pub use netlink::{encode_removal, key_bytes, SetSocket, TableFamily, TableRef};

/// The network namespace `nft` acts in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespace {
    /// The caller's own namespace.
    Current,
    /// A namespace named under `/run/netns` (as `ip netns add` makes).
    Named(String),
}

impl Namespace {
    /// The named namespace `outer`, or the caller's own for `None`.
    pub fn of(outer: Option<&crate::netns::NetnsName>) -> Namespace {
        match outer {
            Some(outer) => Namespace::Named(outer.as_str().to_owned()),
            None => Namespace::Current,
        }
    }

    /// The namespace's file, `None` for the caller's own.
    fn path(&self) -> Option<PathBuf> {
        match self {
            Namespace::Current => None,
            Namespace::Named(name) => Some(PathBuf::from(NETNS_DIR).join(name)),
        }
    }
}

impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Namespace::Current => f.write_str("(current)"),
            Namespace::Named(name) => f.write_str(name),
        }
    }
}

/// A failed change to or reading of the firewall.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("`{command}` in network namespace {namespace} printed JSON that could not be read: {source}")]
    Output {
        command: String,
        namespace: Namespace,
        #[source]
        source: serde_json::Error,
    },
    #[error("nftables in network namespace {namespace} refused the batch: {message}")]
    Apply { namespace: Namespace, message: String },
    #[error("cannot open a netfilter netlink socket in network namespace {namespace}: {source}")]
    OpenSocket {
        namespace: Namespace,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot remove the tables {tables} in network namespace {namespace}: {source}")]
    RemoveTables {
        tables: String,
        namespace: Namespace,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot add elements to set {set} of table {table} in network namespace {namespace}: {source}")]
    AddElements {
        table: String,
        set: String,
        namespace: Namespace,
        #[source]
        source: std::io::Error,
    },
}

/// What the egress code needs from the firewall.
pub trait Firewall {
    /// Creates (or replaces) the sandbox's table.
    fn apply(&self, table: &SandboxTable) -> Result<(), NftError>;
    /// Lets the sandbox reach `addr` on `ports` (`None`: every TCP port)
    /// for `ttl_secs` plus the table's grace; returns once the kernel has
    /// the elements. Does nothing for an address family the sandbox is
    /// refused.
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

/// The real firewall: runs `nft` and keeps one netlink socket (opened on
/// the first learn, shared by clones) in its namespace.
#[derive(Debug, Clone)]
pub struct Nft {
    namespace: Namespace,
    nft: PathBuf,
    socket: Arc<Mutex<Option<SetSocket>>>,
    /// libnftables, for changes to rules (opened on first use).
    context: Arc<Mutex<Option<NftContext>>>,
}

impl Nft {
    /// `nft` from `PATH`, acting in `namespace`.
    pub fn new(namespace: Namespace) -> Nft {
        Nft {
            namespace,
            nft: PathBuf::from("nft"),
            socket: Arc::default(),
            context: Arc::default(),
        }
    }

    /// Uses this program instead of `nft` from `PATH`.
    pub fn with_program(mut self, nft: PathBuf) -> Nft {
        self.nft = nft;
        self
    }

    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    fn argv(&self, args: &[&str]) -> Vec<String> {
        let mut argv = vec![self.nft.to_string_lossy().into_owned()];
        argv.extend(args.iter().map(|arg| (*arg).to_owned()));
        argv
    }

    /// Runs `nft args…` with `stdin` in the namespace, returning its stdout.
    fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Result<String, NftError> {
        Ok(command::run(
            &self.argv(args),
            stdin,
            self.namespace.path().as_deref(),
        )?)
    }

    /// Applies one `nft -j` batch atomically.
    pub fn apply_batch(&self, batch: &Value) -> Result<(), NftError> {
        self.apply_commands(&batch.to_string())
    }

    /// Applies nft commands (JSON or nft's text syntax) atomically, in
    /// process through libnftables (see `libnftables`).
    pub fn apply_commands(&self, commands: &str) -> Result<(), NftError> {
        let mut context = self.context.lock().unwrap_or_else(|e| e.into_inner());
        if context.is_none() {
            let opened = command::in_netns(self.namespace.path().as_deref(), NftContext::open)
                .and_then(|opened| opened)
                .map_err(|source| NftError::OpenSocket {
                    namespace: self.namespace.clone(),
                    source,
                })?;
            *context = Some(opened);
        }
        let result = context.as_mut().expect("just opened").run(commands);
        result.map_err(|message| {
            // Start over with a fresh context after any failure.
            *context = None;
            NftError::Apply {
                namespace: self.namespace.clone(),
                message,
            }
        })
    }

    fn json(&self, args: &[&str]) -> Result<Value, NftError> {
        let stdout = self.run(args, None)?;
        serde_json::from_str(&stdout).map_err(|source| NftError::Output {
            command: self.argv(args).join(" "),
            namespace: self.namespace.clone(),
            source,
        })
    }

    /// Removes `tables` in one atomic batch over the netlink socket;
    /// succeeds for tables already gone.
    pub fn remove_tables(&self, tables: &[TableRef]) -> Result<(), NftError> {
        let names = tables
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        tracing::debug!(tables = names, namespace = %self.namespace, "removing nftables tables");
        self.with_socket(
            |socket| socket.remove_tables(tables),
            |source| NftError::RemoveTables {
                tables: names.clone(),
                namespace: self.namespace.clone(),
                source,
            },
        )
    }

    /// Runs `work` on the namespace's netlink socket, opened (from a thread
    /// inside the namespace) on first use; a failed `work` costs the socket,
    /// so that no late answer to it is taken for the next batch's.
    fn with_socket(
        &self,
        work: impl FnOnce(&mut SetSocket) -> std::io::Result<()>,
        error: impl FnOnce(std::io::Error) -> NftError,
    ) -> Result<(), NftError> {
        let mut socket = self
            .socket
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let open = match socket.as_mut() {
            Some(open) => open,
            None => {
                let opened = command::in_netns(self.namespace.path().as_deref(), SetSocket::open)
                    .and_then(|result| result)
                    .map_err(|source| NftError::OpenSocket {
                        namespace: self.namespace.clone(),
                        source,
                    })?;
                socket.insert(opened)
            }
        };
        work(open).map_err(|source| {
            *socket = None;
            error(source)
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
        let Some(elements) = table.learned(addr, ports, ttl_secs) else {
            return Ok(());
        };
        self.with_socket(
            |socket| socket.add(&elements),
            |source| NftError::AddElements {
                table: elements.table.clone(),
                set: elements.set.clone(),
                namespace: self.namespace.clone(),
                source,
            },
        )
    }

    fn list(&self, name: &str) -> Result<Option<Value>, NftError> {
        if !self.tables()?.iter().any(|table| table == name) {
            return Ok(None);
        }
        self.json(&["-j", "list", "table", FAMILY, name]).map(Some)
    }

    fn remove(&self, name: &str) -> Result<(), NftError> {
        self.remove_tables(&[TableRef {
            family: TableFamily::Inet,
            name: name.to_owned(),
        }])
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
    use crate::rules::remove_batch;

    #[test]
    fn nft_runs_inside_the_namespace_and_errors_name_it() {
        let nft = Nft::new(Namespace::Named("skillbox-test-rules-none".into()))
            .with_program("/nonexistent/nft".into());
        assert_eq!(
            nft.argv(&["-j", "-f", "-"]),
            ["/nonexistent/nft", "-j", "-f", "-"]
        );
        let err = nft.json(&["list", "ruleset"]).unwrap_err().to_string();
        assert!(
            err.contains("`/nonexistent/nft list ruleset` in network namespace /var/run/netns/skillbox-test-rules-none"),
            "{err}"
        );
        // Applying goes through libnftables, in the namespace: one that does
        // not exist is named.
        let err = nft
            .apply_batch(&remove_batch("skillbox-x"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("network namespace /var/run/netns/skillbox-test-rules-none")
                || err.contains("network namespace skillbox-test-rules-none"),
            "{err}"
        );
        // A failing program: its status and stderr are in the message.
        let nft = Nft::new(Namespace::Current).with_program("sh".into());
        let err = nft
            .run(&["-c", "echo oops >&2; exit 3"], None)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "`sh -c echo oops >&2; exit 3` failed (exit status: 3): oops");
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
            inbound: crate::rules::Inbound::Closed,
            recorder: None,
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
