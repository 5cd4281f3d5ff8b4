//! What every benchmark measures and writes the same way: the machine's description,
//! resident memory and CPU time of a process (from `/proc`; zero or None off Linux),
//! and the results file, one replaceable section per benchmark.

use std::path::Path;
use std::time::Duration;

/// CPU time (user + system) a process has used so far, from `/proc/{pid}/stat`;
/// None off Linux. The kernel reports it in USER_HZ ticks, 100 per second.
pub fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it are plain.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// A memory field of `/proc/{pid}/status` (`pid` may be `self`), KiB; None off Linux.
fn status_kib(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
}

/// Peak resident memory (VmHWM) of a process, MB; None off Linux.
pub fn peak_rss_mb(pid: &str) -> Option<u64> {
    Some(status_kib(pid, "VmHWM:")? / 1024)
}

/// `VmRSS` and `VmHWM` of this process, KiB (0 off Linux).
pub fn memory_kib() -> (u64, u64) {
    (status_kib("self", "VmRSS:").unwrap_or(0), status_kib("self", "VmHWM:").unwrap_or(0))
}

/// Replaces the section between `<!-- bench:{name}:start -->` and
/// `<!-- bench:{name}:end -->` of the results file with `section` (which carries both
/// markers), appending it if absent and creating the file if needed.
pub fn replace_section(path: &Path, name: &str, section: &str) -> anyhow::Result<()> {
    let (start_marker, end_marker) = (format!("<!-- bench:{name}:start -->"), format!("<!-- bench:{name}:end -->"));
    let existing = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmark results\n\nWritten by `make bench`; each section is replaced by its benchmark.\n".to_owned());
    let updated = match (existing.find(&start_marker), existing.find(&end_marker)) {
        (Some(start), Some(end)) if start < end => format!("{}{}{}", &existing[..start], section, &existing[end + end_marker.len()..]),
        _ => format!("{}\n\n{}\n", existing.trim_end(), section),
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, updated)?;
    Ok(())
}

/// CPU model, cores and memory of this machine, for the results file.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map_or("unknown CPU", str::trim).to_owned();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_gib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    format!("{model}, {cores} cores, {memory_gib:.0} GiB RAM, dev profile (dependencies at opt-level 3, Converge crates at opt-level 2)")
}

/// Runs this binary as a child with `args` (its peak memory is then its own) and reads
/// the JSON object it printed last; `what` names it in errors.
pub async fn child_json(args: &[&str], data_dir: &Path, what: &str) -> anyhow::Result<serde_json::Value> {
    child_json_env(args, data_dir, what, &[]).await
}

/// [`child_json`] with environment variables `env` set for the child.
pub async fn child_json_env(args: &[&str], data_dir: &Path, what: &str, env: &[(&str, &str)]) -> anyhow::Result<serde_json::Value> {
    use anyhow::Context;
    let me = std::env::current_exe()?;
    let output = tokio::process::Command::new(me)
        .envs(env.iter().copied())
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env(converge_function::env::LOG, "warn")
        .env_remove(converge_function::env::CONFIG)
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .with_context(|| format!("starting `{what}` in a child process"))?;
    if !output.status.success() {
        anyhow::bail!("`{what}` failed: {}", output.status);
    }
    let text = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(text.lines().last().unwrap_or_default()).with_context(|| format!("`{what}` printed {text}"))
}

/// Runs `one_size` for each size in a fresh data directory under the system's temporary
/// one (`converge-bench-<name>-<n>-<uuid>`), removed afterwards unless `keep`.
pub async fn each_size<T, F, Fut>(records: &[u64], keep: bool, name: &str, one_size: F) -> anyhow::Result<Vec<T>>
where
    F: Fn(u64, std::path::PathBuf) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut sizes = Vec::new();
    for &n in records {
        let data_dir = std::env::temp_dir().join(format!("converge-bench-{name}-{n}-{}", uuid::Uuid::new_v4()));
        let result = one_size(n, data_dir.clone()).await;
        if keep {
            eprintln!("kept {}", data_dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&data_dir);
        }
        sizes.push(result?);
    }
    Ok(sizes)
}
