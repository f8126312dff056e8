//! Measuring a child process from `/proc`: wall time, CPU time and peak RSS. The benches that
//! compare `ferry run` with another program (a hand-written client, `jq`) run each in a process
//! of its own and measure both the same way.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What one child process used.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// Wall time from spawn to exit.
    pub secs: f64,
    /// User and system CPU time of the child.
    pub cpu_secs: f64,
    /// Peak resident memory (`VmHWM`).
    pub max_rss_kib: u64,
    /// Exit status 0.
    pub ok: bool,
}

/// Runs `cmd` to its end and measures the child alone, from `/proc/<pid>`: peak RSS (`VmHWM`,
/// sampled every 10 ms while it runs) and CPU time (`utime + stime`, read once it has exited
/// and before it is reaped, so nothing of it is missed).
/// The child's standard output is captured and returned.
pub fn measure(mut cmd: Command) -> (Usage, Vec<u8>) {
    cmd.stdout(Stdio::piped());
    measure_as_set(cmd)
}

/// [`measure`] with the child's standard output as `cmd` sets it (a file, `/dev/null`):
/// nothing is captured.
pub fn measure_to(mut cmd: Command, stdout: Stdio) -> Usage {
    cmd.stdout(stdout);
    measure_as_set(cmd).0
}

fn measure_as_set(mut cmd: Command) -> (Usage, Vec<u8>) {
    let started = Instant::now();
    let mut child = cmd.stderr(Stdio::inherit()).spawn().expect("spawn client");
    let reader = child.stdout.take().map(|mut stdout| {
        std::thread::spawn(move || {
            use std::io::Read;
            let mut out = Vec::new();
            let _ = stdout.read_to_end(&mut out);
            out
        })
    });
    let proc_dir = PathBuf::from(format!("/proc/{}", child.id()));
    let ticks = clock_ticks();
    let mut max_rss_kib = 0;
    let mut cpu_secs = 0.0;
    let mut secs = 0.0;
    while let Ok(stat) = std::fs::read_to_string(proc_dir.join("stat")) {
        // Fields after the command name (which may hold spaces) start at ") ".
        let fields: Vec<&str> = stat
            .rsplit_once(") ")
            .map_or(Vec::new(), |(_, rest)| rest.split(' ').collect());
        let (state, utime, stime) = (
            fields.first().copied().unwrap_or("?"),
            fields
                .get(11)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0),
            fields
                .get(12)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0),
        );
        cpu_secs = (utime + stime) / ticks;
        if state == "Z" || state == "X" {
            secs = started.elapsed().as_secs_f64();
            break;
        }
        if let Ok(status) = std::fs::read_to_string(proc_dir.join("status"))
            && let Some(kib) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            max_rss_kib = max_rss_kib.max(kib);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = child.wait().expect("wait");
    if secs == 0.0 {
        secs = started.elapsed().as_secs_f64();
    }
    let out = reader
        .map(|r| r.join().unwrap_or_default())
        .unwrap_or_default();
    (
        Usage {
            secs,
            cpu_secs,
            max_rss_kib,
            ok: status.success(),
        },
        out,
    )
}

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ, 100 on every Linux we know).
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}
