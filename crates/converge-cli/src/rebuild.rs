//! `converge rebuild`: one tenant rebuilt on the embedded backends of a data
//! directory, through the rebuild function itself — served in this process on
//! loopback, called over HTTP with an ID token from the local signer the embedded
//! setup trusts — so the command exercises exactly what a deployment runs.
//! `converge import` is the same with a documents-per-second cap.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use converge_auth::{IdTokenVerifier, LocalSigner};
use converge_backends::EmbeddedBackends;
use converge_core::{MirrorConfig, SourceStore, SystemClock, Warehouse};
use converge_function::{Backend, Settings};
use converge_rebuild::{RebuildRequest, RebuildRun, Rebuilder};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct RebuildOptions {
    pub data_dir: PathBuf,
    pub mirror: MirrorConfig,
    pub request: RebuildRequest,
    /// Draw a progress bar (on stderr).
    pub progress: bool,
}

/// What `converge rebuild --json` prints: the run's report and this process's peak
/// resident memory.
#[derive(Debug, Clone, Serialize)]
pub struct RebuildSummary {
    #[serde(flatten)]
    pub run: RebuildRun,
    pub peak_rss_mb: f64,
}

pub async fn run(options: RebuildOptions) -> anyhow::Result<RebuildSummary> {
    let data_dir = &options.data_dir;
    if !EmbeddedBackends::source_path(data_dir).exists() {
        bail!("no source store in {}; run `converge demo --data-dir {}` first, or pass the right --data-dir", data_dir.display(), data_dir.display());
    }
    let prices = converge_function::env::prices_from_env()?;
    let backends = EmbeddedBackends::open(data_dir, Arc::new(SystemClock)).with_context(|| format!("opening {}", data_dir.display()))?;
    backends.warehouse.ensure_tables(&options.mirror).await?;
    let source = backends.source_store();
    let rebuilder = Arc::new(Rebuilder::new(source.clone(), backends.warehouse(), options.mirror.clone(), Arc::new(SystemClock)).with_prices(prices));

    // The function's own configuration for this data directory: the local signer's key.
    let settings = Settings { data_dir: data_dir.clone(), backend: Backend::Embedded, mirror: options.mirror.clone(), ..Settings::from_lookup(|_| None)? };
    let auth = rebuild::verifier_config(&settings, |name| std::env::var(name).ok())?;
    rebuild::ensure_local_signer(data_dir)?;
    let audience = auth.audience().to_owned();
    let verifier = IdTokenVerifier::new(auth, Arc::new(SystemClock))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(converge_function::serve(
        listener,
        rebuild::app(rebuild::RebuildState { rebuilder: rebuilder.clone(), verifier }),
        async move {
            let _ = stopped.await;
        },
    ));

    let signer = LocalSigner::open(converge_auth::local_signer_dir(data_dir)).context("opening the local signer")?;
    let token = signer.sign(rebuild::LOCAL_OPERATOR, &audience, Duration::from_secs(3600))?;
    let bar = progress_bar(options.progress, source.as_ref(), &options.mirror, &options.request).await;
    let watch = {
        let (rebuilder, bar, tenant) = (rebuilder.clone(), bar.clone(), options.request.tenant.clone());
        tokio::spawn(async move {
            loop {
                if let Some(progress) = rebuilder.progress(&tenant) {
                    bar.set_position(progress.documents.load(std::sync::atomic::Ordering::Relaxed));
                    bar.set_message(format!("{} rows", progress.rows()));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let response = reqwest::Client::new()
        .post(format!("http://{address}/"))
        .bearer_auth(token)
        .json(&options.request)
        .timeout(Duration::from_secs(6 * 3600))
        .send()
        .await
        .context("calling the rebuild function")?;
    watch.abort();
    let status = response.status();
    let body = response.bytes().await?;
    let _ = stop.send(());
    let _ = server.await;
    if !status.is_success() {
        bar.abandon();
        bail!("the rebuild function answered {status}: {}", String::from_utf8_lossy(&body));
    }
    let run: RebuildRun = serde_json::from_slice(&body).with_context(|| format!("the rebuild function answered {}", String::from_utf8_lossy(&body)))?;
    bar.set_position(run.documents);
    bar.finish_with_message(format!("{} rows written", run.rows_written));
    let (_, peak_kib) = crate::bench::measure::memory_kib();
    Ok(RebuildSummary { run, peak_rss_mb: peak_kib as f64 / 1024.0 })
}

/// Documents read out of the tenant's total, rows written, rate.
async fn progress_bar(visible: bool, source: &dyn SourceStore, mirror: &MirrorConfig, request: &RebuildRequest) -> ProgressBar {
    if !visible {
        return ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
    }
    let mut total = 0;
    for route in &mirror.routes {
        let selected = request.tables.as_ref().is_none_or(|tables| tables.contains(&route.table));
        if let (true, Ok(scope)) = (selected, route.pattern.tenant_scope(&request.tenant)) {
            total += source.count(&scope).await.unwrap_or(0);
        }
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:40}] {pos:>9}/{len:9} docs {per_sec:>14} {msg} {elapsed_precise}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix("rebuild");
    bar
}

