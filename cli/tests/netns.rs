//! Confer across real network boundaries on one machine: Linux network namespaces, veth
//! pairs and masquerading routers put three members in three organisations that can
//! reach a relay host on "the internet" and nothing else.
//!
//! ```text
//!   memA 10.1.0.2 ── 10.1.0.1 natA 11.18.1.2 ──┐
//!   memB 10.2.0.2 ── 10.2.0.1 natB 11.18.2.2 ──┼── pub: the relay, on 11.18.0.1
//!   memC 10.3.0.2 ── 10.3.0.1 natC 11.18.3.2 ──┘
//! ```
//!
//! Each `natX` forwards and masquerades its member behind its uplink address. `pub` owns
//! the relay's address, has a connected route to each uplink and nothing else, and does
//! not forward: a member can open connections to the relay and to nothing else, not even
//! to another organisation's public address. So everything between members goes through
//! the relay (and hole punching cannot succeed: there is no path to punch through).
//!
//! Alice (facilitator, memA), Bob (memB) and Carol (memC, a relay-only profile) form a
//! room and talk; Carol's network is then cut, Alice and Bob talk on, and when Carol's
//! network comes back she must catch up on everything. Finally nobody may be connected to
//! Carol other than through the relay, and AutoNAT must have found Alice and Bob behind
//! NAT (the public addresses are in 11.0.0.0/8, which AutoNAT treats as global).
//!
//! A second topology lets `pub` forward between the organisations' public addresses (the
//! internet) while each router drops unsolicited inbound connections (a NAT): Alice and
//! Bob meet through the relay and DCUtR must leave them with a direct connection.
//!
//! Needs root, iproute2 and iptables, so it is ignored by `cargo test`; `.ci/run` runs
//! it with `cargo test -p confer-cli --test netns -- --ignored --nocapture`. Namespaces
//! are named `confer-netns-<pid>-<n>-…` and removed at the end, even on failure; ones left
//! by a run that was killed are removed by the next run. Set `RUST_LOG` to get the
//! relay's and nodes' logs in the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

const CONFER: &str = env!("CARGO_BIN_EXE_confer");
const NS_PREFIX: &str = "confer-netns-";
const RELAY_IP: &str = "11.18.0.1";
const RELAY_PORT: u16 = 4001;
const ROOM: &str = "Across three networks";
const POLL: Duration = Duration::from_millis(200);
/// How long a readiness line, a join, or a message through the relay may take.
const PATIENCE: Duration = Duration::from_secs(60);
/// How long the others and a member cut off from the network may take to notice that
/// their connections are dead: a node closes a connection after two failed pings (every
/// 5 s, 10 s timeout; see `confer_node::net::PING_INTERVAL`), about 30 s.
const NOTICE: Duration = Duration::from_secs(120);
/// How long a member cut off from the network may take to catch up once it is back
/// (its node re-reserves on the relay and redials with backoff).
const CATCH_UP: Duration = Duration::from_secs(90);
/// How many lines of each child's stderr the failure report keeps.
const LOG_LINES: usize = 300;

/// Runs `program args…`, which must succeed; returns its stdout.
fn must(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("could not run {program}: {e}"));
    assert!(
        out.status.success(),
        "`{program} {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fails at once, with what to do, unless this is root with `ip` and `iptables`.
fn preflight() {
    let uid = Command::new("id").arg("-u").output().unwrap();
    let uid = String::from_utf8_lossy(&uid.stdout).trim().to_owned();
    assert_eq!(
        uid, "0",
        "this test builds network namespaces and must run as root (uid is {uid}); \
         run it with sudo or through .ci/run"
    );
    for (tool, package) in [("ip", "iproute2"), ("iptables", "iptables")] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            found,
            "`{tool}` is missing: install {package} (apt-get install -y {package}); .ci/run does"
        );
    }
}

