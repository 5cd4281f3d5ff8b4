//! The reconciler's library started as its binary starts it (`ReconcilerState::open`
//! from settings, `run` on a listener), on port 0, answering over real HTTP.

/// Starts the function as its binary does — `open` from settings on the embedded
/// backends in a fresh data directory, `run` on a listener — but on port 0, and stops it
/// when the returned sender is dropped or fired.
async fn start(dir: &std::path::Path) -> (String, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<std::io::Result<()>>) {
    let settings = converge_function::Settings { data_dir: dir.to_owned(), port: 0, ..converge_function::Settings::from_lookup(|_| None).unwrap() };
    let state = reconciler::ReconcilerState::open(&settings).await.unwrap();
    let listener = converge_function::listen(settings.listen_address()).await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(state.run(listener, async move {
        let _ = stopped.await;
    }));
    (base, stop, server)
}

async fn post(base: &str, token: Option<&str>, body: &str) -> (u16, serde_json::Value) {
    post_to(base, "/", token, body).await
}

async fn post_to(base: &str, path: &str, token: Option<&str>, body: &str) -> (u16, serde_json::Value) {
    let mut request = reqwest::Client::new().post(format!("{base}{path}")).header("content-type", "application/json").body(body.to_owned());
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

#[tokio::test]
async fn the_reconciler_opens_from_its_settings_and_answers_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let (base, stop, server) = start(dir.path()).await;
    assert_eq!(health(&base).await, 200);
    let (status, run) = post(&base, None, r#"{"dry_run": true}"#).await;
    assert_eq!(status, 200, "{run}");
    assert_eq!((run["scope"].as_str(), run["dry_run"].as_bool()), (Some("*"), Some(true)), "{run}");
    let (status, reply) = post(&base, None, "{not json").await;
    assert_eq!(status, 400, "{reply}");
    // The error log's retry pass, on its own path.
    let (status, pass) = post_to(&base, reconciler::RETRY_ERRORS_PATH, None, "").await;
    assert_eq!(status, 200, "{pass}");
    assert_eq!((pass["scope"].as_str(), pass["open_errors"].as_u64(), pass["outcome"].as_str()), (Some("*"), Some(0), Some("ok")), "{pass}");
    let (status, reply) = post_to(&base, reconciler::RETRY_ERRORS_PATH, None, r#"{"dry_run": true}"#).await;
    assert_eq!(status, 400, "{reply}");
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
