//! The nightly-etl function's library started as its binary starts it (`open` from
//! settings, `run` on a listener), on port 0, answering over real HTTP with a token
//! of the data directory's local signer, which `open` created.

use std::time::Duration;

/// Starts the function as its binary does — `open` from settings on the embedded
/// backends in a fresh data directory, `run` on a listener — but on port 0, and stops it
/// when the returned sender is dropped or fired.
async fn start(dir: &std::path::Path) -> (String, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<std::io::Result<()>>) {
    let settings = converge_function::Settings { data_dir: dir.to_owned(), port: 0, ..converge_function::Settings::from_lookup(|_| None).unwrap() };
    let state = nightly_etl::EtlState::open(&settings).await.unwrap();
    let listener = converge_function::listen(settings.listen_address()).await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(state.run(listener, async move {
        let _ = stopped.await;
    }));
    (base, stop, server)
}

async fn post(base: &str, token: Option<&str>, body: &str) -> (u16, serde_json::Value) {
    let mut request = reqwest::Client::new().post(format!("{base}/")).header("content-type", "application/json").body(body.to_owned());
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, serde_json::from_slice(&response.bytes().await.unwrap()).unwrap_or(serde_json::Value::Null))
}

async fn health(base: &str) -> u16 {
    reqwest::Client::new().get(format!("{base}/healthz")).send().await.unwrap().status().as_u16()
}

/// A token of the embedded setup's default caller, signed with the key `open` made.
fn local_token(dir: &std::path::Path) -> String {
    let signer = converge_auth::LocalSigner::open(converge_auth::local_signer_dir(dir)).unwrap();
    signer.sign(converge_function::caller_auth::LOCAL_OPERATOR, nightly_etl::LOCAL_AUDIENCE, Duration::from_secs(300)).unwrap()
}

#[tokio::test]
async fn the_nightly_etl_opens_from_its_settings_and_answers_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let (base, stop, server) = start(dir.path()).await;
    assert_eq!(health(&base).await, 200);
    assert_eq!(post(&base, None, "").await.0, 401, "the caller check is wired");
    let (status, run) = post(&base, Some(&local_token(dir.path())), r#"{"date": "2025-06-01", "late_days": 0}"#).await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["outcome"], "ok", "{run}");
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
