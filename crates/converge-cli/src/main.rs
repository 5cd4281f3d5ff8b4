//! `converge`: the command-line entry point. Parses arguments and calls one command
//! module; all behaviour lives in the library.

use converge_core::RunOutcome;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use converge_cli::{bench, compact, detect, detectors, quarantine, rebuild, reconcile, render, serve, setup, sql};
use converge_scenarios::{demo, demo_cloud, drill, drill_cloud};

#[derive(Parser)]
#[command(name = "converge", version, about = "Keeps an analytics copy of a Firestore database honest.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole embedded pipeline on loopback and check derived == source.
    Demo {
        /// Workspace directory (SQLite source, DuckDB warehouse).
        #[arg(long, env = "CONVERGE_DATA_DIR", default_value = ".converge")]
        data_dir: PathBuf,
        /// Documents in the large tenant.
        #[arg(long, default_value_t = 300_000)]
        records: u64,
        /// Print one JSON object instead of the text summary.
        #[arg(long)]
        json: bool,
        /// `embedded` (SQLite + DuckDB) or `cloud` (Firestore + BigQuery adapters, run
        /// against both emulators started on free loopback ports).
        #[arg(long, value_enum, default_value_t = DemoBackend::Embedded)]
        backend: DemoBackend,
    },
    /// Compare source and warehouse, classify and repair every difference.
    Reconcile {
        #[arg(long, env = "CONVERGE_DATA_DIR", default_value = ".converge")]
        data_dir: PathBuf,
        /// One tenant; all tenants when absent.
        #[arg(long)]
        tenant: Option<String>,
        /// Report without writing (no repairs, no resolved errors, no run record).
        #[arg(long)]
        dry_run: bool,
        /// `full` reads every source document; `incremental` reads the documents written
        /// since each tenant's last verified run (the route's change_field) and compares
        /// `count()` per path range (a tenant without a verified point is read in full).
        #[arg(long, default_value = "full")]
        mode: converge_core::ReconcileMode,
        /// The largest share (0.0–1.0) of a tenant's documents one run may tombstone;
        /// above it the tenant's orphans are reported, not tombstoned (default 0.10).
        #[arg(long)]
        max_orphan_share: Option<f64>,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Quarantined events: the newest first, with their reason and what to do about it.
    Quarantine {
        #[command(subcommand)]
        command: QuarantineCommand,
    },
    /// Retry the error log: re-read every document an open sync error names, append its
    /// current state (a tombstone if it is gone) and resolve the record. Much cheaper
    /// than a reconcile; silent drift (no record) is the reconcile's to find.
    RetryErrors {
        #[arg(long, env = "CONVERGE_DATA_DIR", default_value = ".converge")]
        data_dir: PathBuf,
        /// One tenant's records; every tenant's when absent.
        #[arg(long)]
        tenant: Option<String>,
        /// Print one JSON object instead of the summary.
        #[arg(long)]
        json: bool,
    },
    /// Compact every changelog table: rows superseded before the horizon (now minus
    /// --retain-days) are pruned, each document keeps its state as of the horizon and
    /// every row after it; deletes go only when nothing older of their document is left
    /// and no late event can still arrive (8 days). As-of queries before the horizon
    /// then fail instead of answering wrongly. The current tables are refreshed after.
    Compact {
        #[arg(long, env = "CONVERGE_DATA_DIR", default_value = ".converge")]
        data_dir: PathBuf,
        /// Days of history to keep before now.
        #[arg(long)]
        retain_days: u32,
        /// Print one JSON object instead of the summary.
        #[arg(long)]
        json: bool,
    },
    /// Refresh each `<table>_current` from the changelog rows ingested since its
    /// watermark (or, with --full, from every row).
    RefreshCurrent {
        #[arg(long, env = "CONVERGE_DATA_DIR", default_value = ".converge")]
        data_dir: PathBuf,
        /// Rebuild the current tables from the whole changelog.
        #[arg(long)]
        full: bool,
        /// Print one JSON object instead of the summary.
        #[arg(long)]
        json: bool,
    },
    /// Fill a promoted column added to the mirror configuration in the rows written
    /// before it, from each row's `data` (in place: no row's state changes). Runs setup
    /// first, which adds the column (and refuses one removed or retyped).
    Backfill {
        #[arg(long, env = "CONVERGE_DATA_DIR", default_value = ".converge")]
        data_dir: PathBuf,
        /// The changelog table.
        #[arg(long)]
        table: String,
        /// One promoted column; every promoted column of the table when absent.
        #[arg(long)]
        column: Option<String>,
        /// Print one JSON array instead of the summary.
        #[arg(long)]
        json: bool,
    },
    /// Run demo traffic with faults injected, then the reconciler: what it found
    /// against what was injected. Exits non-zero unless they match and no drift remains.
    Drill {
        #[arg(long, env = "CONVERGE_DATA_DIR", default_value = ".converge-drill")]
        data_dir: PathBuf,
        /// Documents in the large tenant.
        #[arg(long, default_value_t = 20_000)]
        records: u64,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
        /// `embedded` (SQLite + DuckDB, in --data-dir) or `cloud` (Firestore + BigQuery
        /// adapters against both emulators; no data directory; use a few hundred records).
        #[arg(long, value_enum, default_value_t = DemoBackend::Embedded)]
        backend: DemoBackend,
    },
    /// Rebuild one tenant's derived rows from the source, atomically, through the
    /// rebuild function (served here on loopback, called with a local ID token).
    Rebuild {
        #[command(flatten)]
        args: RebuildArgs,
    },
    /// Onboard a tenant that already has data: a rebuild capped in documents/s so live
    /// sync keeps its share.
    Import {
        #[command(flatten)]
        args: RebuildArgs,
    },
    /// The detectors that find patterns in the daily metrics.
    Detectors {
        #[command(subcommand)]
        which: DetectorsCommand,
    },
    /// One detector pass: the shipped pack over daily_entity_metrics, findings written
    /// as opportunities, the run recorded.
    Detect {
        #[arg(long, env = "CONVERGE_DATA_DIR", default_value = ".converge")]
        data_dir: PathBuf,
        /// Run date (YYYY-MM-DD); the latest date in daily_entity_metrics when absent.
        #[arg(long)]
        as_of: Option<chrono::NaiveDate>,
        /// One tenant (repeatable); all tenants when absent.
        #[arg(long)]
        tenant: Vec<String>,
        /// Detector queries in flight at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Print the run record as one JSON object instead of the findings table.
        #[arg(long)]
        json: bool,
        /// `cloud`: BigQuery and Firestore as the environment configures them
        /// (GOOGLE_CLOUD_PROJECT, CONVERGE_BIGQUERY_DATASET, the emulator hosts, …)
        /// instead of the data directory.
        #[arg(long, value_enum, default_value = "embedded")]
        backend: DemoBackend,
    },
    /// One nightly-ETL pass: the raw collections (orgs/*/ga4_pages, ad_keywords, …) of
    /// each (tenant, date) validated, rolled up into daily_entity_metrics and
    /// entity_map, checked and replaced atomically, each slice recorded in
    /// converge_runs. `--json` prints one object: the pass (kind, batch_id — the
    /// slice's when it is one slice —, run_id, from, to, outcome, slices,
    /// failed_slices, rows_in, rows_out, quarantined, millis, code_version) with `runs`,
    /// the run record of every (tenant, date) as stored. Exits 1 if a slice failed.
    Etl {
        #[arg(long, env = "CONVERGE_DATA_DIR", default_value = ".converge")]
        data_dir: PathBuf,
        /// The day to load (YYYY-MM-DD); with --late-days N also the N days before.
        #[arg(long)]
        date: Option<chrono::NaiveDate>,
        /// First day of a backfill (with --to, or --date as the last day).
        #[arg(long)]
        from: Option<chrono::NaiveDate>,
        /// Last day of a backfill.
        #[arg(long)]
        to: Option<chrono::NaiveDate>,
        /// One tenant (repeatable); every tenant under orgs/ when absent.
        #[arg(long)]
        tenant: Vec<String>,
        /// Days before --date loaded again (late data); 0 by default here, 3 in the function.
        #[arg(long)]
        late_days: Option<u32>,
        /// Cap on raw records read per second (backfills next to live traffic).
        #[arg(long)]
        max_records_per_second: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// Create the warehouse's tables and views for the mirror configuration (idempotent).
    /// In the cloud the functions only check them at start: run this before the first
    /// deployment and after every upgrade or configuration change (`make deploy` does).
    Setup {
        /// `cloud`: BigQuery as the environment configures it (GOOGLE_CLOUD_PROJECT,
        /// CONVERGE_BIGQUERY_DATASET, CONVERGE_BIGQUERY_LOCATION, the emulator hosts);
        /// `embedded`: DuckDB in --data-dir.
        #[arg(long, value_enum, default_value = "embedded")]
        backend: DemoBackend,
        #[arg(long, env = "CONVERGE_DATA_DIR", default_value = ".converge")]
        data_dir: PathBuf,
        /// Print one JSON object instead of the summary.
        #[arg(long)]
        json: bool,
    },
    /// Run one query on the embedded warehouse; prints one JSON object per row.
    Sql {
        #[arg(long, env = "CONVERGE_DATA_DIR", default_value = ".converge")]
        data_dir: PathBuf,
        query: String,
    },
    /// Serve the on-write sync function and the outbox relay in one process.
    Serve {
        #[arg(long, env = "CONVERGE_DATA_DIR", default_value = ".converge")]
        data_dir: PathBuf,
        #[arg(long, env = "PORT", default_value_t = 8080)]
        port: u16,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        which: bench::BenchCommand,
    },
}

#[derive(Subcommand)]
enum DetectorsCommand {
    /// The shipped pack: one detector per line.
    List {
        /// One JSON object per line (id, title, entity, severity, form, runs_on).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum QuarantineCommand {
    /// The newest open quarantined events: reason, detail, what to do, last replay.
    List {
        #[arg(long, env = "CONVERGE_DATA_DIR", default_value = ".converge")]
        data_dir: PathBuf,
        /// How many, newest first.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Also the events a replay wrote (settled), not only the open ones.
        #[arg(long)]
        all: bool,
        /// One JSON array of the records (the payload as base64), each with `what_to_do`.
        #[arg(long)]
        json: bool,
    },
    /// Re-submit quarantined events through the sync service after a fix (a route
    /// added, a clock set right), with the current mirror configuration (CONVERGE_CONFIG),
    /// and record each replay on its record. A replay is a redelivery: an event already
    /// written is not written twice.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["id", "all"])))]
    Replay {
        #[arg(long, env = "CONVERGE_DATA_DIR", default_value = ".converge")]
        data_dir: PathBuf,
        /// One record, as `quarantine list` prints its id (replayed whatever its state).
        #[arg(long)]
        id: Option<String>,
        /// Every open record, oldest first.
        #[arg(long)]
        all: bool,
        /// With --all: only records of this reason (malformed, unsupported_content_type,
        /// unknown_event_type, unroutable, schema_violation, oversized, from_the_future).
        #[arg(long, requires = "all", value_parser = parse_quarantine_reason)]
        reason: Option<converge_core::QuarantineReason>,
        /// One JSON array of the replays instead of the text.
        #[arg(long)]
        json: bool,
    },
}

fn parse_quarantine_reason(text: &str) -> Result<converge_core::QuarantineReason, String> {
    converge_core::QuarantineReason::parse(text).ok_or_else(|| {
        let known: Vec<&str> = converge_core::QuarantineReason::ALL.iter().map(|r| r.as_str()).collect();
        format!("expected one of {}, found {text:?}", known.join(", "))
    })
}

#[derive(clap::Args)]
struct RebuildArgs {
    #[arg(long, env = "CONVERGE_DATA_DIR", default_value = ".converge")]
    data_dir: PathBuf,
    #[arg(long)]
    tenant: String,
    /// Only these changelog tables (comma-separated); all mirrored tables when absent.
    #[arg(long, value_delimiter = ',')]
    tables: Option<Vec<String>>,
    /// Cap on documents read per second (`import` defaults to 20000).
    #[arg(long)]
    max_docs_per_second: Option<u32>,
    /// What makes this rebuild this one, for its batch id (default: today's date).
    #[arg(long)]
    key: Option<String>,
    /// The largest share (0.0–1.0) of a table's documents one rebuild may tombstone;
    /// above it the rebuild writes nothing and is recorded as refused (default 0.10).
    #[arg(long)]
    max_orphan_share: Option<f64>,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    json: bool,
}

/// `converge import`'s default cap: a fifth of what one sync instance sustains.
const IMPORT_DOCS_PER_SECOND: u32 = 20_000;

async fn rebuild_command(args: RebuildArgs, default_cap: Option<u32>) -> anyhow::Result<()> {
    if std::env::var(converge_function::env::LOG).is_err() {
        std::env::set_var(converge_function::env::LOG, "warn");
    }
    converge_function::telemetry::init("converge-rebuild");
    let settings = converge_function::Settings::from_env()?;
    let request = converge_rebuild::RebuildRequest {
        tenant: args.tenant,
        tables: args.tables,
        key: args.key,
        max_docs_per_second: args.max_docs_per_second.or(default_cap),
        max_orphan_share: args.max_orphan_share,
    };
    let summary = rebuild::run(rebuild::RebuildOptions { mirror: converge_cli::mirror_for(&args.data_dir, settings.mirror)?, data_dir: args.data_dir, request, progress: !args.json }).await?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print!("{}", render::rebuild(&summary));
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DemoBackend {
    Embedded,
    Cloud,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo { data_dir, records, json, backend } => {
            // The demo's own output is the summary; logs only for trouble.
            if std::env::var(converge_function::env::LOG).is_err() {
                std::env::set_var(converge_function::env::LOG, "warn");
            }
            converge_function::telemetry::init("converge-demo");
            let summary = match backend {
                DemoBackend::Embedded => demo::run(demo::DemoOptions { data_dir, records, progress: !json, ops_scale: 1.0 }).await?,
                DemoBackend::Cloud => demo_cloud::run(demo_cloud::CloudDemoOptions { records, progress: !json }).await?,
            };
            if json {
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                print!("{}", render::demo(&summary));
            }
            if !summary.derived_equals_source {
                std::process::exit(1);
            }
        }
        Command::Reconcile { data_dir, tenant, dry_run, mode, max_orphan_share, json } => {
            if std::env::var(converge_function::env::LOG).is_err() {
                std::env::set_var(converge_function::env::LOG, "warn");
            }
            converge_function::telemetry::init("converge-reconcile");
            let settings = converge_function::Settings::from_env()?;
            let guard = max_orphan_share.map(|max_share| converge_reconcile::OrphanGuard { max_share, ..Default::default() });
            let options = converge_reconcile::RunOptions { tenant, dry_run, orphan_guard: guard, mode, ..Default::default() };
            let run = reconcile::run(&data_dir, converge_cli::mirror_for(&data_dir, settings.mirror)?, options).await?;
            if json {
                println!("{}", serde_json::to_string(&run)?);
            } else {
                print!("{}", render::reconcile(&run));
            }
        }
        Command::Quarantine { command: QuarantineCommand::List { data_dir, limit, all, json } } => {
            let records = quarantine::list(&data_dir, limit, all).await?;
            if json {
                println!("{}", serde_json::to_string(&records)?);
            } else {
                print!("{}", quarantine::render(&records));
            }
        }
        Command::Quarantine { command: QuarantineCommand::Replay { data_dir, id, all: _, reason, json } } => {
            if std::env::var(converge_function::env::LOG).is_err() {
                std::env::set_var(converge_function::env::LOG, "warn");
            }
            converge_function::telemetry::init("converge-quarantine-replay");
            let settings = converge_function::Settings::from_env()?;
            let selection = match id {
                Some(id) => quarantine::ReplaySelection::Id(id),
                None => quarantine::ReplaySelection::Open { reason },
            };
            let replayed = quarantine::replay(&data_dir, converge_cli::mirror_for(&data_dir, settings.mirror)?, settings.max_body_bytes, selection).await?;
            if json {
                println!("{}", serde_json::to_string(&replayed)?);
            } else {
                print!("{}", quarantine::render_replayed(&replayed));
            }
        }
        Command::RetryErrors { data_dir, tenant, json } => {
            if std::env::var(converge_function::env::LOG).is_err() {
                std::env::set_var(converge_function::env::LOG, "warn");
            }
            converge_function::telemetry::init("converge-retry-errors");
            let settings = converge_function::Settings::from_env()?;
            let run = reconcile::retry_errors(&data_dir, converge_cli::mirror_for(&data_dir, settings.mirror)?, tenant.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string(&run)?);
            } else {
                print!("{}", render::retry_errors(&run));
            }
        }
        Command::Compact { data_dir, retain_days, json } => {
            if std::env::var(converge_function::env::LOG).is_err() {
                std::env::set_var(converge_function::env::LOG, "warn");
            }
            converge_function::telemetry::init("converge-compact");
            let settings = converge_function::Settings::from_env()?;
            let run = compact::compact(&data_dir, converge_cli::mirror_for(&data_dir, settings.mirror)?, retain_days).await?;
            if json {
                println!("{}", serde_json::to_string(&run)?);
            } else {
                print!("{}", compact::render_compact(&run));
            }
        }
        Command::RefreshCurrent { data_dir, full, json } => {
            if std::env::var(converge_function::env::LOG).is_err() {
                std::env::set_var(converge_function::env::LOG, "warn");
            }
            converge_function::telemetry::init("converge-refresh-current");
            let settings = converge_function::Settings::from_env()?;
            let run = compact::refresh(&data_dir, converge_cli::mirror_for(&data_dir, settings.mirror)?, full).await?;
            if json {
                println!("{}", serde_json::to_string(&run)?);
            } else {
                print!("{}", compact::render_refresh(&run));
            }
        }
        Command::Backfill { data_dir, table, column, json } => {
            if std::env::var(converge_function::env::LOG).is_err() {
                std::env::set_var(converge_function::env::LOG, "warn");
            }
            converge_function::telemetry::init("converge-backfill");
            let settings = converge_function::Settings::from_env()?;
            let done = converge_cli::backfill::backfill(&data_dir, converge_cli::mirror_for(&data_dir, settings.mirror)?, &table, column.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string(&done)?);
            } else {
                print!("{}", converge_cli::backfill::render(&done));
            }
        }
        Command::Drill { data_dir, records, json, backend } => {
            // Injected failures log warnings by the thousand; the silent drift the
            // reconciler reports is at error level.
            if std::env::var(converge_function::env::LOG).is_err() {
                std::env::set_var(converge_function::env::LOG, "error");
            }
            converge_function::telemetry::init("converge-drill");
            let summary = match backend {
                DemoBackend::Embedded => drill::run(drill::DrillOptions { data_dir, records, progress: !json }).await?,
                DemoBackend::Cloud => drill_cloud::run(drill_cloud::CloudDrillOptions { records, progress: !json }).await?,
            };
            if json {
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                print!("{}", render::drill(&summary));
            }
            if !summary.passed {
                std::process::exit(1);
            }
        }
        Command::Rebuild { args } => rebuild_command(args, None).await?,
        Command::Import { args } => rebuild_command(args, Some(IMPORT_DOCS_PER_SECOND)).await?,
        Command::Detectors { which: DetectorsCommand::List { json } } => {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            for detector in detectors::list()? {
                let written = if json {
                    writeln!(out, "{}", serde_json::to_string(&detector)?)
                } else {
                    writeln!(out, "{:<40} {:<15} {:<9} {:<8} {}", detector.id, detector.entity, detector.severity, detector.decides, detector.title)
                };
                match written {
                    // The reader stopped early (`| head`): not an error.
                    Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => break,
                    other => other?,
                }
            }
        }
        Command::Detect { data_dir, as_of, tenant, concurrency, json, backend } => {
            if std::env::var(converge_function::env::LOG).is_err() {
                std::env::set_var(converge_function::env::LOG, "warn");
            }
            converge_function::telemetry::init("converge-detect");
            let tenants = if tenant.is_empty() { None } else { Some(tenant) };
            let target = match backend {
                DemoBackend::Embedded => detect::DetectTarget::Embedded(data_dir),
                DemoBackend::Cloud => {
                    let settings = converge_function::Settings::from_lookup(|name| {
                        if name == converge_function::env::BACKEND { Some("cloud".to_owned()) } else { std::env::var(name).ok() }
                    })?;
                    match settings.backend {
                        converge_function::Backend::Cloud(cloud) => detect::DetectTarget::Cloud(cloud),
                        converge_function::Backend::Embedded => unreachable!("the backend setting was given as cloud"),
                    }
                }
            };
            let run = detect::run(detect::DetectOptions { target, as_of, tenants, concurrency }).await?;
            if json {
                println!("{}", serde_json::to_string(&run)?);
            } else {
                print!("{}", detect::render(&run));
            }
            if run.outcome != RunOutcome::Ok {
                std::process::exit(1);
            }
        }
        Command::Etl { data_dir, date, from, to, tenant, late_days, max_records_per_second, json } => {
            if std::env::var(converge_function::env::LOG).is_err() {
                std::env::set_var(converge_function::env::LOG, "warn");
            }
            converge_function::telemetry::init("converge-etl");
            let settings = converge_function::Settings::from_env()?;
            let request = converge_cli::etl::request(date, from, to, tenant, late_days, max_records_per_second)?;
            let run = converge_cli::etl::run(converge_cli::etl::EtlOptions { mirror: converge_cli::mirror_for(&data_dir, settings.mirror)?, data_dir, request, progress: !json }).await?;
            if json {
                println!("{}", serde_json::to_string(&run)?);
            } else {
                print!("{}", converge_cli::etl::render(&run));
            }
            if run.outcome == RunOutcome::Failed {
                std::process::exit(1);
            }
        }
        Command::Setup { backend, data_dir, json } => {
            converge_function::telemetry::init("converge-setup");
            let report = setup::run(setup::SetupOptions { cloud: backend == DemoBackend::Cloud, data_dir }).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", setup::render(&report));
            }
        }
        Command::Sql { data_dir, query } => {
            converge_function::telemetry::init("converge-sql");
            sql::run(&data_dir, &query, &mut std::io::stdout().lock()).await?;
        }
        Command::Serve { data_dir, port } => {
            converge_function::telemetry::init("converge-serve");
            let settings = converge_function::Settings::from_env()?;
            serve::run(serve::ServeOptions { mirror: converge_cli::mirror_for(&data_dir, settings.mirror)?, data_dir, port, max_body_bytes: settings.max_body_bytes }).await?;
        }
        Command::Bench { which } => {
            if std::env::var(converge_function::env::LOG).is_err() {
                std::env::set_var(converge_function::env::LOG, "warn");
            }
            converge_function::telemetry::init("converge-bench");
            bench::run(which).await?;
        }
    }
    Ok(())
}
