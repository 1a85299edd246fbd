//! Test support: a real `redis-server` per test on a free loopback port, a
//! proxy that counts round trips, and waiting on conditions with deadlines.

use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A `redis-server` started for one test and killed (by its own pid) when
/// dropped. Prints the server's log if the test failed.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    /// Arguments beyond the defaults (cluster mode, TLS, ACL users).
    extra: Vec<String>,
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

impl RedisServer {
    /// Starts a server on a free loopback port and waits until it answers.
    pub fn start() -> RedisServer {
        RedisServer::start_with(|_, _| Vec::new())
    }

    /// Starts a server with more arguments, made from its port and its own
    /// directory (for files such as a cluster's `nodes.conf`).
    pub fn start_with(extra: impl Fn(u16, &std::path::Path) -> Vec<String>) -> RedisServer {
        for _ in 0..5 {
            let port = free_port();
            let dir = std::env::temp_dir()
                .join(format!("cache-runtime-test-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            let mut server = RedisServer {
                child: None,
                port,
                extra: extra(port, &dir),
                dir,
            };
            if server.spawn() {
                return server;
            }
        }
        panic!("could not start redis-server (is it installed? .ci/run installs it)");
    }

    fn spawn(&mut self) -> bool {
        let log = self.dir.join("redis.log");
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            // Redis 7 refuses `DEBUG` unless allowed; older servers have no
            // such option (and would refuse to start with it).
            .args(if major_version() >= 7 {
                &["--enable-debug-command", "local"][..]
            } else {
                &[]
            })
            .args([
                "--dir",
                self.dir.to_str().expect("utf-8 temp dir"),
                "--logfile",
                log.to_str().expect("utf-8 temp dir"),
            ])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("failed to run redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                eprintln!(
                    "redis-server on port {} exited at start ({status})",
                    self.port
                );
                self.child = None;
                return false;
            }
            if self.ping() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }

    fn ping(&self) -> bool {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    }

    /// The server's own directory (its log, and files a test made there).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A plain synchronous connection, for setting up and inspecting data.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("connect to the test redis-server")
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Writes a snapshot (`SAVE`, an RDB file in the server's directory):
    /// the next [`restart`](Self::restart) comes back with this data, as a
    /// server with persistence does after a crash.
    pub fn save(&self) {
        redis::cmd("SAVE")
            .query::<()>(&mut self.conn())
            .expect("SAVE");
    }

    /// Starts the server again on the same port: empty, or with the data of
    /// the last [`save`](Self::save).
    pub fn restart(&mut self) {
        self.kill();
        assert!(
            self.spawn(),
            "redis-server did not come back on port {}",
            self.port
        );
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        signal("-STOP", self.pid());
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) {
        signal("-CONT", self.pid());
    }

    /// Freezes the server from the inside for `duration` (`DEBUG SLEEP`, sent
    /// on a connection of its own): it accepts connections but answers
    /// nothing until then. Blocks until the server answers again.
    pub fn debug_sleep(&self, duration: Duration) {
        let mut conn = self.conn();
        redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg(duration.as_secs_f64())
            .query::<()>(&mut conn)
            .expect("DEBUG SLEEP (redis-server 7 needs --enable-debug-command)");
    }
}

/// The installed `redis-server`'s major version (0 if unknown).
fn major_version() -> u32 {
    static MAJOR: OnceLock<u32> = OnceLock::new();
    *MAJOR.get_or_init(|| {
        let out = Command::new("redis-server")
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        // "Redis server v=7.0.15 sha=..."
        out.split("v=")
            .nth(1)
            .and_then(|v| v.split('.').next())
            .and_then(|major| major.parse().ok())
            .unwrap_or(0)
    })
}

fn signal(sig: &str, pid: u32) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {sig} {pid} failed");
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Ok(log) = std::fs::read_to_string(self.dir.join("redis.log"))
        {
            eprintln!("--- redis-server log (port {}) ---\n{log}", self.port);
        }
        if self.child.is_some() {
            // A paused server must be thawed to die cleanly.
            let _ = Command::new("kill")
                .args(["-CONT", &self.pid().to_string()])
                .status();
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of three masters (no replicas) on loopback ports, made
/// with `redis-cli --cluster create`; every node is killed when dropped.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers, joins them and waits until the
    /// cluster reports `cluster_state:ok` on every node.
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::start_with(|_, dir| {
                    vec![
                        "--cluster-enabled".into(),
                        "yes".into(),
                        "--cluster-config-file".into(),
                        dir.join("nodes.conf").to_string_lossy().into_owned(),
                        "--cluster-port".into(),
                        free_port().to_string(),
                        "--cluster-node-timeout".into(),
                        "2000".into(),
                    ]
                })
            })
            .collect();
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cluster.nodes.iter().all(|n| {
            redis::cmd("CLUSTER")
                .arg("INFO")
                .query::<String>(&mut n.conn())
                .is_ok_and(|info| info.contains("cluster_state:ok"))
        }) {
            assert!(Instant::now() < deadline, "the cluster did not become ok");
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    /// `redis://127.0.0.1:<port>/` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The nodes, for raw commands (`conn()`) on each.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Kills the master that owns `key`'s slot: the node that answers a
    /// command on it instead of redirecting with `MOVED`.
    pub fn kill_owner_of(&mut self, key: &str) {
        let owner = self
            .nodes
            .iter()
            .position(|n| {
                redis::cmd("EXISTS")
                    .arg(key)
                    .query::<i64>(&mut n.conn())
                    .is_ok()
            })
            .expect("a node owns every slot");
        self.nodes[owner].kill();
    }
}

