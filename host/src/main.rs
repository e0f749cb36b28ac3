//! `relish`: build, inspect, run and serve personalisation policies.

mod admin_cli;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use relish_host::builder::{self, BuildOptions};
use relish_host::server::{
    self,
    config::{Config, LogFormat},
};

// With tokio's worker threads all allocating, glibc's malloc loses 2-3x throughput to arena lock
// contention (measured on this service's request path); mimalloc keeps per-thread heaps.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use relish_host::metrics::Metrics;
use relish_host::runtime::{Budget, Runtime, RuntimeConfig};
use relish_host::serving::Binding;
use relish_host::wire::{self, DecodeOptions};

#[derive(Parser)]
#[command(name = "relish", version, about = "Run personalisation policies as WebAssembly components")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the ranking API (and the admin API on its own address).
    ///
    /// Without `--config` it serves the bundled policies (built into this binary) on the standard
    /// surfaces, and (run from the repository) `discovery` fills what ids-only requests leave out
    /// from `tests/fixtures/features.jsonl`. `RELISH_LISTEN`, `RELISH_ADMIN_LISTEN`, `RELISH_DATA_DIR`, `RELISH_LOG_FORMAT`,
    /// `RELISH_FLEET_NATS` and `RELISH_ADMIN_TOKEN` override the file.
    Serve {
        /// A TOML configuration file.
        #[arg(long, env = "RELISH_CONFIG")]
        config: Option<PathBuf>,
        /// Check the configuration and exit.
        #[arg(long)]
        check: bool,
    },
    /// Start a policy crate: `NAME/` with the policy, a native test, a request of the surface, and
    /// the guest SDK this binary was built with (so it builds with nothing but Rust).
    New {
        /// The policy's name (a-z, 0-9, `-`, `_`); the crate is `relish-policy-NAME`.
        name: String,
        /// The standard surface it ranks (its request goes to `requests/SURFACE.json`).
        #[arg(long)]
        surface: String,
        /// Where to create `NAME/` (default: the current directory).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Manage stored policy versions through the admin API.
    Policy {
        #[command(flatten)]
        connection: admin_cli::Connection,
        #[command(subcommand)]
        command: admin_cli::PolicyCommand,
    },
    /// Activate, roll back and inspect surfaces through the admin API.
    Surface {
        #[command(flatten)]
        connection: admin_cli::Connection,
        #[command(subcommand)]
        command: admin_cli::SurfaceCommand,
    },
    /// The fleet's hosts, through the admin API of any of them.
    Fleet {
        #[command(flatten)]
        connection: admin_cli::Connection,
        #[command(subcommand)]
        command: admin_cli::FleetCommand,
    },
    /// Fill a feature store from a file.
    Features {
        #[command(subcommand)]
        command: FeaturesCommand,
    },
    /// Build policy crates into components (`<target>/policies/<name>.wasm`).
    Build {
        /// The workspace or crate to build (default: the current directory's workspace).
        #[arg(long)]
        manifest_path: Option<PathBuf>,
        /// Build only these packages (default: every cdylib that depends on relish-guest).
        #[arg(short, long = "package")]
        packages: Vec<String>,
        /// Where to put the components (default: `<target dir>/policies`).
        #[arg(long)]
        out_dir: Option<PathBuf>,
        /// Skip loading each component into a runtime to check it.
        #[arg(long)]
        no_verify: bool,
    },
    /// Print a component's metadata, imports and exports.
    Inspect {
        /// The component.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run logged decisions again: with the logged versions (every answer must come out the
    /// same), or with a candidate (how far its answers agree with the logged ones, and with
    /// --rewards what its answers would have earned).
    #[command(group(clap::ArgGroup::new("candidate").args(["policy", "version"])))]
    Replay {
        /// Decision log files (`decisions-*.jsonl.zst`, or `.jsonl.gz` of older hosts).
        #[arg(required = true)]
        logs: Vec<PathBuf>,
        /// The data directory holding the logged versions (read only; a running host's is fine).
        #[arg(long, env = "RELISH_DATA_DIR", default_value = "relish-data")]
        data_dir: PathBuf,
        /// A candidate component to replay with instead of the logged versions.
        #[arg(long, conflicts_with = "version")]
        policy: Option<PathBuf>,
        /// A candidate version stored in the data directory, `name@version`.
        #[arg(long)]
        version: Option<String>,
        /// A parameter set on every replayed request, `key=value`; repeatable.
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// Threads (default: every core).
        #[arg(long)]
        jobs: Option<usize>,
        /// Each call's deadline in milliseconds.
        #[arg(long, default_value_t = 10_000)]
        deadline_ms: u64,
        /// Rewards the logged answers earned (`decision_id,item_id,reward` CSV, or JSON lines):
        /// off-policy estimates (IPS, self-normalised IPS, doubly robust) of the candidate's.
        #[arg(long, requires = "candidate")]
        rewards: Option<PathBuf>,
        /// With --rewards: the positions from the top the estimates cover (default: all).
        #[arg(long, requires = "rewards")]
        positions: Option<usize>,
        /// With --rewards: answers per decision that estimate a randomising candidate's
        /// probabilities (seeds derived from the logged one).
        #[arg(long, default_value_t = 100, requires = "rewards")]
        draws: usize,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rank one JSON request with one component and print the response.
    Rank {
        /// The policy component.
        #[arg(long)]
        policy: PathBuf,
        /// The request (row or columnar shape); `-` reads standard input.
        #[arg(long)]
        request: PathBuf,
        /// The surface, when the request does not name one (default: the policy's first surface).
        #[arg(long)]
        surface: Option<String>,
        /// A policy parameter, `key=value`; repeatable.
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// The call's deadline in milliseconds.
        #[arg(long, default_value_t = 100)]
        deadline_ms: u64,
        /// Print compact JSON.
        #[arg(long)]
        compact: bool,
    },
}

#[derive(Subcommand)]
enum FeaturesCommand {
    /// Load entities from a JSONL or CSV file into Redis: batched and pipelined, idempotent (each
    /// entity's hash is replaced whole), with progress on a terminal. See docs/operations.md,
    /// "Features", for the format and key layout.
    Load {
        /// The file: `.jsonl`/`.ndjson` (`{"entity", "id", "features", "tags"}` per line) or
        /// `.csv` (header `entity,id,<feature>...,tags`).
        file: PathBuf,
        /// The Redis URL.
        #[arg(long, env = "RELISH_FEATURE_STORE", default_value = "redis://127.0.0.1:6379/0")]
        store: String,
        /// The key prefix: keys are `{prefix}:{entity}:{id}`.
        #[arg(long, default_value = relish_host::features::config::DEFAULT_PREFIX)]
        prefix: String,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a log file or a collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).init(),
    }
}

/// What `relish --version` says: the release, and what it serves and reads.
fn version() -> String {
    let contracts: Vec<&str> = relish_host::runtime::Contract::ALL.iter().map(|c| c.name()).collect();
    let formats: Vec<String> = relish_host::decisions::record::FORMATS.iter().map(u32::to_string).collect();
    format!(
        "{}\ncontracts: {} (policies built against any of them load)\ndecision log formats: {} (writes {})",
        env!("CARGO_PKG_VERSION"),
        contracts.join(", "),
        formats.join(", "),
        relish_host::decisions::record::FORMAT,
    )
}

fn main() -> ExitCode {
    let version: &'static str = Box::leak(version().into_boxed_str());
    let matches = Cli::command().version(version).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    if !matches!(cli.command, Command::Serve { .. }) {
        init_logging(LogFormat::Human);
    }
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config, check } => serve(config, check),
        Command::Features { command: FeaturesCommand::Load { file, store, prefix } } => {
            load_features(&file, &store, &prefix)
        }
        Command::Policy { connection, command } => admin_cli::policy(&connection, command).map(|()| ExitCode::SUCCESS),
        Command::Fleet { connection, command } => admin_cli::fleet(&connection, command).map(|()| ExitCode::SUCCESS),
        Command::Surface { connection, command } => {
            admin_cli::surface(&connection, command).map(|()| ExitCode::SUCCESS)
        }
        Command::Build { manifest_path, packages, out_dir, no_verify } => {
            build(BuildOptions { manifest_path, packages, out_dir, target: None, quiet: false }, !no_verify)
        }
        Command::Inspect { file, json } => inspect(&file, json),
        Command::New { name, surface, dir } => {
            let made = relish_host::scaffold::new_policy(&dir, &name, &surface)?;
            println!("created {} (policy `{name}` for `{surface}`); next:", made.display());
            println!("  cd {}", made.display());
            println!("  cargo test");
            println!("  relish build");
            println!("  relish rank --policy target/policies/{name}.wasm --request requests/{surface}.json");
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay {
            logs,
            data_dir,
            policy,
            version,
            params,
            jobs,
            deadline_ms,
            rewards,
            positions,
            draws,
            json,
        } => {
            let evaluation = Evaluation { rewards, positions, draws };
            replay(logs, data_dir, policy, version, &params, jobs, Duration::from_millis(deadline_ms), evaluation, json)
        }
        Command::Rank { policy, request, surface, params, deadline_ms, compact } => {
            rank(&policy, &request, surface, &params, Duration::from_millis(deadline_ms), compact)
        }
    }
}

