//! `converge setup`: creates the warehouse's tables and views for the mirror
//! configuration (`converge_backends::setup`), on the cloud backends the environment
//! names (`--backend cloud`: GOOGLE_CLOUD_PROJECT, CONVERGE_BIGQUERY_DATASET, the
//! emulator hosts, CONVERGE_CONFIG) or on a data directory. Functions in the cloud
//! never create tables at start; they exit until this has run.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use converge_backends::setup::SetupReport;
use converge_backends::Backends;
use converge_core::SystemClock;
use converge_function::{env, Settings};

pub struct SetupOptions {
    /// `true`: the cloud backends; `false`: the embedded ones in `data_dir`.
    pub cloud: bool,
    pub data_dir: PathBuf,
}

pub async fn run(options: SetupOptions) -> anyhow::Result<SetupReport> {
    let data_dir = options.data_dir.to_string_lossy().into_owned();
    let settings = Settings::from_lookup(|name| match name {
        n if n == env::BACKEND => Some(if options.cloud { "cloud" } else { "embedded" }.to_owned()),
        n if n == env::DATA_DIR => Some(data_dir.clone()),
        _ => std::env::var(name).ok(),
    })?;
    let backends = Backends::open(&settings, Arc::new(SystemClock)).await.context("opening the backends")?;
    Ok(converge_backends::setup::run(&backends, &settings.mirror).await.context("setting up the warehouse")?)
}

pub fn render(report: &SetupReport) -> String {
    format!(
        "setup ({}): changelog tables {} with their views, the runs table and the metrics tables are in place ({} ms)\n",
        report.backend,
        report.tables.join(", "),
        report.millis
    )
}