/// A loopback TCP proxy in front of a server that counts the requests
/// clients send: each burst the client writes before reading the reply is one
/// round trip. It can also cut every connection and refuse new ones
/// ([`sever`](Self::sever)) until [`restore`](Self::restore): a network
/// partition between one client and a server that stays up.
#[derive(Debug, Clone)]
pub struct CountingProxy {
    port: u16,
    requests: Arc<AtomicU64>,
    severed: Arc<tokio::sync::watch::Sender<bool>>,
}

impl CountingProxy {
    /// Starts forwarding a free port to `target_port`.
    pub async fn start(target_port: u16) -> CountingProxy {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let requests = Arc::new(AtomicU64::new(0));
        let counter = requests.clone();
        let severed = Arc::new(tokio::sync::watch::channel(false).0);
        let cut = severed.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *cut.borrow() {
                    continue; // dropped: the client sees the connection close
                }
                let Ok(server) =
                    tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, target_port)).await
                else {
                    continue;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let counter = counter.clone();
                let mut up_cut = cut.subscribe();
                let mut down_cut = cut.subscribe();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = tokio::select! {
                            read = cr.read(&mut buf) => match read {
                                Ok(n) if n > 0 => n,
                                _ => break,
                            },
                            _ = up_cut.wait_for(|cut| *cut) => break,
                        };
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                });
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = tokio::select! {
                            read = sr.read(&mut buf) => match read {
                                Ok(n) if n > 0 => n,
                                _ => break,
                            },
                            _ = down_cut.wait_for(|cut| *cut) => break,
                        };
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        CountingProxy {
            port,
            requests,
            severed,
        }
    }

    /// `redis://127.0.0.1:<proxy port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Requests forwarded so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Closes every connection through the proxy and refuses new ones.
    pub fn sever(&self) {
        self.severed.send_replace(true);
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.severed.send_replace(false);
    }
}

/// Waits until `cond` holds, polling, and panics with `what` at the deadline.
pub async fn wait_until(what: &str, deadline: Duration, mut cond: impl AsyncFnMut() -> bool) {
    let end = Instant::now() + deadline;
    loop {
        if cond().await {
            return;
        }
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A port on loopback with nothing listening.
pub fn closed_port() -> u16 {
    free_port()
}
