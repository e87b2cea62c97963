//! The real `halo` binary as a child process on port 0, for black-box tests.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Any `halo` server role as a child process, with the addresses it logged.
pub struct Proc {
    pub child: Child,
    /// Address logged after each marker (`"api listening"` → `127.0.0.1:4312`).
    pub addrs: HashMap<String, String>,
    /// Later log lines (the reader thread never blocks: the channel is unbounded).
    log: mpsc::Receiver<String>,
    /// Lines read while waiting for the markers.
    early: Vec<String>,
}

impl Proc {
    /// Spawns `halo ARGS` with `envs`, waiting until it has logged each of `markers`.
    pub fn spawn(args: &[String], envs: &[(&str, String)], markers: &[&str]) -> Proc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_halo"));
        cmd.args(args);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        Self::from_command(cmd, markers)
    }

    /// Spawns a prepared command (stdout discarded, stderr read for the markers).
    pub fn from_command(mut cmd: Command, markers: &[&str]) -> Proc {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("halo starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut addrs = HashMap::new();
        let mut early = Vec::new();
        while addrs.len() < markers.len() {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("halo did not log {markers:?}; it said: {early:#?}"));
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
            early.push(line);
        }
        Proc {
            child,
            addrs,
            log: rx,
            early,
        }
    }

    /// `http://` + the address logged after `marker`.
    pub fn url(&self, marker: &str) -> String {
        format!("http://{}", self.addrs[marker])
    }

    /// Whether any log line so far contains `needle`.
    pub fn logged(&mut self, needle: &str) -> bool {
        self.line(needle).is_some()
    }

    /// The first log line so far that contains `needle`.
    pub fn line(&mut self, needle: &str) -> Option<String> {
        self.early.extend(self.log.try_iter());
        self.early.iter().find(|l| l.contains(needle)).cloned()
    }

    /// SIGKILL and reap: the process gets no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM: a graceful shutdown.
    pub fn terminate(&mut self) {
        // The shell's builtin `kill`: no procps needed on the machine.
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -TERM {}", self.child.id()))
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits (up to 30 s) for the process to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("halo did not exit");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `halo serve` on port 0 with the test domain and the repository's config file.
pub struct Halo {
    pub proc: Proc,
    pub api: String,
    pub edge: String,
}

impl Halo {
    pub fn start(data: &Path, env_token: Option<&str>) -> Halo {
        Self::start_env(data, env_token, &[])
    }

    /// As [`Halo::start`], with extra environment (fault points, settings).
    pub fn start_env(data: &Path, env_token: Option<&str>, envs: &[(&str, &str)]) -> Halo {
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
        .env_remove("HALO_EDGE_LISTEN");
        if let Some(t) = env_token {
            cmd.env("HALO_ADMIN_TOKEN", t);
        }
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let proc = Proc::from_command(cmd, &["api listening", "edge listening"]);
        Halo {
            api: proc.url("api listening"),
            edge: proc.url("edge listening"),
            proc,
        }
    }

    pub fn kill_hard(&mut self) {
        self.proc.kill();
    }

    pub fn terminate(&mut self) {
        self.proc.terminate();
    }

    pub fn wait_exit(&mut self) -> ExitStatus {
        self.proc.wait_exit()
    }

    pub fn logged(&mut self, needle: &str) -> bool {
        self.proc.logged(needle)
    }
}

/// A stand-alone `halo edge` following the control plane at `api`, its store the fs store
/// in `data` (shared with the control plane).
pub fn edge_node(api: &str, token: &str, data: &Path) -> Proc {
    Proc::spawn(
        &edge_args(api, token, data, &[]),
        &[],
        &["edge listening", "admin listening"],
    )
}

/// The arguments of a `halo edge` following `api` (one URL or several, comma-separated),
/// its own `data` directory, then `storage` flags (empty: the fs store in `data`).
pub fn edge_args(api: &str, token: &str, data: &Path, storage: &[String]) -> Vec<String> {
    let mut args: Vec<String> = [
        "edge",
        "--edge-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--token",
        token,
        "--control-plane",
        api,
        "--data-dir",
        data.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(storage.iter().cloned());
    args
}