/// `relish replay`'s off-policy evaluation flags.
struct Evaluation {
    rewards: Option<PathBuf>,
    positions: Option<usize>,
    draws: usize,
}

#[expect(clippy::too_many_arguments, reason = "one CLI command's flags, spelled out")]
fn replay(
    logs: Vec<PathBuf>,
    data_dir: PathBuf,
    policy: Option<PathBuf>,
    version: Option<String>,
    params: &[String],
    jobs: Option<usize>,
    deadline: Duration,
    evaluation: Evaluation,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use relish_host::decisions::ope::Rewards;
    use relish_host::decisions::replay::{Candidate, ReplayOptions, replay};
    use std::io::IsTerminal as _;
    let candidate = match (&policy, &version) {
        (Some(path), _) => {
            Some(Candidate::Component(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?))
        }
        (None, Some(reference)) => {
            let (policy, version) =
                reference.split_once('@').with_context(|| format!("--version {reference}: use name@version"))?;
            Some(Candidate::Stored { policy: policy.to_owned(), version: version.to_owned() })
        }
        (None, None) => None,
    };
    let candidate_mode = candidate.is_some();
    let mut pairs = Vec::new();
    for param in params {
        let (key, value) = param.split_once('=').with_context(|| format!("--param {param}: use key=value"))?;
        pairs.push((key.to_owned(), value.to_owned()));
    }
    let terminal = std::io::stderr().is_terminal();
    let last = std::sync::Mutex::new(Instant::now());
    let progress = move |done: usize, total: usize| {
        let mut last = last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if done == total || last.elapsed() >= Duration::from_millis(200) {
            *last = Instant::now();
            eprint!("\rreplayed {done} of {total} decisions");
            if done == total {
                eprintln!();
            }
        }
    };
    let options = ReplayOptions {
        data_dir,
        candidate,
        params: pairs,
        jobs: jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from)),
        deadline,
        progress: terminal.then(|| Box::new(progress) as Box<dyn Fn(usize, usize) + Sync>),
        rewards: evaluation.rewards.as_deref().map(Rewards::read).transpose()?,
        positions: evaluation.positions,
        draws: evaluation.draws,
    };
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let report = replay(&runtime, &logs, &options)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for file in &report.files {
            for bad in &file.bad {
                eprintln!("skipped: {bad}");
            }
            if file.torn {
                eprintln!("{}: its last record is torn (a host killed while writing): skipped", file.file.display());
            }
        }
        for skipped in &report.skipped {
            eprintln!("not replayed: {}: {}", skipped.id, skipped.reason);
        }
        let replayed = report.decisions - report.skipped.len();
        if !candidate_mode {
            let share = if replayed == 0 { 100.0 } else { 100.0 * report.reproduced as f64 / replayed as f64 };
            println!(
                "{} decisions from {} files, {replayed} replayed with the logged versions: {} reproduced byte for byte ({share:.1} %)",
                report.decisions,
                report.files.len(),
                report.reproduced
            );
            for difference in &report.differing {
                println!("  differs: {} ({}): {}", difference.id, difference.surface, difference.what);
            }
        } else {
            println!(
                "{:<18} {:<28} {:>9} {:>7} {:>8} {:>7} {:>7}",
                "SURFACE", "LOGGED ARM", "DECISIONS", "TOP-1", "OVERLAP", "RBO", "TAU"
            );
            for g in &report.agreement {
                println!(
                    "{:<18} {:<28} {:>9} {:>7.3} {:>8.3} {:>7.3} {:>7.3}",
                    g.surface, g.arm, g.decisions, g.top1, g.overlap, g.rbo, g.tau
                );
            }
            if !report.most_different.is_empty() {
                println!("where the candidate differs most:");
                for d in &report.most_different {
                    println!("  {} ({}): overlap {:.3}, tau {:.3}", d.id, d.surface, d.overlap, d.tau);
                }
            }
            for difference in &report.differing {
                println!("  failed: {} ({}): {}", difference.id, difference.surface, difference.what);
            }
            print_evaluation(&report);
        }
    }
    let failed = report.files.iter().any(|f| !f.bad.is_empty()) || !report.differing.is_empty();
    Ok(if !candidate_mode && failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// The off-policy estimates of a candidate replay with `--rewards`, as text.
fn print_evaluation(report: &relish_host::decisions::replay::ReplayReport) {
    let Some(rewards) = &report.rewards else { return };
    for line in rewards.bad.iter().chain(&rewards.unknown_decisions).chain(&rewards.unknown_items) {
        eprintln!("reward skipped: {line}");
    }
    println!("off-policy estimates of the candidate's reward per decision (95 % bootstrap intervals):");
    let interval = |e: &relish_host::decisions::ope::Estimate| format!("{:.4} [{:.4}, {:.4}]", e.value, e.low, e.high);
    for evaluation in &report.evaluation {
        println!(
            "  {} ({} decisions, {} positions, {} rewards): logged policy observed {}",
            evaluation.surface,
            evaluation.decisions,
            evaluation.positions,
            evaluation.rewards,
            interval(&evaluation.logged)
        );
        match (&evaluation.refused, &evaluation.ips, &evaluation.snips, &evaluation.dr) {
            (Some(reason), ..) => println!("    no estimate: {reason}"),
            (None, Some(ips), Some(snips), Some(dr)) => {
                println!("    IPS    {}", interval(ips));
                println!("    SNIPS  {}", interval(snips));
                println!("    DR     {}", interval(dr));
                println!("    effective sample size {:.0} (smallest over the positions)", evaluation.ess);
            }
            _ => {}
        }
    }
}

fn build(options: BuildOptions, verify: bool) -> anyhow::Result<ExitCode> {
    let built = builder::build(&options)?;
    let runtime = if verify { Some(Runtime::new(RuntimeConfig::default())?) } else { None };
    for policy in &built {
        let mut line =
            format!("{:<20} {:>8} bytes  {}  {}", policy.name, policy.size, policy.digest, policy.component.display());
        if let Some(runtime) = &runtime {
            let bytes = std::fs::read(&policy.component)?;
            let loaded =
                runtime.load(&bytes).with_context(|| format!("{} does not load", policy.component.display()))?;
            let metadata = loaded.metadata();
            line.push_str(&format!("  ({} {}: {})", metadata.name, metadata.version, metadata.surfaces.join(", ")));
        }
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

fn inspect(file: &PathBuf, json: bool) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let (imports, exports) = runtime.inspect_interfaces(&bytes)?;
    let loaded = runtime.load(&bytes);
    if json {
        let report = serde_json::json!({
            "file": file,
            "size": bytes.len(),
            "digest": relish_host::runtime::Digest::of(&bytes),
            "imports": imports,
            "exports": exports,
            "metadata": loaded.as_ref().ok().map(|p| p.metadata()),
            "error": loaded.as_ref().err().map(|e| e.to_string()),
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("file:     {}", file.display());
        println!("size:     {} bytes", bytes.len());
        println!("digest:   {}", relish_host::runtime::Digest::of(&bytes));
        println!("imports:  {}", if imports.is_empty() { "(none)".to_owned() } else { imports.join(", ") });
        println!("exports:  {}", exports.join(", "));
        match &loaded {
            Ok(policy) => {
                let m = policy.metadata();
                println!("policy:   {} {}", m.name, m.version);
                println!("about:    {}", m.description);
                println!("surfaces: {}", m.surfaces.join(", "));
                println!("params:");
                for p in &m.params {
                    println!("  {:<24} default {:<10} {}", p.name, p.default, p.description);
                }
                println!("features:");
                for f in &m.features {
                    println!("  {:<24} {:<10} {}", f.name, f.scope, f.description);
                }
            }
            Err(error) => println!("rejected: {error}"),
        }
    }
    Ok(if loaded.is_ok() { ExitCode::SUCCESS } else { ExitCode::from(2) })
}

fn rank(
    policy: &PathBuf,
    request: &PathBuf,
    surface: Option<String>,
    params: &[String],
    deadline: Duration,
    compact: bool,
) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(policy).with_context(|| format!("reading {}", policy.display()))?;
    let body = if request.as_os_str() == "-" {
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut body)?;
        body
    } else {
        std::fs::read(request).with_context(|| format!("reading {}", request.display()))?
    };
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let policy = runtime.load(&bytes).with_context(|| format!("loading {}", policy.display()))?;
    let started = Instant::now();
    let now_unix_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
    let options = DecodeOptions { now_unix_ms, ..DecodeOptions::default() };
    let mut decoded = wire::decode(&body, &options).map_err(|e| anyhow::anyhow!("{}: {e}", request.display()))?;
    let request = &mut decoded.request;
    if let Some(surface) = surface {
        request.surface = surface;
    } else if request.surface.is_empty() {
        request.surface = policy.metadata().surfaces.first().cloned().unwrap_or_default();
    }
    let mut pairs = Vec::new();
    for param in params {
        let Some((key, value)) = param.split_once('=') else {
            bail!("--param `{param}` is not KEY=VALUE");
        };
        if !policy.metadata().params.iter().any(|p| p.name == key) {
            let known: Vec<&str> = policy.metadata().params.iter().map(|p| p.name.as_str()).collect();
            bail!("--param `{key}`: the policy has no such parameter (it reads: {})", known.join(", "));
        }
        pairs.push((key.to_owned(), value.to_owned()));
    }
    // The same pipeline as `relish serve`, with the component as a one-arm plan and the input
    // order as its only fallback.
    let budget = Budget { deadline, ..Budget::default() };
    let metrics = Arc::new(Metrics::new());
    let binding = Arc::new(Binding::single(&request.surface.clone(), Arc::new(policy), pairs, budget, &metrics));
    let key = decoded.request.context.user_id().map(str::to_owned).or(decoded.bucket_key);
    let decision = binding.decide(decoded.request, key.as_deref(), &metrics);
    let response = decision.response(started.elapsed().as_micros() as u64);
    if compact {
        println!("{}", String::from_utf8(response.to_json())?);
    } else {
        println!("{}", serde_json::to_string_pretty(&response)?);
    }
    if let Some(failure) = &decision.failure {
        eprintln!("error: the policy failed ({}): {}; answered in input order", failure.reason, failure.detail);
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

fn load_features(file: &std::path::Path, store: &str, prefix: &str) -> anyhow::Result<ExitCode> {
    use relish_host::features::{LoadOptions, Progress};
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let progress = terminal.then(|| {
        Box::new(|p: &Progress| {
            let rate = p.entities as f64 / p.elapsed.as_secs_f64().max(1e-3);
            let share = 100.0 * p.bytes as f64 / p.total_bytes.max(1) as f64;
            eprint!("\r{} entities loaded, {share:.0} % of the file ({rate:.0}/s)   ", p.entities);
        }) as relish_host::features::OnProgress
    });
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let report = runtime
        .block_on(relish_host::features::load(file, store, prefix, LoadOptions { progress, ..LoadOptions::default() }))
        .with_context(|| format!("loading {} into {store}", file.display()))?;
    if terminal {
        eprintln!();
    }
    println!(
        "loaded {} entities ({} values) from {} into {store} under `{prefix}:` in {:.1} s",
        report.entities,
        report.values,
        file.display(),
        report.elapsed.as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

fn serve(path: Option<PathBuf>, check: bool) -> anyhow::Result<ExitCode> {
    let mut config = match &path {
        Some(path) => Config::from_file(path)?,
        None => {
            // The feature file shipped for the bundled fixtures, so that ids-only requests work
            // on a fresh machine without a feature store.
            let features = PathBuf::from("tests/fixtures/features.jsonl");
            if features.exists() { Config::default().with_bundled_features(&features) } else { Config::default() }
        }
    };
    config.apply_env(|name| std::env::var(name).ok())?;
    if check {
        // Everything `serve` refuses before it binds a port: the configuration (above) and the
        // admin tokens it resolves from it and the environment.
        relish_host::server::admin::Tokens::from_config(&config.admin, |name| std::env::var(name).ok())?;
        println!("configuration OK");
        for surface in config.surfaces() {
            let policy = surface.policy.map_or("(from the registry)".to_owned(), |p| p.name);
            println!("  {:<18} {policy}", surface.name);
        }
        return Ok(ExitCode::SUCCESS);
    }
    init_logging(config.server.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let handle = server::start(config).await?;
        let trigger = handle.shutdown_trigger();
        wait_for_signal().await;
        tracing::info!("shutting down: draining requests in flight");
        let _ = trigger.send(true);
        handle.stopped().await;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// SIGTERM (orchestrators) or SIGINT (a terminal).
async fn wait_for_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
