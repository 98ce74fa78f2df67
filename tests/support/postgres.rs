//! A PostgreSQL cluster of a test's own, for tests that stop and restart
//! the server: the shared cluster `./x test` starts serves every other test
//! at once and must stay up. The binaries are the ones `./x test` found
//! (`CAIRN_TEST_POSTGRES_BIN`); as root the cluster runs as `postgres`,
//! since `initdb` refuses root. It listens on 127.0.0.1 only, on a free
//! port, and trusts local connections: it holds nothing and lives seconds.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A private cluster, stopped and removed when dropped.
pub struct PrivateCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PrivateCluster {
    /// Makes and starts a cluster.
    pub fn start() -> Self {
        let bin = std::env::var("CAIRN_TEST_POSTGRES_BIN").map(PathBuf::from).unwrap_or_else(|_| {
            panic!("this test runs a PostgreSQL cluster of its own: run it through `./x test` (it sets CAIRN_TEST_POSTGRES_BIN)")
        });
        let dir = tempfile::Builder::new().prefix("cairn-pg-own.").tempdir_in("/tmp").unwrap();
        let as_postgres = unsafe { libc::geteuid() } == 0;
        if as_postgres {
            let chown = Command::new("chown").arg("-R").arg("postgres").arg(dir.path()).status().unwrap();
            assert!(chown.success(), "cannot give {} to the postgres user", dir.path().display());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let cluster = PrivateCluster { dir, bin, port, as_postgres };
        cluster.run("initdb", &["-D", &cluster.data(), "-U", "cairn", "--auth=trust", "-E", "UTF8"]);
        cluster.up();
        cluster
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://cairn@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server (`-m fast`: sessions are cut, open transactions rolled back).
    pub fn down(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    /// Starts the server on its port.
    pub fn up(&self) {
        let log = self.dir.path().join("server.log");
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1", self.port, self.dir.path().display());
        self.run("pg_ctl", &["-D", &self.data(), "-l", &log.to_string_lossy(), "-w", "-o", &options, "start"]);
    }

    fn data(&self) -> String {
        self.dir.path().join("data").to_string_lossy().into_owned()
    }

    /// One of the cluster's programs, run as the cluster's owner.
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program);
            command
        } else {
            Command::new(&program)
        };
        command.current_dir(Path::new("/tmp"));
        command
    }

    fn run(&self, program: &str, args: &[&str]) {
        let output = self.command(program).args(args).output().unwrap();
        assert!(
            output.status.success(),
            "{program} {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = self.command("pg_ctl").args(["-D", &self.data(), "-m", "immediate", "stop"]).output();
    }
}
