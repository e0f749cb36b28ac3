//! Helpers of the load benchmarks: running `wrk` against a server and reading its report, and
//! this process's CPU time.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What `wrk` reports for one run.
#[derive(Debug, Clone, Copy)]
pub struct WrkReport {
    /// Requests answered per second.
    pub requests_per_second: f64,
    /// Requests answered in all.
    pub requests: u64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
}

/// Checks that `wrk` is installed.
pub fn check_wrk() -> anyhow::Result<()> {
    if Command::new("wrk").arg("--version").output().is_err() {
        anyhow::bail!("wrk is not installed: `apt-get install wrk` (Debian) or see https://github.com/wg/wrk");
    }
    Ok(())
}

/// `wrk -t1 -c{connections} -d{seconds}s` posting the file `body` to `url` (a Lua script for it is
/// written into `dir`): as `application/x-protobuf` if its name ends in `.pb`, else as JSON. Fails
/// when any answer was not a 2xx.
pub fn wrk(dir: &Path, body: &Path, url: &str, connections: u32, seconds: u64) -> anyhow::Result<WrkReport> {
    let name = body.file_name().and_then(|s| s.to_str()).unwrap_or("body").replace('.', "-");
    let script = dir.join(format!("post-{name}.lua"));
    let media = if body.extension().is_some_and(|e| e == "pb") { "application/x-protobuf" } else { "application/json" };
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.headers[\"content-type\"] = \"{media}\"\n\
             local f = io.open(\"{}\", \"rb\")\nwrk.body = f:read(\"*all\")\nf:close()\n",
            body.display()
        ),
    )?;
    let output = Command::new("wrk")
        .args(["-t1", &format!("-c{connections}"), &format!("-d{seconds}s"), "--latency", "-s"])
        .arg(&script)
        .arg(url)
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    anyhow::ensure!(!text.contains("Non-2xx"), "wrk saw error answers:\n{text}");
    let field = |prefix: &str| -> Option<String> {
        text.lines().map(str::trim).find(|l| l.starts_with(prefix)).map(|l| l[prefix.len()..].trim().to_owned())
    };
    let requests_per_second: f64 =
        field("Requests/sec:").ok_or_else(|| anyhow::anyhow!("no rate in:\n{text}"))?.parse()?;
    // "  12345 requests in 10.00s, 1.23MB read"
    let requests = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Ok(WrkReport {
        requests_per_second,
        requests,
        p50_ms: latency_ms(&field("50%").unwrap_or_default()),
        p99_ms: latency_ms(&field("99%").unwrap_or_default()),
    })
}

/// `1.23ms`, `812.00us`, `1.02s` → milliseconds.
pub fn latency_ms(text: &str) -> f64 {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(text.len()));
    let value: f64 = number.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => value / 1000.0,
        "ms" => value,
        "s" => value * 1000.0,
        _ => f64::NAN,
    }
}

/// CPU time (user + system) this process has used so far, in seconds, from `/proc/self/stat`.
pub fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may contain spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// A temporary directory with a `bundled/` directory holding the named bundled policies (built
/// first if need be), as `relish serve` reads them; returns both.
pub fn bundled(policies: &[&str]) -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
    let built = crate::policies();
    let dir = tempfile::tempdir()?;
    let bundled = dir.path().join("bundled");
    std::fs::create_dir_all(&bundled)?;
    for name in policies {
        std::fs::copy(&built[*name].component, bundled.join(format!("{name}.wasm")))?;
    }
    Ok((dir, bundled))
}
