//! The real `halo` binary as a child process on port 0, for black-box tests.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub struct Halo {
    pub child: Child,
    pub api: String,
    pub edge: String,
    log: mpsc::Receiver<String>,
    /// Lines read while waiting for the addresses.
    early: Vec<String>,
}

impl Halo {
    pub fn start(data: &Path, env_token: Option<&str>) -> Halo {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_halo"));
        cmd.args([
            "serve",
            "--api-listen",
            "127.0.0.1:0",
            "--edge-listen",
            "127.0.0.1:0",
            "--shutdown-grace-secs",
            "20",
        ])
        .arg("--data-dir")
        .arg(data)
        .env("HALO_DOMAIN", "halo.test")
        .env(
            "HALO_CONFIG",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("config/halo.toml"),
        )
        .env_remove("HALO_ADMIN_TOKEN")
        .env_remove("HALO_API_LISTEN")
        .env_remove("HALO_EDGE_LISTEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        if let Some(t) = env_token {
            cmd.env("HALO_ADMIN_TOKEN", t);
        }
        let mut child = cmd.spawn().expect("halo starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (mut api, mut edge) = (None, None);
        let mut early = Vec::new();
        while api.is_none() || edge.is_none() {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("halo logs its addresses");
            early.push(line.clone());
            let addr = || {
                line.split("addr=")
                    .nth(1)
                    .unwrap()
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .to_owned()
            };
            if line.contains("api listening") {
                api = Some(format!("http://{}", addr()));
            } else if line.contains("edge listening") {
                edge = Some(format!("http://{}", addr()));
            }
        }
        Halo {
            child,
            api: api.unwrap(),
            edge: edge.unwrap(),
            log: rx,
            early,
        }
    }

    /// SIGKILL: the process gets no chance to clean up.
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn terminate(&mut self) {
        // The shell's builtin `kill`: no procps needed on the machine.
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -TERM {}", self.child.id()))
            .status()
            .unwrap();
        assert!(ok.success());
    }

    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("halo did not exit after SIGTERM");
    }

    pub fn logged(&self, needle: &str) -> bool {
        self.early
            .iter()
            .chain(self.log.try_iter().collect::<Vec<_>>().iter())
            .any(|l| l.contains(needle))
    }
}

impl Drop for Halo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Any `halo` server role as a child process, with the addresses it logged.
pub struct Proc {
    pub child: Child,
    /// Address logged after each marker (`"api listening"` → `127.0.0.1:4312`).
    pub addrs: std::collections::HashMap<String, String>,
}

impl Proc {
    /// Spawns `halo ARGS` with `envs`, waiting until it has logged each of `markers`.
    pub fn spawn(args: &[String], envs: &[(&str, String)], markers: &[&str]) -> Proc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_halo"));
        cmd.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("halo starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut addrs = std::collections::HashMap::new();
        while addrs.len() < markers.len() {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("halo {args:?} did not log {markers:?}"));
            for m in markers {
                if line.contains(m) {
                    let addr = line
                        .split("addr=")
                        .nth(1)
                        .unwrap()
                        .split_whitespace()
                        .next()
                        .unwrap();
                    addrs.insert((*m).to_owned(), addr.to_owned());
                }
            }
        }
        // Keep draining so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in rx {});
        Proc { child, addrs }
    }

    /// `http://` + the address logged after `marker`.
    pub fn url(&self, marker: &str) -> String {
        format!("http://{}", self.addrs[marker])
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