/// Removes namespaces left by earlier runs of this test whose process is gone.
fn remove_stale_namespaces() {
    for line in must("ip", &["netns", "list"]).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or("");
        if !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
            let _ = Command::new("ip")
                .args(["netns", "delete", name])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// `ip -n NS WORDS…`, which must succeed.
fn ip(ns: &str, words: &str) {
    let mut args = vec!["-n", ns];
    args.extend(words.split_whitespace());
    must("ip", &args);
}

/// `ip netns exec NS WORDS…`, which must succeed; a quoted '…' is one word.
fn in_ns(ns: &str, command: &str) {
    let mut args = vec!["netns", "exec", ns];
    for (i, part) in command.split('\'').enumerate() {
        if i % 2 == 1 {
            args.push(part);
        } else {
            args.extend(part.split_whitespace());
        }
    }
    must("ip", &args);
}

/// `ip netns exec NS confer --home HOME …` with the test passphrase.
fn confer_in(ns: &str, home: &Path) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, CONFER, "--home"])
        .arg(home)
        .env("CONFER_PASSPHRASE", common::PASSPHRASE)
        .env_remove("CONFER_HOME")
        .stdin(Stdio::null());
    cmd
}

/// What a TCP connection attempt met.
#[derive(Debug, PartialEq)]
enum Reach {
    Open,
    /// The host answered with a reset: there is a path to it.
    Refused,
    /// No answer within 3 s, or no route to the host.
    Nothing,
}

