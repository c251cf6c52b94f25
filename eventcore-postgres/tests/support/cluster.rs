//! A PostgreSQL cluster of a test's own, from the local binaries
//! (`pg_config --bindir`), for faults that would disturb other tests on the
//! shared server, such as a restart. Stopped and removed on drop.

use std::{
    path::PathBuf,
    process::{Command, Output},
};

pub struct Cluster {
    dir: PathBuf,
    bindir: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl Cluster {
    /// Creates and starts a cluster on a free loopback port. Needs the
    /// server's binaries: `pg_config` on the PATH (Debian's `postgresql`
    /// package), as `./scripts/test` does when `DATABASE_URL` is unset.
    pub fn start() -> Self {
        let bindir = Command::new("pg_config")
            .arg("--bindir")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
            .expect(
                "this test starts a PostgreSQL cluster of its own from the local binaries: \
                 put pg_config on the PATH (Debian: apt-get install postgresql)",
            );
        // The server refuses to run as root.
        let as_postgres = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let cluster = Cluster::unstarted(bindir, as_postgres);
        let data = cluster.dir.join("data");
        cluster.run(
            "initdb",
            &[
                "-D",
                &data.to_string_lossy(),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ],
        );
        cluster.start_server();
        cluster
    }

    /// A folder of its own (owned by `postgres` when this is root) and a
    /// free loopback port, nothing in it yet.
    fn unstarted(bindir: PathBuf, as_postgres: bool) -> Cluster {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!(
            "eventcore-own-pg-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir).expect("cluster folder");
        let cluster = Cluster {
            dir,
            bindir,
            port,
            as_postgres,
        };
        if as_postgres {
            cluster.check(
                Command::new("chown")
                    .arg("postgres:")
                    .arg(&cluster.dir)
                    .output(),
                "chown",
            );
        }
        cluster
    }

    /// Starts the server on the cluster's `data` folder and port.
    fn start_server(&self) {
        let data = self.dir.join("data");
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories={} -c max_connections=100",
            self.port,
            self.dir.to_string_lossy()
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                &data.to_string_lossy(),
                "-l",
                &self.dir.join("server.log").to_string_lossy(),
                "-w",
                "-t",
                "60",
                "-o",
                &options,
                "start",
            ],
        );
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctl restart -m fast`: every session is ended (FATAL 57P01), the
    /// server is down for a moment, then accepts connections again.
    pub fn restart(&self) {
        let data = self.dir.join("data");
        self.run(
            "pg_ctl",
            &[
                "-D",
                &data.to_string_lossy(),
                "-l",
                &self.dir.join("server.log").to_string_lossy(),
                "-m",
                "fast",
                "-w",
                "-t",
                "60",
                "restart",
            ],
        );
    }

    /// A copy of this cluster made while it runs (`pg_basebackup`, with
    /// the WAL it needs), started on a port of its own as a primary: what
    /// a standby promoted after a failover is, at the point it had replayed.
    pub fn base_backup(&self) -> Cluster {
        let copy = Cluster::unstarted(self.bindir.clone(), self.as_postgres);
        let data = copy.dir.join("data").to_string_lossy().into_owned();
        copy.run(
            "pg_basebackup",
            &["-D", &data, "-d", &self.url(), "-X", "stream", "-c", "fast"],
        );
        copy.start_server();
        copy
    }

    /// A client tool of the same installation (`pg_dump`, `psql`), to run
    /// as this user.
    pub fn client(&self, tool: &str) -> Command {
        Command::new(self.bindir.join(tool))
    }

    /// One of the server's tools, run as `postgres` when this is root.
    fn tool(&self, tool: &str, args: &[&str]) -> Command {
        let program = self.bindir.join(tool);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        command.args(args);
        command
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let output = self.tool(tool, args).output();
        self.check(output, tool);
    }

    fn check(&self, output: std::io::Result<Output>, what: &str) {
        let output = output.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            output.status.success(),
            "{what} failed: {}{}\nserver log: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.join("data").to_string_lossy().into_owned();
        let _ = self
            .tool("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
