//! What the benchmark reads from `/proc`: this process's CPU time and memory, and how busy
//! the whole machine was, so a figure taken while other programs ran can say so.

use std::process::Command;
use std::time::Instant;

/// Clock ticks per second for `/proc` times (`getconf CLK_TCK`; 100 on Linux).
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// utime + stime of this process (all its threads, living and exited), in clock ticks.
pub fn cpu_ticks() -> Result<u64, String> {
    let stat =
        std::fs::read_to_string("/proc/self/stat").map_err(|e| format!("/proc/self/stat: {e}"))?;
    // Fields after the command name (which may contain spaces) start at field 3 (state);
    // utime and stime are fields 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or("/proc/self/stat: no command name")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Result<u64, String> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| format!("/proc/self/stat: field {n}"))
    };
    Ok(field(14)? + field(15)?)
}

/// A `kB` line of `/proc/self/status` (e.g. `VmRSS:`), in bytes.
pub fn status_bytes(key: &str) -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("/proc/self/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| format!("/proc/self/status: no {key}"))
}

/// Busy clock ticks of the whole machine, all cores (`/proc/stat`, first line).
fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    Some(get(0) + get(1) + get(2) + get(5) + get(6) + get(7))
}

/// How much CPU this process and everything else on the machine used over an interval.
#[derive(Debug, Clone, Copy)]
pub struct CpuWatch {
    at: Instant,
    machine: Option<u64>,
    own: u64,
    ticks: f64,
}

/// What a [`CpuWatch`] saw, in cores (1.0 = one core fully busy).
#[derive(Debug, Clone, Copy)]
pub struct CpuUse {
    /// This process.
    pub own: f64,
    /// Everything else on the machine (other programs, the kernel's own work).
    pub others: f64,
    /// Over how long, seconds.
    pub wall: f64,
}

impl CpuUse {
    /// The time-weighted mean of several intervals.
    pub fn mean(all: &[CpuUse]) -> CpuUse {
        let wall: f64 = all.iter().map(|c| c.wall).sum();
        let w = wall.max(1e-9);
        CpuUse {
            own: all.iter().map(|c| c.own * c.wall).sum::<f64>() / w,
            others: all.iter().map(|c| c.others * c.wall).sum::<f64>() / w,
            wall,
        }
    }
}

impl CpuWatch {
    /// Starts watching.
    pub fn start(ticks: f64) -> CpuWatch {
        CpuWatch {
            at: Instant::now(),
            machine: machine_busy_ticks(),
            own: cpu_ticks().unwrap_or(0),
            ticks,
        }
    }

    /// CPU used since [`CpuWatch::start`].
    pub fn stop(&self) -> CpuUse {
        let wall = self.at.elapsed().as_secs_f64().max(1e-9);
        let own = cpu_ticks().unwrap_or(0).saturating_sub(self.own) as f64 / self.ticks / wall;
        let others = match (self.machine, machine_busy_ticks()) {
            (Some(a), Some(b)) => (b.saturating_sub(a) as f64 / self.ticks / wall - own).max(0.0),
            _ => f64::NAN,
        };
        CpuUse { own, others, wall }
    }
}

impl std::fmt::Display for CpuUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CPU: bench {:.2} cores, other processes {:.2} cores",
            self.own, self.others
        )
    }
}
