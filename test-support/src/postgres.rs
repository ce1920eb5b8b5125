//! A private PostgreSQL server for the registry exporter's tests: its own
//! cluster in a temp dir, listening only on a Unix socket there, run as
//! the `postgres` user (PostgreSQL refuses to run as root), with the
//! registry's `audit_log` table. Stopped and removed on drop.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// The registry's `audit_log` table, in the shape the registry gives it.
pub const AUDIT_LOG_TABLE: &str = "CREATE TABLE audit_log (
    id BIGSERIAL PRIMARY KEY,
    actor_user_id BIGINT,
    action VARCHAR(64) NOT NULL,
    target_type VARCHAR(32),
    target_id BIGINT,
    request_id VARCHAR(64),
    client_ip VARCHAR(64),
    user_agent VARCHAR(255),
    detail_json JSONB,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
)";

/// Debian's server binaries (`postgresql` package), else PATH's.
fn binary(name: &str) -> PathBuf {
    let versioned = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("bin").join(name))
        .find(|path| path.exists());
    versioned.unwrap_or_else(|| PathBuf::from(name))
}

pub struct Postgres {
    dir: tempfile::TempDir,
    port: u16,
    running: bool,
}

fn as_postgres(program: &Path) -> Command {
    let mut command = Command::new("runuser");
    command.args(["-u", "postgres", "--"]).arg(program);
    command
}

impl Postgres {
    pub fn start() -> Postgres {
        assert!(
            binary("initdb").exists()
                && Command::new("id")
                    .arg("postgres")
                    .output()
                    .is_ok_and(|o| o.status.success()),
            "prerequisite missing: PostgreSQL's initdb and the postgres user (install Debian's postgresql)"
        );
        static NEXT: AtomicU16 = AtomicU16::new(0);
        let port = 20000 + (std::process::id() % 20000) as u16 + NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = tempfile::Builder::new().prefix("skillbox-pg.").tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let data = dir.path().join("data");
        let status = as_postgres(&binary("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .status()
            .expect("running initdb");
        assert!(status.success(), "initdb failed");
        let mut postgres = Postgres {
            dir,
            port,
            running: false,
        };
        postgres.up();
        postgres.sql(AUDIT_LOG_TABLE);
        postgres
    }

    /// The connection string for the exporter.
    pub fn conninfo(&self) -> String {
        format!(
            "host={} port={} user=postgres dbname=postgres connect_timeout=2",
            self.dir.path().display(),
            self.port
        )
    }

    /// Starts the server (again) on the same data; waits until it accepts.
    pub fn up(&mut self) {
        let log = self.dir.path().join("server.log");
        let options = format!(
            "-k {} -c listen_addresses='' -p {}",
            self.dir.path().display(),
            self.port
        );
        let status = as_postgres(&binary("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-l")
            .arg(&log)
            .args(["-o", &options, "-w", "start"])
            .stdout(Stdio::null())
            .status()
            .expect("running pg_ctl start");
        assert!(
            status.success(),
            "pg_ctl start failed: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        self.running = true;
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.try_sql("SELECT 1").is_none() {
            assert!(Instant::now() < deadline, "PostgreSQL did not accept connections");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server (fast shutdown).
    pub fn down(&mut self) {
        let _ = as_postgres(&binary("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "fast", "-w", "stop"])
            .stdout(Stdio::null())
            .status();
        self.running = false;
    }

    fn try_sql(&self, sql: &str) -> Option<String> {
        let output = Command::new(binary("psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.dir.path())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                sql,
            ])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Runs `sql` with psql; its unaligned output.
    pub fn sql(&self, sql: &str) -> String {
        self.try_sql(sql).unwrap_or_else(|| panic!("psql failed: {sql}"))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            self.down();
        }
    }
}
