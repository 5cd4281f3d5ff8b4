//! Firestore passes the source store and error log contracts every backend passes,
//! on Google's emulator (one emulator for this binary).
//!
//! Source store cases share one project, reset before each case: the contract
//! writes reference values, and Firestore accepts references only into the store's
//! own database, so the reference root must be known before the stores exist. (The
//! emulator would accept references into any project; the test does not lean on
//! that.) Error log cases each get a project of their own, empty by construction.

mod common;

use std::sync::Arc;

use converge_firestore::{FirestoreConfig, FirestoreSource};

const SOURCE_PROJECT: &str = "converge-source-contract";

#[tokio::test]
async fn firestore_passes_the_source_store_contract() {
    let Some(emulator) = common::emulator().await else { return };
    let contract = converge_contract::SourceContract {
        reference_root: format!("projects/{SOURCE_PROJECT}/databases/(default)/documents"),
        max_batch: 500,
    };
    converge_contract::source_store_contract(contract, || async {
        emulator.reset_project(SOURCE_PROJECT).await.expect("reset the contract's project");
        // Pages of 100: the scans of 450 and 600 documents cross pages.
        let config = FirestoreConfig::emulator(SOURCE_PROJECT, emulator.host_port()).with_page_size(100);
        let source = FirestoreSource::connect(config).await.expect("connect");
        Arc::new(source) as _
    })
    .await;
}

#[tokio::test]
async fn firestore_passes_the_error_log_contract() {
    let Some(emulator) = common::emulator().await else { return };
    converge_contract::error_log_contract(|| async { Arc::new(emulator.fresh_source().await.expect("connect")) as _ }).await;
}

#[tokio::test]
async fn firestore_passes_the_raw_source_contract() {
    let Some(emulator) = common::emulator().await else { return };
    converge_contract::raw_source_contract(500, || async {
        let source = Arc::new(emulator.fresh_source().await.expect("connect"));
        (source.clone() as _, source as _)
    })
    .await;
}

#[tokio::test]
async fn firestore_passes_the_opportunity_store_contract() {
    let Some(emulator) = common::emulator().await else { return };
    converge_contract::opportunity_store_contract(|| async { Arc::new(emulator.fresh_source().await.expect("connect")) as _ }).await;
}