/// Tries a TCP connection from namespace `ns` to `ip:port` (bash's /dev/tcp and
/// coreutils' timeout: nothing beyond what every CI image has).
fn tcp_probe(ns: &str, ip: &str, port: u16) -> Reach {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "timeout", "3", "bash", "-c"])
        .arg("exec 3<>/dev/tcp/$0/$1")
        .args([ip, &port.to_string()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    if out.status.success() {
        Reach::Open
    } else if String::from_utf8_lossy(&out.stderr).contains("refused") {
        Reach::Refused
    } else {
        Reach::Nothing
    }
}

/// One member: a profile in a temporary home, used from inside its namespace.
#[derive(Clone)]
struct Member {
    name: &'static str,
    ns: String,
    home: PathBuf,
}

impl Member {
    fn run(&self, args: &[&str]) -> Output {
        confer_in(&self.ns, &self.home)
            .env_remove("RUST_LOG")
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs `confer ARGS --json`, which must succeed, and parses its output.
    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let out = self.run(&args);
        assert!(
            out.status.success(),
            "{}: confer {args:?} failed ({}): {}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{}: confer {args:?} printed invalid JSON ({e}): {}",
                self.name,
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// The room's history as this member's node has it: message id → (author, text).
    fn history(&self) -> BTreeMap<String, (String, String)> {
        self.json(&["read", ROOM])
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let field = |k: &str| m[k].as_str().unwrap().to_owned();
                (field("message_id"), (field("author"), field("text")))
            })
            .collect()
    }

    fn send(&self, text: &str) -> String {
        let sent = self.json(&["send", ROOM, text]);
        sent["message_id"].as_str().unwrap().to_owned()
    }
}

/// A long-running child (`relay run` or `node run`) inside a namespace.
struct Daemon {
    name: String,
    child: Child,
    /// The last [`LOG_LINES`] lines of its stderr (and any stdout after readiness).
    log: Arc<Mutex<Vec<String>>>,
}

fn keep(log: &Mutex<Vec<String>>, line: String) {
    let mut log = log.lock().unwrap();
    if log.len() == LOG_LINES {
        log.remove(0);
    }
    log.push(line);
}

/// The namespaces, the children running in them and their homes; tearing it down kills
/// the children and deletes the namespaces, and on a panic first prints what each child
/// logged and each member's status.
struct Lab {
    /// `confer-netns-<pid>-<n>-`: tests run side by side in one process.
    prefix: String,
    namespaces: Vec<String>,
    daemons: Vec<Daemon>,
    members: Vec<Member>,
    dirs: Vec<TempDir>,
}

impl Lab {
    fn new() -> Lab {
        remove_stale_namespaces();
        static LABS: AtomicU32 = AtomicU32::new(0);
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        Lab {
            prefix: format!("{NS_PREFIX}{}-{n}-", std::process::id()),
            namespaces: Vec::new(),
            daemons: Vec::new(),
            members: Vec::new(),
            dirs: Vec::new(),
        }
    }

    fn ns(&self, short: &str) -> String {
        format!("{}{short}", self.prefix)
    }

    fn add_ns(&mut self, short: &str) -> String {
        let ns = self.ns(short);
        must("ip", &["netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        ip(&ns, "link set dev lo up");
        ns
    }

    /// Builds the topology in the module comment. With `internet`, `pub` also forwards
    /// between the organisations' public addresses, as the internet would, and each router
    /// drops unsolicited inbound connections, as a NAT does: members still cannot connect
    /// to each other, except by punching a hole from both sides at once (DCUtR).
    fn build(&mut self, internet: bool) {
        let public = self.add_ns("pub");
        ip(&public, &format!("addr add {RELAY_IP}/32 dev lo"));
        let forward = u8::from(internet);
        in_ns(
            &public,
            &format!("sh -c 'echo {forward} > /proc/sys/net/ipv4/ip_forward'"),
        );
        for (n, org) in [(1, "a"), (2, "b"), (3, "c")] {
            let nat = self.add_ns(&format!("nat{org}"));
            let mem = self.add_ns(&format!("mem{org}"));
            // pub:org{X} 11.18.n.1/30 <-> nat:wan 11.18.n.2/30
            ip(
                &public,
                &format!("link add org{org} type veth peer name wan netns {nat}"),
            );
            ip(&public, &format!("addr add 11.18.{n}.1/30 dev org{org}"));
            ip(&public, &format!("link set dev org{org} up"));
            ip(&nat, &format!("addr add 11.18.{n}.2/30 dev wan"));
            ip(&nat, "link set dev wan up");
            ip(&nat, &format!("route add default via 11.18.{n}.1"));
            // nat:lan 10.n.0.1/24 <-> mem:eth0 10.n.0.2/24
            ip(
                &nat,
                &format!("link add lan type veth peer name eth0 netns {mem}"),
            );
            ip(&nat, &format!("addr add 10.{n}.0.1/24 dev lan"));
            ip(&nat, "link set dev lan up");
            ip(&mem, &format!("addr add 10.{n}.0.2/24 dev eth0"));
            ip(&mem, "link set dev eth0 up");
            ip(&mem, &format!("route add default via 10.{n}.0.1"));
            in_ns(&nat, "sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'");
            in_ns(&nat, "iptables -t nat -A POSTROUTING -o wan -j MASQUERADE");
            if internet {
                in_ns(
                    &nat,
                    "iptables -A INPUT -i wan -p tcp -m conntrack --ctstate NEW -j DROP",
                );
            }
        }
    }

    /// Starts the relay on "the internet"; returns its peer id and address.
    fn relay(&mut self) -> (String, String) {
        let relay_ns = self.ns("pub");
        let relay_home = self.home();
        let listen = format!("/ip4/{RELAY_IP}/tcp/{RELAY_PORT}");
        let ready = self.spawn(
            "relay",
            &relay_ns,
            &relay_home,
            &["relay", "run", "--listen", &listen, "--json"],
        );
        let relay_id = ready["peer_id"].as_str().unwrap().to_owned();
        let relay_addr = strings(&ready["addresses"])
            .into_iter()
            .find(|a| a.starts_with(&format!("{listen}/p2p/")))
            .unwrap_or_else(|| panic!("the relay does not announce {listen}/p2p/…: {ready}"));
        assert_eq!(relay_addr, format!("{listen}/p2p/{relay_id}"));
        (relay_id, relay_addr)
    }

    fn home(&mut self) -> PathBuf {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        self.dirs.push(dir);
        path
    }

    /// A new member with a profile (`init --name NAME EXTRA…`) in namespace `memX`.
    fn member(&mut self, name: &'static str, org: &str, extra: &[&str]) -> Member {
        let ns = self.ns(&format!("mem{org}"));
        self.profile(name, ns, extra)
    }

    /// A new profile (`init --name NAME EXTRA…`) used from namespace `ns`.
    fn profile(&mut self, name: &'static str, ns: String, extra: &[&str]) -> Member {
        let member = Member {
            name,
            ns,
            home: self.home(),
        };
        let mut args = vec!["init", "--name", name];
        args.extend_from_slice(extra);
        let out = member.run(&args);
        assert!(
            out.status.success(),
            "{name}: confer {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        self.members.push(member.clone());
        member
    }

    /// Starts `confer --home HOME ARGS…` in `ns` and returns its readiness line (the first
    /// line on stdout) as JSON.
    fn spawn(&mut self, name: &str, ns: &str, home: &Path, args: &[&str]) -> Value {
        let mut child = confer_in(ns, home)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let out_log = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            for line in lines.map_while(Result::ok) {
                keep(&out_log, format!("(stdout) {line}"));
            }
        });
        let err_log = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                keep(&err_log, line);
            }
        });
        self.daemons.push(Daemon {
            name: name.to_owned(),
            child,
            log,
        });
        let Ok(line) = rx.recv_timeout(PATIENCE) else {
            // Let it finish exiting, so that the report has its status and last words.
            let daemon = self.daemons.last_mut().unwrap();
            for _ in 0..20 {
                if let Ok(Some(_)) = daemon.child.try_wait() {
                    break;
                }
                std::thread::sleep(POLL);
            }
            panic!("{name} printed no readiness line");
        };
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("{name}'s readiness line is not JSON ({e}): {line:?}"))
    }

    /// Starts `confer node run ARGS… --json` for `member`; returns its readiness JSON.
    fn start_node(&mut self, member: &Member, args: &[&str]) -> Value {
        let mut full = vec!["node", "run"];
        full.extend_from_slice(args);
        full.push("--json");
        self.spawn(member.name, &member.ns, &member.home, &full)
    }

    /// Fails if a child has exited.
    fn check_alive(&mut self) {
        for daemon in &mut self.daemons {
            if let Some(status) = daemon.child.try_wait().unwrap() {
                panic!("{} exited unexpectedly ({status})", daemon.name);
            }
        }
    }

    /// Polls `check` every [`POLL`] until it returns `Some`, failing after `limit` or as
    /// soon as a child exits.
    fn wait<T>(&mut self, what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(value) = check() {
                eprintln!("[netns] {what}: {:.1} s", start.elapsed().as_secs_f64());
                return value;
            }
            self.check_alive();
            assert!(
                start.elapsed() < limit,
                "timed out after {limit:?} waiting for {what}"
            );
            std::thread::sleep(POLL);
        }
    }

    /// Prints each member's status and each child's log (called when the test failed).
    fn report(&mut self) {
        eprintln!("\n======== netns test failed: diagnostics ========");
        for member in &self.members {
            let out = Command::new("ip")
                .args([
                    "netns", "exec", &member.ns, "timeout", "10", CONFER, "--home",
                ])
                .arg(&member.home)
                .args(["status", "--json"])
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .output();
            match out {
                Ok(out) => eprintln!(
                    "---- {} status ({}):\n{}{}",
                    member.name,
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
                Err(e) => eprintln!("---- {} status: could not run: {e}", member.name),
            }
        }
        for daemon in &mut self.daemons {
            let state = match daemon.child.try_wait() {
                Ok(Some(status)) => format!("exited, {status}"),
                Ok(None) => "running".to_owned(),
                Err(e) => format!("unknown: {e}"),
            };
            eprintln!("---- {} ({state}), last lines of stderr:", daemon.name);
            for line in daemon.log.lock().unwrap().iter() {
                eprintln!("  {line}");
            }
        }
        eprintln!("======== end of diagnostics ========\n");
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.report();
        }
        for daemon in &mut self.daemons {
            let _ = daemon.child.kill();
            let _ = daemon.child.wait();
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip")
                .args(["netns", "delete", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// The TCP port a node listens on directly (the same on every interface when it listens
/// on 0.0.0.0), from its listen addresses.
fn tcp_port(listen: &[String]) -> u16 {
    listen
        .iter()
        .filter(|a| !a.contains("/p2p-circuit"))
        .find_map(|a| {
            let (_, rest) = a.strip_prefix("/ip4/")?.split_once("/tcp/")?;
            rest.split('/').next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no direct /ip4/…/tcp/… address among {listen:?}"))
}

/// `status --json`'s connections to `peer_id`.
fn connections_to<'a>(status: &'a Value, peer_id: &str) -> Vec<&'a Value> {
    status["connections"]
        .as_array()
        .unwrap_or_else(|| panic!("status has no connections array: {status}"))
        .iter()
        .filter(|c| c["peer_id"] == peer_id)
        .collect()
}

/// The network alone, with plain nodes as listeners: each member reaches the public host
/// and its own network, and nothing else; nothing on the public side reaches a member.
#[test]
#[ignore = "needs root, iproute2 and iptables; run by .ci/run"]
fn the_namespaces_let_members_reach_the_public_host_and_nothing_else() {
    preflight();
    let mut lab = Lab::new();
    lab.build(false);
    let public = lab.ns("pub");
    let host = lab.profile("Host", public.clone(), &[]);
    let listen = format!("/ip4/{RELAY_IP}/tcp/{RELAY_PORT}");
    lab.start_node(&host, &["--listen", &listen]);
    let mut ports = Vec::new();
    for (n, org, name) in [(1, "a", "Ann"), (2, "b", "Ben")] {
        let member = lab.member(name, org, &[]);
        let ready = lab.start_node(&member, &["--listen", "/ip4/0.0.0.0/tcp/0"]);
        let ip = format!("10.{n}.0.2");
        ports.push((member.ns, ip.clone(), tcp_port(&strings(&ready["listen"]))));
    }
    let [(ns_a, ip_a, port_a), (ns_b, ip_b, port_b)] = &ports[..] else {
        unreachable!()
    };
    let ns_c = lab.ns("memc");
    let checks = [
        // Everyone reaches the public host, and their own node.
        (ns_a, RELAY_IP, RELAY_PORT, Reach::Open),
        (ns_b, RELAY_IP, RELAY_PORT, Reach::Open),
        (&ns_c, RELAY_IP, RELAY_PORT, Reach::Open),
        (ns_a, RELAY_IP, 9, Reach::Refused),
        (ns_a, ip_a, *port_a, Reach::Open),
        (ns_b, ip_b, *port_b, Reach::Open),
        // Nobody reaches another organisation, by its inside or its public address.
        (ns_a, ip_b, *port_b, Reach::Nothing),
        (ns_b, ip_a, *port_a, Reach::Nothing),
        (&ns_c, ip_a, *port_a, Reach::Nothing),
        (ns_a, "11.18.2.2", *port_b, Reach::Nothing),
        (ns_b, "11.18.1.2", *port_a, Reach::Nothing),
        // The public host reaches no member.
        (&public, ip_a, *port_a, Reach::Nothing),
        (&public, ip_b, *port_b, Reach::Nothing),
    ];
    // The probes that meet nothing take seconds each: run them side by side.
    std::thread::scope(|scope| {
        let probes: Vec<_> = checks
            .iter()
            .map(|(from, ip, port, _)| scope.spawn(move || tcp_probe(from, ip, *port)))
            .collect();
        for ((from, ip, port, expected), probe) in checks.iter().zip(probes) {
            let got = probe.join().unwrap();
            eprintln!("[netns] from {from} to {ip}:{port}: {got:?}");
            assert_eq!(&got, expected, "from {from} to {ip}:{port}");
        }
    });
}

#[test]
#[ignore = "needs root, iproute2 and iptables; run by .ci/run"]
fn members_behind_separate_nats_talk_through_a_relay_and_catch_up() {
    preflight();
    let started = Instant::now();
    let mut lab = Lab::new();
    lab.build(false);

    // The relay, on "the internet".
    let (relay_id, relay_addr) = lab.relay();

    // Three members in three organisations; Carol never connects directly to anyone.
    let alice = lab.member("Alice", "a", &[]);
    let bob = lab.member("Bob", "b", &[]);
    let carol = lab.member("Carol", "c", &["--relay-only"]);
    let mut peer_ids = BTreeMap::new();
    for member in [&alice, &bob, &carol] {
        // A relay-only node listens only through the relay.
        let mut args = Vec::new();
        if member.name != "Carol" {
            args.extend(["--listen", "/ip4/0.0.0.0/tcp/0"]);
        }
        args.extend(["--relay", relay_addr.as_str()]);
        let ready = lab.start_node(member, &args);
        let listen = strings(&ready["listen"]);
        assert!(
            listen
                .iter()
                .any(|a| a.starts_with(&relay_addr) && a.contains("/p2p-circuit")),
            "{}'s node is not listening through the relay: {listen:?}",
            member.name
        );
        if member.name == "Carol" {
            assert!(
                listen.iter().all(|a| a.contains("/p2p-circuit")),
                "the relay-only node listens directly: {listen:?}"
            );
        }
        peer_ids.insert(member.name, ready["peer_id"].as_str().unwrap().to_owned());
        if member.name == "Bob" {
            // The network is what it should be: Bob's node is up, reachable from his own
            // network; the relay is reachable from Alice's, and Bob is not.
            let port = tcp_port(&listen);
            assert_eq!(
                tcp_probe(&bob.ns, "10.2.0.2", port),
                Reach::Open,
                "Bob cannot reach his own node"
            );
            assert_eq!(
                tcp_probe(&alice.ns, RELAY_IP, RELAY_PORT),
                Reach::Open,
                "Alice cannot reach the relay"
            );
            assert_eq!(
                tcp_probe(&alice.ns, "10.2.0.2", port),
                Reach::Nothing,
                "Alice has a path to Bob's node: the namespaces leak"
            );
        }
    }
    let carol_id = peer_ids["Carol"].clone();
    eprintln!(
        "[netns] namespaces, relay and three nodes up: {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Alice forms the room; Bob and Carol join through the relay.
    let room = alice.json(&["room", "create", ROOM]);
    let room_id = room["room_id"].as_str().unwrap().to_owned();
    for member in [&bob, &carol] {
        let invite = alice.json(&["invite", ROOM, "--expires", "1h"]);
        let code = invite["code"].as_str().unwrap();
        let joined = member.json(&["join", code, "--as", member.name]);
        assert_eq!(joined["room_id"], room_id.as_str(), "{}", member.name);
    }
    eprintln!(
        "[netns] Bob and Carol joined: {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Everybody says one thing and everybody reads everything.
    let mut expected = BTreeMap::new();
    for member in [&alice, &bob, &carol] {
        let text = format!("{} checking in from their own network", member.name);
        expected.insert(member.send(&text), (member.name.to_owned(), text));
    }
    for member in [&alice, &bob, &carol] {
        lab.wait(
            &format!("{} to read all three first messages", member.name),
            PATIENCE,
            || {
                let history = member.history();
                expected
                    .iter()
                    .all(|(id, m)| history.get(id) == Some(m))
                    .then_some(())
            },
        );
    }

    // Carol's network goes away; Alice and Bob talk on.
    let nat_c = lab.ns("natc");
    ip(&nat_c, "link set dev lan down");
    let cut_at = Instant::now();
    let mut while_away = BTreeMap::new();
    for i in 1..=10 {
        for member in [&alice, &bob] {
            let text = format!("{} while Carol is away, {i} of 10", member.name);
            while_away.insert(member.send(&text), (member.name.to_owned(), text));
        }
    }
    for member in [&alice, &bob] {
        lab.wait(
            &format!(
                "{} to read all 20 messages sent while Carol is away",
                member.name
            ),
            PATIENCE,
            || {
                let history = member.history();
                while_away
                    .iter()
                    .all(|(id, m)| history.get(id) == Some(m))
                    .then_some(())
            },
        );
    }
    // The cut is real only once it is noticed: nobody holds a connection to Carol any more
    // and she holds none (not even to the relay). Until then what Alice and Bob sent may
    // still be sitting in TCP retransmission queues, and would reach her without any
    // catching up.
    let mut last = None;
    lab.wait(
        "everyone to notice that Carol's network is gone (no connections to or from her)",
        NOTICE,
        || {
            let alice_sees = connections_to(&alice.json(&["status"]), &carol_id).len();
            let bob_sees = connections_to(&bob.json(&["status"]), &carol_id).len();
            let status = carol.json(&["status"]);
            let carol_has = status["connections"]
                .as_array()
                .unwrap_or_else(|| panic!("status has no connections array: {status}"))
                .len();
            let now = (alice_sees, bob_sees, carol_has);
            if last != Some(now) {
                eprintln!(
                    "[netns] {:.1} s after the cut: Alice has {alice_sees} connection(s) to \
                     Carol, Bob {bob_sees}, Carol {carol_has} in all",
                    cut_at.elapsed().as_secs_f64()
                );
                last = Some(now);
            }
            (now == (0, 0, 0)).then_some(())
        },
    );
    let carol_had = carol.history();
    assert!(
        while_away.keys().all(|id| !carol_had.contains_key(id)),
        "Carol received messages while her network was down: the cut does not cut"
    );

    // Her network comes back: she catches up on exactly what Alice has.
    ip(&nat_c, "link set dev lan up");
    let alice_history = alice.history();
    assert_eq!(alice_history.len(), expected.len() + while_away.len());
    lab.wait(
        "Carol to catch up on everything once her network is back",
        CATCH_UP,
        || (carol.history() == alice_history).then_some(()),
    );
    // And she can speak again.
    let text = "Carol: back, and caught up";
    let id = carol.send(text);
    for member in [&alice, &bob] {
        lab.wait(
            &format!("{} to read Carol's message after her return", member.name),
            PATIENCE,
            || {
                (member.history().get(&id) == Some(&("Carol".to_owned(), text.to_owned())))
                    .then_some(())
            },
        );
    }

    // Privacy: nobody holds a direct connection to Carol, and she holds none to anyone
    // but the relay; no connection to her shows her networks' addresses.
    for member in [&alice, &bob] {
        // AutoNAT: the relay dialled back the address it saw them at, and the NAT said no.
        lab.wait(
            &format!("AutoNAT to find {} behind NAT", member.name),
            PATIENCE,
            || (member.json(&["status"])["nat"] == "private").then_some(()),
        );
        let status = member.json(&["status"]);
        assert_eq!(status["relay_only"], false, "{}: {status}", member.name);
        let to_carol = connections_to(&status, &carol_id);
        for c in &to_carol {
            assert_eq!(
                c["relayed"], true,
                "{} is directly connected to relay-only Carol: {status}",
                member.name
            );
            let address = c["address"].as_str().unwrap_or("");
            assert!(
                !address.contains("/10.3.") && !address.contains("/11.18.3."),
                "{} sees Carol's network address {address}",
                member.name
            );
        }
    }
    let status = carol.json(&["status"]);
    assert_eq!(status["relay_only"], true, "Carol: {status}");
    assert!(
        status["relays"]
            .as_array()
            .unwrap_or_else(|| panic!("status has no relays array: {status}"))
            .iter()
            .any(|r| r["reserved"] == true),
        "Carol holds no reservation on the relay after her return: {status}"
    );
    let mut to_members = 0;
    for c in status["connections"].as_array().unwrap() {
        if c["peer_id"] != relay_id.as_str() {
            assert_eq!(
                c["relayed"], true,
                "relay-only Carol is directly connected to a member: {status}"
            );
            to_members += 1;
        }
    }
    assert!(
        to_members > 0,
        "Carol is connected to no member, yet her message got out: {status}"
    );
    eprintln!("[netns] done in {:.1} s", started.elapsed().as_secs_f64());
}

/// Hole punching: with "the internet" forwarding between the organisations' public
/// addresses, but each NAT dropping unsolicited inbound connections, Alice and Bob cannot
/// connect to each other directly; they meet through the relay, and DCUtR then punches a
/// hole from both sides at once, leaving them with a direct connection.
#[test]
#[ignore = "needs root, iproute2 and iptables; run by .ci/run"]
fn members_behind_nat_punch_a_hole_to_a_direct_connection() {
    preflight();
    let started = Instant::now();
    let mut lab = Lab::new();
    lab.build(true);
    let (_, relay_addr) = lab.relay();
    let alice = lab.member("Alice", "a", &[]);
    let bob = lab.member("Bob", "b", &[]);
    let mut ports = BTreeMap::new();
    let mut peer_ids = BTreeMap::new();
    for member in [&alice, &bob] {
        let ready = lab.start_node(
            member,
            &["--listen", "/ip4/0.0.0.0/tcp/0", "--relay", &relay_addr],
        );
        ports.insert(member.name, tcp_port(&strings(&ready["listen"])));
        peer_ids.insert(member.name, ready["peer_id"].as_str().unwrap().to_owned());
    }
    // Unsolicited connections into the other organisation go nowhere, by its private or
    // its public address.
    for (from, to, private, public) in [
        (&alice, "Bob", "10.2.0.2", "11.18.2.2"),
        (&bob, "Alice", "10.1.0.2", "11.18.1.2"),
    ] {
        for ip in [private, public] {
            assert_eq!(
                tcp_probe(&from.ns, ip, ports[to]),
                Reach::Nothing,
                "{} can reach {to}'s node at {ip} unasked",
                from.name
            );
        }
    }

    let room = alice.json(&["room", "create", ROOM]);
    let invite = alice.json(&["invite", ROOM, "--expires", "1h"]);
    let joined = bob.json(&["join", invite["code"].as_str().unwrap(), "--as", "Bob"]);
    assert_eq!(joined["room_id"], room["room_id"]);
    let text = "Bob, from behind his organisation's NAT";
    let id = bob.send(text);
    lab.wait("Alice to read Bob's message", PATIENCE, || {
        (alice.history().get(&id) == Some(&("Bob".to_owned(), text.to_owned()))).then_some(())
    });

    let bob_id = peer_ids["Bob"].clone();
    let direct = lab.wait(
        "a direct connection between Alice and Bob (DCUtR)",
        PATIENCE,
        || {
            let status = alice.json(&["status"]);
            connections_to(&status, &bob_id)
                .into_iter()
                .find(|c| c["relayed"] == false)
                .map(|c| c["address"].as_str().unwrap_or("").to_owned())
        },
    );
    assert!(
        direct.contains("/11.18.2.2/"),
        "the direct connection should reach Bob through his NAT's public address: {direct}"
    );
    eprintln!(
        "[netns] hole punched ({direct}) after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // And the room works over it.
    let text = "Alice, directly";
    let id = alice.send(text);
    lab.wait("Bob to read Alice's message", PATIENCE, || {
        (bob.history().get(&id) == Some(&("Alice".to_owned(), text.to_owned()))).then_some(())
    });
}
