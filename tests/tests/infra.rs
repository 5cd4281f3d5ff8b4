//! Offline checks of `deploy/` and `infra/`: the Terraform table schema and SQL are the
//! code's own (so Terraform and the functions' start-up DDL never drift), and
//! `deploy/deploy.sh` validates its configuration and prints the commands it would run.

use std::path::{Path, PathBuf};
use std::process::Command;

use converge_bigquery::{schema, BigQueryConfig};
use converge_core::MirrorConfig;

const PROJECT: &str = "acme-analytics";
const DATASET: &str = "converge_test";

fn repo() -> PathBuf {
    Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR for tests")).parent().expect("tests/ sits in the repository").to_path_buf()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// What Terraform's `chomp(templatefile(path, { project, dataset }))` yields for our files:
/// `${project}` and `${dataset}` substituted, the trailing newline dropped.
fn render(path: &str) -> String {
    let text = read(path).replace("${project}", PROJECT).replace("${dataset}", DATASET);
    assert!(!text.contains("${") && !text.contains("%{"), "{path}: a template sequence other than ${{project}}/${{dataset}}");
    text.trim_end_matches(['\n', '\r']).to_owned()
}

/// The view's and the table function's statements among `create_statements`, found by
/// what they create (tables, current tables and added columns come first).
const VIEW: &str = "CREATE OR REPLACE VIEW ";
const TABLE_FUNCTION: &str = "CREATE OR REPLACE TABLE FUNCTION ";

fn statement(statements: &[String], kind: &str) -> String {
    statements.iter().find(|s| s.starts_with(kind)).unwrap_or_else(|| panic!("no {kind}… among {statements:#?}")).clone()
}

fn statements() -> Vec<String> {
    let config = BigQueryConfig::new(PROJECT, DATASET).unwrap();
    schema::create_statements(&config, &MirrorConfig::default().routes[0])
}

fn body<'a>(statement: &'a str, prefix: &str) -> &'a str {
    statement.strip_prefix(prefix).unwrap_or_else(|| panic!("expected {prefix:?} at the start of {statement}"))
}

/// `infra/schema/<name>.json` as DDL column definitions (`name TYPE[ NOT NULL]`).
fn schema_file_columns(name: &str) -> Vec<String> {
    let json: serde_json::Value = serde_json::from_str(&read(&format!("infra/schema/{name}.json"))).unwrap();
    json.as_array()
        .expect("a JSON array of fields")
        .iter()
        .map(|f| format!("{} {}{}", f["name"].as_str().unwrap(), f["type"].as_str().unwrap(), if f["mode"] == "REQUIRED" { " NOT NULL" } else { "" }))
        .collect()
}

#[test]
fn the_runs_table_schema_is_the_code_s_ddl() {
    let file = schema_file_columns("converge_runs");
    let config = BigQueryConfig::new(PROJECT, DATASET).unwrap();
    let ddl = schema::create_runs(&config);
    let columns = ddl.split_once(" (").and_then(|(_, rest)| rest.split_once(") OPTIONS")).map(|(cols, _)| cols).expect("CREATE TABLE … (columns) OPTIONS");
    let code: Vec<String> = columns.split(", ").map(str::to_owned).collect();
    assert_eq!(file, code, "infra/schema/converge_runs.json must list the columns of converge_bigquery::schema::create_runs()");
    assert!(read("infra/bigquery.tf").contains("schema/converge_runs.json"));
}

#[test]
fn the_table_state_schemas_are_the_code_s_ddl() {
    let config = BigQueryConfig::new(PROJECT, DATASET).unwrap();
    for (ddl, name) in schema::create_table_state(&config).iter().zip(["converge_table_state", "converge_watermark_resets"]) {
        let file = schema_file_columns(name);
        let columns = ddl.split_once(" (").and_then(|(_, rest)| rest.split_once(')')).map(|(cols, _)| cols).expect("CREATE TABLE … (columns)");
        assert_eq!(file, columns.split(", ").map(str::to_owned).collect::<Vec<_>>(), "infra/schema/{name}.json must list the columns of create_table_state()");
    }
    let tf = read("infra/bigquery.tf");
    assert!(tf.contains("\"records_current\", \"records_current_tombstones\"") && tf.contains("\"converge_table_state\", \"converge_watermark_resets\""));
    // The current tables have the changelog's columns and clustering.
    assert!(statements()[1].contains("`acme-analytics.converge_test.records_current` (") && statements()[1].contains("CLUSTER BY tenant, doc_path"));
}

#[test]
fn the_table_schema_is_the_code_s_columns() {
    let json: serde_json::Value = serde_json::from_str(&read("infra/schema/records.json")).unwrap();
    let file: Vec<(String, String, String)> = json
        .as_array()
        .expect("a JSON array of fields")
        .iter()
        .map(|f| (f["name"].as_str().unwrap().to_owned(), f["type"].as_str().unwrap().to_owned(), f["mode"].as_str().unwrap().to_owned()))
        .collect();
    let mirror = MirrorConfig::default();
    let code: Vec<(String, String, String)> = schema::columns(&mirror.routes[0])
        .into_iter()
        .map(|(name, ty, required)| (name.to_owned(), ty.to_owned(), if required { "REQUIRED" } else { "NULLABLE" }.to_owned()))
        .collect();
    assert_eq!(file, code, "infra/schema/records.json must list converge_bigquery::schema::columns() of the default route");
    // The table's partitioning and clustering are the DDL's too.
    let tf = read("infra/bigquery.tf");
    assert!(statements()[0].contains("PARTITION BY DATE(ingested_at) CLUSTER BY tenant, doc_path"));
    assert!(tf.contains("type  = \"DAY\"") && tf.contains("field = \"ingested_at\"") && tf.contains("clustering = [\"tenant\", \"doc_path\"]"));
}

#[test]
fn the_view_and_table_function_are_the_code_s_text() {
    let statements = statements();
    let latest = format!("CREATE OR REPLACE VIEW `{PROJECT}.{DATASET}.records_latest` AS ");
    assert_eq!(render("infra/sql/records_latest.sql"), body(&statement(&statements, VIEW), &latest));
    let as_of = format!("CREATE OR REPLACE TABLE FUNCTION `{PROJECT}.{DATASET}.records_as_of`(as_of TIMESTAMP) AS ");
    assert_eq!(render("infra/sql/records_as_of.sql"), body(&statement(&statements, TABLE_FUNCTION), &as_of));
}

/// The same comparison through Terraform's own `templatefile`, where `terraform` is
/// installed (it needs no provider for this).
#[test]
fn terraform_renders_the_same_text() {
    if Command::new("terraform").arg("version").output().is_err() {
        eprintln!("terraform not installed: skipped (the plain rendering is checked above)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (file, kind) in [("records_latest.sql", VIEW), ("records_as_of.sql", TABLE_FUNCTION)] {
        let path = repo().join("infra/sql").join(file);
        let expr = format!("jsonencode(chomp(templatefile({:?}, {{ project = {PROJECT:?}, dataset = {DATASET:?} }})))", path.display().to_string());
        let out = Command::new("terraform")
            .arg("console")
            .current_dir(dir.path())
            .env("TF_CLI_CONFIG_FILE", "/dev/null")
            .env("CHECKPOINT_DISABLE", "1")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().unwrap().write_all(format!("{expr}\n").as_bytes())?;
                child.wait_with_output()
            })
            .unwrap();
        assert!(out.status.success(), "terraform console: {}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8(out.stdout).unwrap();
        let line = stdout.lines().rfind(|l| !l.trim().is_empty()).expect("terraform printed the value");
        // console prints the HCL string holding jsonencode's output: decode twice.
        let json: String = serde_json::from_str(line).unwrap();
        let text: String = serde_json::from_str(&json).unwrap();
        let statement = &statement(&statements(), kind);
        assert!(statement.ends_with(&format!(" AS {text}")), "{file} through terraform:\n{text}\nvs\n{statement}");
    }
}

/// `DRY_RUN=1 CONVERGE_DEPLOY_ENV=<env_file> bash deploy/deploy.sh` with a `gcloud` on
/// the PATH that fails: a dry run must never call it. Returns (success, stdout, stderr).
fn dry_run(env_file: &Path, tmp: &Path) -> (bool, String, String) {
    let bin = tmp.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(bin.join("gcloud"), "#!/bin/sh\necho \"gcloud called in a dry run: $*\" >&2\nexit 99\n").unwrap();
    Command::new("chmod").arg("755").arg(bin.join("gcloud")).status().unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new("bash")
        .arg("deploy/deploy.sh")
        .current_dir(repo())
        .env("DRY_RUN", "1")
        .env("CONVERGE_DEPLOY_ENV", env_file)
        .env("TMPDIR", tmp)
        .env("PATH", path)
        .output()
        .expect("running bash");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn deploy(env_file: &Path) -> (bool, String) {
    let tmp = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) = dry_run(env_file, tmp.path());
    (ok, format!("{stdout}{stderr}"))
}

#[test]
fn deploy_dry_run_prints_the_deployment() {
    let (ok, out) = deploy(&repo().join("deploy/converge.env.example"));
    assert!(ok, "dry run failed:\n{out}");
    for expected in [
        "+ gcloud services enable",
        "+ gcloud builds submit . --config=deploy/cloudbuild.yaml",
        "_FUNCTION=on-write-sync,_IMAGE=europe-west1-docker.pkg.dev/my-project-id/converge/on-write-sync:",
        "+ gcloud run services replace ",
        "+ gcloud eventarc triggers create converge-sync-orgs-tenant-records-doc",
        "--event-filters=type=google.cloud.firestore.document.v1.written",
        "'--event-filters=database=(default)'",
        "'--event-filters-path-pattern=document=orgs/{tenant}/records/{doc}'",
        "--event-data-content-type=application/protobuf",
        "--destination-run-service=converge-sync",
        "--destination-run-path=/",
        "--service-account=converge-eventarc@my-project-id.iam.gserviceaccount.com",
        "_FUNCTION=rebuild,",
        "+ gcloud run services add-iam-policy-binding converge-rebuild --region=europe-west1 --member=user:ops@example.com --role=roles/run.invoker",
        "_FUNCTION=reconciler,",
        "+ gcloud scheduler jobs create http converge-reconciler",
        "--oidc-service-account-email=converge-scheduler@my-project-id.iam.gserviceaccount.com",
    ] {
        assert!(out.contains(expected), "dry run output lacks {expected:?}:\n{out}");
    }
}

/// Functions run no DDL at start and exit until setup has made their tables, so the
/// deployment runs `converge setup --backend cloud`, with the functions' own settings,
/// before it replaces any service.
#[test]
fn deploy_sets_up_the_warehouse_before_it_replaces_any_service() {
    let (ok, out) = deploy(&repo().join("deploy/converge.env.example"));
    assert!(ok, "dry run failed:\n{out}");
    let lines: Vec<&str> = out.lines().collect();
    let setup = lines.iter().position(|l| l.starts_with("+ env ") && l.ends_with(" converge setup --backend cloud")).unwrap_or_else(|| panic!("no setup step:\n{out}"));
    for setting in ["CONVERGE_BACKEND=cloud", "GOOGLE_CLOUD_PROJECT=my-project-id", "CONVERGE_BIGQUERY_DATASET=converge", "CONVERGE_BIGQUERY_LOCATION=EU"] {
        assert!(lines[setup].contains(setting), "setup runs without {setting}: {}", lines[setup]);
    }
    let first_service = lines.iter().position(|l| l.starts_with("+ gcloud run services replace ")).expect("a service is deployed");
    assert!(setup < first_service, "setup must come before the first service:\n{out}");
}

/// What Google documents about delivery, applied: Eventarc drops an event its
/// subscription could not deliver within the retention unless a dead-letter topic is
/// set (https://cloud.google.com/eventarc/docs/retry-events), a dead-letter topic loses
/// messages without a subscription and takes 5–100 delivery attempts
/// (https://cloud.google.com/pubsub/docs/handling-failures), and Cloud Scheduler does
/// not retry without retry settings, allowing at most 5
/// (https://cloud.google.com/scheduler/docs/configuring/retry-jobs).
#[test]
fn every_trigger_has_a_dead_letter_topic_and_every_job_retries() {
    let (ok, out) = deploy(&repo().join("deploy/converge.env.example"));
    assert!(ok, "dry run failed:\n{out}");
    let triggers = out.lines().filter(|l| l.starts_with("+ gcloud eventarc triggers create ")).count();
    let dead_letters: Vec<&str> = out.lines().filter(|l| l.starts_with("+ gcloud pubsub subscriptions update ")).collect();
    assert!(triggers > 0 && dead_letters.len() == triggers, "one subscription update per trigger:\n{out}");
    for line in &dead_letters {
        assert!(line.contains("--dead-letter-topic=projects/my-project-id/topics/converge-dead-letter"), "{line}");
        let attempts: u32 = line.split("--max-delivery-attempts=").nth(1).and_then(|r| r.split(' ').next()).and_then(|n| n.parse().ok()).expect(line);
        assert!((5..=100).contains(&attempts), "{line}");
        assert!(line.contains("--message-retention-duration=7d"), "{line}");
    }
    assert!(out.contains("--member=serviceAccount:service-000000000000@gcp-sa-pubsub.iam.gserviceaccount.com --role=roles/pubsub.subscriber"));
    let jobs: Vec<&str> = out.lines().filter(|l| l.starts_with("+ gcloud scheduler jobs create http ")).collect();
    // The nightly ETL and detectors, the daily incremental and the weekly full
    // reconcile, the error log's frequent retry, the current tables' refresh and
    // compaction.
    assert_eq!(jobs.len(), 7, "{out}");
    for job in jobs {
        let retries: u32 = job.split("--max-retry-attempts=").nth(1).and_then(|r| r.split(' ').next()).and_then(|n| n.parse().ok()).expect(job);
        assert!((1..=5).contains(&retries), "{job}");
        assert!(job.contains("--min-backoff=") && job.contains("--max-backoff=") && job.contains("--max-retry-duration="), "{job}");
    }
    let pubsub = read("infra/pubsub.tf");
    for expected in ["resource \"google_pubsub_topic\" \"dead_letter\"", "name       = \"converge-dead-letter\"", "resource \"google_pubsub_subscription\" \"dead_letter_hold\"", "roles/pubsub.publisher", "gcp-sa-pubsub.iam.gserviceaccount.com"] {
        assert!(pubsub.contains(expected), "infra/pubsub.tf lacks {expected:?}");
    }
}

/// The error log's own retry (`Reconciler::retry_errors`) has its own Cloud Scheduler
/// job: every 10 minutes, to the reconciler's `/retry-errors` path, as the reconciler's
/// nightly job calls it (same identity and audience, so no further grant: the
/// scheduler's `run.invoker` on the service covers every path). Cloud Scheduler's
/// unix-cron schedules run at most once a minute
/// (https://cloud.google.com/scheduler/docs/configuring/cron-job-schedules); an HTTP
/// target's attempt deadline is 15 s to 30 min, and execution n + 1 of a job waits for
/// execution n (https://cloud.google.com/scheduler/docs/reference/rest/v1/projects.locations.jobs):
/// its attempt and its retries end within its interval, so the next tick is the retry.
#[test]
fn the_error_log_retry_has_its_own_frequent_job_on_the_reconciler_s_path() {
    let (ok, out) = deploy(&repo().join("deploy/converge.env.example"));
    assert!(ok, "dry run failed:\n{out}");
    let job = |name: &str| -> Vec<String> {
        let line = out.lines().find(|l| l.starts_with(&format!("+ gcloud scheduler jobs create http {name} "))).unwrap_or_else(|| panic!("no job {name}:\n{out}"));
        // Words, with the quoted schedule unquoted.
        line.replace("'--schedule=", "--schedule=").replace(" * * * *'", " * * * *").split(" --").map(str::to_owned).collect()
    };
    let flag = |words: &[String], name: &str| -> String {
        words.iter().find_map(|w| w.strip_prefix(&format!("{name}="))).unwrap_or_else(|| panic!("no --{name} in {words:?}")).trim().to_owned()
    };
    let seconds = |words: &[String], name: &str| -> u64 {
        let text = flag(words, name);
        text.strip_suffix('s').and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("--{name}={text}: expected seconds"))
    };
    let retry = job("converge-retry-errors");
    let nightly = job("converge-reconciler");
    assert_eq!(flag(&retry, "uri"), format!("https://converge-reconciler-DRYRUN.europe-west1.run.app{}", reconciler::RETRY_ERRORS_PATH));
    assert_eq!(flag(&nightly, "uri"), format!("https://converge-reconciler-DRYRUN.europe-west1.run.app{}", reconciler::RECONCILE_PATH));
    for same in ["oidc-service-account-email", "oidc-token-audience", "http-method", "time-zone"] {
        assert_eq!(flag(&retry, same), flag(&nightly, same), "--{same}: the retry job calls the reconciler as its nightly job does");
    }
    let schedule = flag(&retry, "schedule");
    let every: u64 = schedule.strip_prefix("*/").and_then(|s| s.strip_suffix(" * * * *")).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("--schedule={schedule}: expected */N * * * *"));
    assert!((1..=15).contains(&every), "every {every} minutes: frequent, and no finer than Cloud Scheduler's one minute");
    let interval = every * 60;
    let deadline = seconds(&retry, "attempt-deadline");
    assert!((15..=1800).contains(&deadline) && deadline < interval, "--attempt-deadline={deadline}s: within 15 s to 30 min and the {interval} s interval");
    let retries: u32 = flag(&retry, "max-retry-attempts").parse().unwrap();
    assert!((1..=5).contains(&retries));
    assert!(seconds(&retry, "max-retry-duration") < interval, "its retries end before the next tick");

    // The current tables' refresh and compaction: the reconciler's other paths, called
    // the same way; the refresh frequent, compaction daily after the nightly reconcile.
    let refresh = job("converge-refresh-current");
    let compact = job("converge-compact");
    assert_eq!(flag(&refresh, "uri"), format!("https://converge-reconciler-DRYRUN.europe-west1.run.app{}", reconciler::REFRESH_CURRENT_PATH));
    assert_eq!(flag(&compact, "uri"), format!("https://converge-reconciler-DRYRUN.europe-west1.run.app{}", reconciler::COMPACT_PATH));
    for same in ["oidc-service-account-email", "oidc-token-audience", "http-method", "time-zone"] {
        assert_eq!(flag(&refresh, same), flag(&nightly, same));
        assert_eq!(flag(&compact, same), flag(&nightly, same));
    }
    assert_eq!(flag(&refresh, "schedule"), "*/15 * * * *");
    assert!(seconds(&refresh, "max-retry-duration") < 15 * 60, "the refresh's retries end before its next tick");
    let hour = |words: &[String]| -> u32 { flag(words, "schedule").trim_matches('\'').split(' ').nth(1).unwrap().parse().unwrap() };
    assert!(hour(&compact) > hour(&nightly), "compaction runs after the nightly reconcile");
}

#[test]
fn the_rebuild_service_checks_tokens_for_its_own_url_and_the_configured_callers() {
    let tmp = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) = dry_run(&repo().join("deploy/converge.env.example"), tmp.path());
    assert!(ok, "{stdout}{stderr}");
    let dir = stdout.lines().find_map(|l| l.strip_prefix("==> service definitions rendered in ")).expect("rendered path printed");
    let yaml = std::fs::read_to_string(Path::new(dir).join("rebuild.yaml")).unwrap();
    assert!(!yaml.contains("${"), "placeholder left:\n{yaml}");
    for (name, value) in [
        (converge_function::env::AUTH_AUDIENCE, "\"https://converge-rebuild-000000000000.europe-west1.run.app\""),
        (converge_function::env::AUTH_ALLOWED_EMAILS, "\"ops@example.com\""),
        (converge_function::env::BACKEND, "cloud"),
    ] {
        assert!(yaml.contains(&format!("- name: {name}\n              value: {value}\n")), "{name}={value} missing:\n{yaml}");
    }
}

#[test]
fn the_service_definition_renders_every_setting() {
    let tmp = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) = dry_run(&repo().join("deploy/converge.env.example"), tmp.path());
    assert!(ok, "{stdout}{stderr}");
    let dir = stdout.lines().find_map(|l| l.strip_prefix("==> service definitions rendered in ")).expect("rendered path printed");
    let yaml = std::fs::read_to_string(Path::new(dir).join("on-write-sync.yaml")).unwrap();
    assert!(!yaml.contains("${"), "placeholder left:\n{yaml}");
    assert!(!yaml.contains("mirror-config") && !yaml.contains("/etc/converge"), "mirror-config lines kept without CONVERGE_CONFIG:\n{yaml}");
    for (name, value) in [
        (converge_function::env::BACKEND, "cloud"),
        (converge_function::env::PROJECT, "\"my-project-id\""),
        (converge_function::env::FIRESTORE_DATABASE, "\"(default)\""),
        (converge_function::env::BIGQUERY_DATASET, "\"converge\""),
        (converge_function::env::BIGQUERY_LOCATION, "\"EU\""),
    ] {
        assert!(yaml.contains(&format!("- name: {name}\n              value: {value}\n")), "{name}={value} missing:\n{yaml}");
    }
    for expected in [
        "run.googleapis.com/ingress: internal",
        "containerConcurrency: 1000",
        "serviceAccountName: converge-sync@my-project-id.iam.gserviceaccount.com",
        "image: europe-west1-docker.pkg.dev/my-project-id/converge/on-write-sync:",
    ] {
        assert!(yaml.contains(expected), "{expected:?} missing:\n{yaml}");
    }
}

#[test]
fn deploy_names_the_missing_or_wrong_setting() {
    let example = read("deploy/converge.env.example");
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, String, &str); 4] = [
        ("no-project.env", example.lines().filter(|l| !l.starts_with("PROJECT=")).collect::<Vec<_>>().join("\n"), "PROJECT is missing"),
        ("bad-region.env", example.replace("REGION=europe-west1", "REGION=Europe West"), "REGION='Europe West'"),
        ("typo.env", format!("{example}\nPROJET=x\n"), "unknown setting PROJET"),
        (
            "unrouted.env",
            example.replace("TRIGGER_PATH_PATTERNS=\"orgs/{tenant}/records/{doc}\"", "TRIGGER_PATH_PATTERNS=\"orgs/{tenant}/notes/{doc}\""),
            "TRIGGER_PATH_PATTERNS: 'orgs/{tenant}/notes/{doc}' is not a route of the built-in mirror configuration",
        ),
    ];
    for (file, text, expected) in cases {
        let path = dir.path().join(file);
        std::fs::write(&path, text).unwrap();
        let (ok, out) = deploy(&path);
        assert!(!ok, "{file}: the dry run should fail:\n{out}");
        assert!(out.contains(expected), "{file}: expected {expected:?} in:\n{out}");
        assert!(!out.contains("+ gcloud"), "{file}: nothing may run before the configuration is valid:\n{out}");
    }
}

/// One Terraform resource block of `infra/bigquery.tf`, by table id.
fn terraform_table(table: &str) -> String {
    let tf = read("infra/bigquery.tf");
    let start = tf.find(&format!("table_id    = \"{table}\"")).unwrap_or_else(|| panic!("infra/bigquery.tf declares no table {table}"));
    let end = tf[start..].find("\n}\n").map_or(tf.len(), |e| start + e);
    tf[start..end].to_owned()
}

#[test]
fn the_etl_tables_are_the_code_s_ddl_partitioned_and_clustered() {
    let config = BigQueryConfig::new(PROJECT, DATASET).unwrap();
    let statements = converge_bigquery::metrics::create_metrics_tables(&config);
    for (table, partition, clustering) in [
        ("daily_entity_metrics", "date", "[\"tenant\", \"entity_type\"]"),
        ("entity_map", "date", "[\"tenant\", \"entity_type\"]"),
        ("etl_loads", "date", "[\"tenant\"]"),
        ("etl_staging_metrics", "staged_at", "[\"load_id\"]"),
        ("etl_staging_entity_map", "staged_at", "[\"load_id\"]"),
    ] {
        let file = schema_file_columns(table);
        let ddl = statements.iter().find(|s| s.contains(&format!(".{table}` ("))).unwrap_or_else(|| panic!("no DDL for {table}"));
        let columns = ddl.split_once(" (").and_then(|(_, rest)| rest.split_once(") PARTITION BY")).map(|(cols, _)| cols).expect("CREATE TABLE … (columns) PARTITION BY");
        let code: Vec<String> = columns.split(", ").map(str::to_owned).collect();
        assert_eq!(file, code, "infra/schema/{table}.json must list the columns of converge_bigquery::metrics::create_metrics_tables()");
        let block = terraform_table(table);
        assert!(block.contains(&format!("schema/{table}.json")), "{block}");
        assert!(block.contains(&format!("field = \"{partition}\"")) || block.contains(&format!("field         = \"{partition}\"")), "{table} partitioned by {partition}:\n{block}");
        assert!(block.contains(&format!("clustering          = {clustering}")), "{table} clustered by {clustering}:\n{block}");
        let code_partition = if partition == "date" { "PARTITION BY date".to_owned() } else { format!("PARTITION BY DATE({partition})") };
        assert!(ddl.contains(&code_partition), "{ddl}");
    }
}

#[test]
fn the_nightly_etl_service_checks_the_scheduler_s_tokens_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) = dry_run(&repo().join("deploy/converge.env.example"), tmp.path());
    assert!(ok, "{stdout}{stderr}");
    for expected in [
        "_FUNCTION=nightly-etl,",
        "+ gcloud scheduler jobs create http converge-etl",
        "'--schedule=0 2 * * *'",
        // The audience the service checks (its deterministic URL), not whichever URL
        // `services describe` prints.
        "--oidc-token-audience=https://converge-etl-000000000000.europe-west1.run.app",
    ] {
        assert!(stdout.contains(expected) || stderr.contains(expected), "dry run output lacks {expected:?}:\n{stdout}{stderr}");
    }
    let dir = stdout.lines().find_map(|l| l.strip_prefix("==> service definitions rendered in ")).expect("rendered path printed");
    let yaml = std::fs::read_to_string(Path::new(dir).join("nightly-etl.yaml")).unwrap();
    assert!(!yaml.contains("${"), "placeholder left:\n{yaml}");
    for (name, value) in [
        (converge_function::env::AUTH_AUDIENCE, "\"https://converge-etl-000000000000.europe-west1.run.app\""),
        (
            converge_function::env::AUTH_ALLOWED_EMAILS,
            "\"converge-scheduler@my-project-id.iam.gserviceaccount.com,converge-eventarc@my-project-id.iam.gserviceaccount.com\"",
        ),
        (converge_function::env::BACKEND, "cloud"),
    ] {
        assert!(yaml.contains(&format!("- name: {name}\n              value: {value}\n")), "{name}={value} missing:\n{yaml}");
    }
    for expected in [
        "run.googleapis.com/ingress: internal",
        // The app verifies the scheduler's token: Cloud Run's own check would hand it
        // a copy with the signature removed.
        "run.googleapis.com/invoker-iam-disabled: \"true\"",
        "serviceAccountName: converge-etl@my-project-id.iam.gserviceaccount.com",
        "timeoutSeconds: 1800",
    ] {
        assert!(yaml.contains(expected), "{expected:?} missing:\n{yaml}");
    }
}

#[test]
fn the_detector_runner_runs_after_the_etl_and_checks_the_scheduler_s_tokens_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) = dry_run(&repo().join("deploy/converge.env.example"), tmp.path());
    assert!(ok, "{stdout}{stderr}");
    let out = format!("{stdout}{stderr}");
    for expected in [
        "_FUNCTION=detector-runner,",
        "+ gcloud scheduler jobs create http converge-detectors",
        "'--schedule=0 5 * * *'",
        "--oidc-token-audience=https://converge-detectors-000000000000.europe-west1.run.app",
    ] {
        assert!(out.contains(expected), "dry run output lacks {expected:?}:\n{out}");
    }
    // After the nightly ETL has loaded yesterday (both in the same time zone).
    let hour = |job: &str| -> u32 {
        let line = out.lines().find(|l| l.contains(&format!("scheduler jobs create http {job}"))).unwrap_or_else(|| panic!("no job {job}"));
        let schedule = line.split("'--schedule=").nth(1).and_then(|rest| rest.split('\'').next()).expect("a --schedule");
        schedule.split(' ').nth(1).and_then(|h| h.parse().ok()).unwrap_or_else(|| panic!("{job}: hour of {schedule:?}"))
    };
    assert!(hour("converge-detectors") > hour("converge-etl"), "detectors must run after the ETL");

    let dir = stdout.lines().find_map(|l| l.strip_prefix("==> service definitions rendered in ")).expect("rendered path printed");
    let yaml = std::fs::read_to_string(Path::new(dir).join("detector-runner.yaml")).unwrap();
    assert!(!yaml.contains("${"), "placeholder left:\n{yaml}");
    for (name, value) in [
        (converge_function::env::AUTH_AUDIENCE, "\"https://converge-detectors-000000000000.europe-west1.run.app\""),
        (converge_function::env::AUTH_ALLOWED_EMAILS, "\"converge-scheduler@my-project-id.iam.gserviceaccount.com\""),
        (converge_function::env::BACKEND, "cloud"),
        (converge_function::env::PROJECT, "\"my-project-id\""),
        (converge_function::env::BIGQUERY_DATASET, "\"converge\""),
    ] {
        assert!(yaml.contains(&format!("- name: {name}\n              value: {value}\n")), "{name}={value} missing:\n{yaml}");
    }
    for expected in [
        "run.googleapis.com/ingress: internal",
        "run.googleapis.com/invoker-iam-disabled: \"true\"",
        "serviceAccountName: converge-detectors@my-project-id.iam.gserviceaccount.com",
        "image: europe-west1-docker.pkg.dev/my-project-id/converge/detector-runner:",
    ] {
        assert!(yaml.contains(expected), "{expected:?} missing:\n{yaml}");
    }
}

/// The detector runner writes `orgs/{tenant}/opportunities/{id}`. On-write sync's
/// trigger must not deliver those writes, or sync would quarantine every one as
/// unroutable. It cannot: a trigger's collection segments are literal ids (no
/// wildcards) and each pattern must be a route of the mirror configuration, so the
/// triggers deploy.sh creates cover exactly the routed collections.
#[test]
fn sync_triggers_do_not_cover_the_opportunities_the_detector_runner_writes() {
    let (ok, out) = deploy(&repo().join("deploy/converge.env.example"));
    assert!(ok, "{out}");
    let patterns: Vec<&str> = out.lines().filter_map(|l| l.split("--event-filters-path-pattern=document=").nth(1)).map(|p| p.trim_end_matches(['\'', ' '])).collect();
    assert!(!patterns.is_empty(), "no trigger in:\n{out}");
    for pattern in &patterns {
        let segments: Vec<&str> = pattern.split('/').collect();
        for (i, segment) in segments.iter().enumerate() {
            if i % 2 == 0 {
                assert!(!segment.contains(['{', '*']), "{pattern}: a wildcard collection would cover opportunities");
                assert_ne!(*segment, converge_core::opportunity::OPPORTUNITIES_COLLECTION, "{pattern} covers opportunities");
            }
        }
    }
    // A wildcard collection is refused before anything runs.
    let example = read("deploy/converge.env.example");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wildcard.env");
    std::fs::write(&path, example.replace("TRIGGER_PATH_PATTERNS=\"orgs/{tenant}/records/{doc}\"", "TRIGGER_PATH_PATTERNS=\"orgs/{tenant}/{collection}/{doc}\"")).unwrap();
    let (ok, out) = deploy(&path);
    assert!(!ok && out.contains("expected a collection id (no wildcards)"), "{out}");
    assert!(!out.contains("+ gcloud"), "{out}");
}

/// The all-tenants listing of open opportunities is a collection-group query on
/// `status`: Firestore serves it only with that field's collection-group index.
#[test]
fn terraform_declares_the_collection_group_index_of_open_opportunities() {
    let tf = read("infra/firestore.tf");
    for expected in [
        format!("collection = \"{}\"", converge_core::opportunity::OPPORTUNITIES_COLLECTION),
        "field      = \"status\"".to_owned(),
        "query_scope = \"COLLECTION_GROUP\"".to_owned(),
        "query_scope = \"COLLECTION\"\n".to_owned(),
    ] {
        assert!(tf.contains(&expected), "infra/firestore.tf lacks {expected:?}:\n{tf}");
    }
}

/// infra/IAM.md (every Google API method each identity calls, and the permission it
/// needs) against the grants of `infra/*.tf` and of `deploy/deploy.sh`. The checker,
/// [`iam::check`], is a function over text, so the tests below also prove it can fail:
/// on copies of iam.tf with a grant removed, a broad role added, a grant kind it does
/// not know, and on a copy of the table with a function left out.
mod iam {
    use std::collections::{BTreeMap, BTreeSet};
    use std::fmt;

    use super::{deploy, read, repo};

    /// The member `infra/pubsub.tf` writes for Pub/Sub's service agent, and the table's
    /// name for it.
    const PUBSUB_AGENT: &str = "pubsub-service-agent";

    // --- Where a permission is needed, where a role is granted -----------------------

    /// A resource level. A grant on the project covers everything in it; any other grant
    /// covers exactly its own resource (the dataset's tables and views are the dataset's).
    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
    pub struct Level {
        kind: String,
        name: String,
    }

    /// Kinds the table may name; the first three are unique in a deployment and take no
    /// name.
    const LEVEL_KINDS: &[&str] = &["project", "dataset", "database", "topic", "subscription", "service", "secret", "service-account", "repository", "bucket"];

    impl Level {
        fn new(kind: &str, name: &str) -> Self {
            Level { kind: kind.to_owned(), name: name.to_owned() }
        }

        fn project() -> Self {
            Level::new("project", "")
        }

        /// `-` (no permission needed) is `None`.
        fn parse(cell: &str) -> Result<Option<Level>, String> {
            let text = cell.replace('`', "");
            let text = text.trim();
            if text == "-" {
                return Ok(None);
            }
            let (kind, name) = text.split_once(' ').map_or((text, ""), |(k, n)| (k, n.trim()));
            if !LEVEL_KINDS.contains(&kind) {
                return Err(format!("`on` is {text:?}: expected `-` or one of {} (with a name after all but the first three)", LEVEL_KINDS.join(", ")));
            }
            let unique = matches!(kind, "project" | "dataset" | "database");
            if unique != name.is_empty() {
                return Err(format!("`on` is {text:?}: {kind} {}", if unique { "takes no name" } else { "needs a name, e.g. `service converge-sync`" }));
            }
            Ok(Some(Level::new(kind, name)))
        }

        fn is_project(&self) -> bool {
            self.kind == "project"
        }

        fn covers(&self, other: &Level) -> bool {
            self.is_project() || self == other
        }
    }

    impl fmt::Display for Level {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self.kind.as_str() {
                "project" | "dataset" | "database" => write!(f, "the {}", self.kind),
                _ => write!(f, "{} {}", self.kind, self.name),
            }
        }
    }

    // --- What infra/IAM.md says --------------------------------------------------------

    /// One row of the calls table.
    #[derive(Debug, Clone)]
    pub struct Need {
        identities: Vec<String>,
        call: String,
        permissions: Vec<String>,
        level: Option<Level>,
        line: usize,
    }

    impl Need {
        /// The call's name, for messages: its cell up to the first ` (` or `: `.
        fn label(&self) -> String {
            let text = self.call.replace('`', "");
            let end = [text.find(" ("), text.find(": ")].into_iter().flatten().min().unwrap_or(text.len());
            text[..end].trim().to_owned()
        }
    }

    #[derive(Debug, Default)]
    pub struct Table {
        /// Identity → whether infra/ (Terraform, deploy.sh) makes its grants.
        identities: BTreeMap<String, bool>,
        /// `functions/<dir>` → its service account.
        functions: BTreeMap<String, String>,
        needs: Vec<Need>,
        /// Role → the permissions the calls need from it.
        roles: BTreeMap<String, BTreeSet<String>>,
        /// Every backticked `gcloud …` command of the calls table.
        gcloud: BTreeSet<String>,
    }

    const IDENTITIES_HEADER: &[&str] = &["identity", "what it is", "its grants come from"];
    const FUNCTIONS_HEADER: &[&str] = &["function", "service account", "code it runs"];
    const CALLS_HEADER: &[&str] = &["identity", "call", "Google API method", "permissions", "on"];
    const ROLES_HEADER: &[&str] = &["role", "permissions the calls above need from it", "also grants (unused by Converge)", "reference"];

    /// The cells of a Markdown table line, trimmed.
    fn cells(line: &str) -> Vec<String> {
        let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
        inner.split('|').map(|c| c.trim().to_owned()).collect()
    }

    /// A table's rows: (1-based line, cells).
    type Rows = Vec<(usize, Vec<String>)>;

    /// Every Markdown table of `text`: header cells and rows.
    fn md_tables(text: &str) -> Vec<(Vec<String>, Rows)> {
        let lines: Vec<&str> = text.lines().collect();
        let is_separator = |l: &str| l.trim().starts_with('|') && cells(l).iter().all(|c| !c.is_empty() && c.chars().all(|ch| matches!(ch, '-' | ':')));
        let mut tables = Vec::new();
        let mut i = 0;
        while i + 1 < lines.len() {
            if lines[i].trim().starts_with('|') && is_separator(lines[i + 1]) {
                let header = cells(lines[i]);
                let mut rows = Vec::new();
                let mut j = i + 2;
                while j < lines.len() && lines[j].trim().starts_with('|') {
                    rows.push((j + 1, cells(lines[j])));
                    j += 1;
                }
                tables.push((header, rows));
                i = j;
            } else {
                i += 1;
            }
        }
        tables
    }

    /// The backticked parts of a cell.
    fn ticks(cell: &str) -> Vec<String> {
        cell.split('`').skip(1).step_by(2).map(str::to_owned).collect()
    }

    /// `service.resource.verb`, as IAM writes permissions.
    fn is_permission(p: &str) -> bool {
        let parts: Vec<&str> = p.split('.').collect();
        parts.len() == 3 && parts[0].chars().all(|c| c.is_ascii_lowercase()) && parts.iter().all(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric()))
    }

    /// Parses the four tables of infra/IAM.md, strictly: a malformed row is an error
    /// naming its line, not a row skipped.
    pub fn parse_table(text: &str) -> Result<Table, Vec<String>> {
        let tables = md_tables(text);
        let mut errors = Vec::new();
        let mut find = |header: &[&str]| -> Rows {
            let found: Vec<_> = tables.iter().filter(|(h, _)| h.iter().map(String::as_str).eq(header.iter().copied())).collect();
            match found.as_slice() {
                [(_, rows)] => rows.clone(),
                [] => {
                    errors.push(format!("infra/IAM.md: no table with the header | {} |", header.join(" | ")));
                    Vec::new()
                }
                _ => {
                    errors.push(format!("infra/IAM.md: {} tables with the header | {} |, expected one", found.len(), header.join(" | ")));
                    Vec::new()
                }
            }
        };
        let (identity_rows, function_rows, call_rows, role_rows) = (find(IDENTITIES_HEADER), find(FUNCTIONS_HEADER), find(CALLS_HEADER), find(ROLES_HEADER));
        let mut table = Table::default();
        let mut row_error = |line: usize, what: String| errors.push(format!("infra/IAM.md line {line}: {what}"));
        for (line, row) in &identity_rows {
            match (row.len(), ticks(&row[0]).as_slice()) {
                (3, [identity]) => {
                    table.identities.insert(identity.clone(), row[2] == "infra");
                }
                _ => row_error(*line, "expected | `identity` | what it is | infra, or where its grants come from |".into()),
            }
        }
        for (line, row) in &function_rows {
            match (row.len(), ticks(&row[0]).as_slice(), ticks(&row[1]).as_slice()) {
                (3, [dir], [account]) if dir.starts_with("functions/") && table.identities.contains_key(account) => {
                    table.functions.insert(dir.clone(), account.clone());
                }
                _ => row_error(*line, "expected | `functions/<dir>` | `<service account listed under Identities>` | code |".into()),
            }
        }
        for (line, row) in &call_rows {
            if row.len() != 5 {
                row_error(*line, format!("expected 5 cells ({}), found {}", CALLS_HEADER.join(", "), row.len()));
                continue;
            }
            let identities = ticks(&row[0]);
            let unknown: Vec<&String> = identities.iter().filter(|i| !table.identities.contains_key(*i)).collect();
            if identities.is_empty() || !unknown.is_empty() {
                row_error(*line, format!("identities {unknown:?} are not in the Identities table (the cell names them in backticks)"));
                continue;
            }
            let permissions = if row[3] == "none" { Vec::new() } else { ticks(&row[3]) };
            if row[3] != "none" && (permissions.is_empty() || permissions.iter().any(|p| !is_permission(p))) {
                row_error(*line, format!("permissions cell {:?}: expected `service.resource.verb` in backticks, or none", row[3]));
                continue;
            }
            let level = match Level::parse(&row[4]) {
                Ok(level) => level,
                Err(e) => {
                    row_error(*line, e);
                    continue;
                }
            };
            if level.is_none() != permissions.is_empty() {
                row_error(*line, "a row needs permissions and a level (`on`), or `none` and `-`".into());
                continue;
            }
            table.gcloud.extend(ticks(&row[1]).into_iter().filter(|t| t.starts_with("gcloud ")));
            table.needs.push(Need { identities, call: row[1].clone(), permissions, level, line: *line });
        }
        for (line, row) in &role_rows {
            let permissions: BTreeSet<String> = if row.len() == 4 { ticks(&row[1]).into_iter().collect() } else { BTreeSet::new() };
            match (row.len(), ticks(&row[0]).as_slice()) {
                // The reference is Google's role page: the offline copy must say where it is from.
                (4, [role]) if role.starts_with("roles/") && !permissions.is_empty() && permissions.iter().all(|p| is_permission(p)) && row[3].contains("https://cloud.google.com/iam/docs/roles-permissions/") => {
                    if table.roles.insert(role.clone(), permissions).is_some() {
                        row_error(*line, format!("`{role}` is described twice"));
                    }
                }
                _ => row_error(*line, "expected | `roles/…` | `permission`, … | other permissions | <https://cloud.google.com/iam/docs/roles-permissions/…> |".into()),
            }
        }
        if errors.is_empty() {
            Ok(table)
        } else {
            Err(errors)
        }
    }

    // --- Reading Terraform: a small scanner for the HCL our files use ---------------------

    #[derive(Debug, Clone)]
    struct Block {
        kind: String,
        labels: Vec<String>,
        items: Vec<Item>,
    }

    /// What a block body holds directly: `key = expression` and nested blocks.
    #[derive(Debug, Clone)]
    enum Item {
        Attr(String, String),
        Block(Block),
    }

    impl Block {
        fn attr(&self, key: &str) -> Option<&str> {
            self.items.iter().find_map(|item| match item {
                Item::Attr(k, v) if k == key => Some(v.as_str()),
                _ => None,
            })
        }

        fn block(&self, kind: &str) -> Option<&Block> {
            self.items.iter().find_map(|item| match item {
                Item::Block(b) if b.kind == kind => Some(b),
                _ => None,
            })
        }
    }

    struct Scanner {
        chars: Vec<char>,
        pos: usize,
    }

    impl Scanner {
        fn new(text: &str) -> Self {
            Scanner { chars: text.chars().collect(), pos: 0 }
        }

        fn peek(&self, ahead: usize) -> Option<char> {
            self.chars.get(self.pos + ahead).copied()
        }

        fn starts_with(&self, s: &str) -> bool {
            s.chars().enumerate().all(|(i, c)| self.peek(i) == Some(c))
        }

        fn error<T>(&self, what: &str) -> Result<T, String> {
            let line = self.chars[..self.pos.min(self.chars.len())].iter().filter(|c| **c == '\n').count() + 1;
            Err(format!("line {line}: {what}"))
        }

        /// Skips a comment at the cursor (`#`, `//` to the end of the line, `/* */`).
        fn comment(&mut self) -> bool {
            if self.peek(0) == Some('#') || self.starts_with("//") {
                while self.peek(0).is_some_and(|c| c != '\n') {
                    self.pos += 1;
                }
                true
            } else if self.starts_with("/*") {
                while self.peek(0).is_some() && !self.starts_with("*/") {
                    self.pos += 1;
                }
                self.pos = (self.pos + 2).min(self.chars.len());
                true
            } else {
                false
            }
        }

        /// Whitespace, newlines and comments.
        fn trivia(&mut self) {
            loop {
                if self.peek(0).is_some_and(char::is_whitespace) {
                    self.pos += 1;
                } else if !self.comment() {
                    return;
                }
            }
        }

        /// A quoted string, templates (`${…}`, `%{…}`) and escapes included.
        fn string(&mut self) -> Result<(), String> {
            self.pos += 1;
            loop {
                match self.peek(0) {
                    None | Some('\n') => return self.error("unterminated string"),
                    Some('\\') => self.pos += 2,
                    Some('"') => {
                        self.pos += 1;
                        return Ok(());
                    }
                    Some('$' | '%') if self.peek(1) == Some('{') => {
                        self.pos += 1;
                        self.balanced()?;
                    }
                    Some(_) => self.pos += 1,
                }
            }
        }

        /// `<<EOT` / `<<-EOT` … `EOT`.
        fn heredoc(&mut self) -> Result<(), String> {
            self.pos += 2;
            if self.peek(0) == Some('-') {
                self.pos += 1;
            }
            let start = self.pos;
            while self.peek(0).is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                self.pos += 1;
            }
            let marker: String = self.chars[start..self.pos].iter().collect();
            if marker.is_empty() {
                return self.error("heredoc without a marker");
            }
            loop {
                while self.peek(0).is_some_and(|c| c != '\n') {
                    self.pos += 1;
                }
                if self.peek(0).is_none() {
                    return self.error("unterminated heredoc");
                }
                self.pos += 1;
                let line_start = self.pos;
                while self.peek(0).is_some_and(|c| c != '\n') {
                    self.pos += 1;
                }
                let line: String = self.chars[line_start..self.pos].iter().collect();
                if line.trim() == marker {
                    return Ok(());
                }
            }
        }

        /// From an opening bracket to its match, over strings, heredocs and comments.
        /// Returns the text between them.
        fn balanced(&mut self) -> Result<String, String> {
            let open = self.peek(0);
            let close = match open {
                Some('{') => '}',
                Some('[') => ']',
                Some('(') => ')',
                _ => return self.error("expected an opening bracket"),
            };
            self.pos += 1;
            let start = self.pos;
            loop {
                match self.peek(0) {
                    None => return self.error(&format!("no closing {close:?}")),
                    Some(c) if c == close => {
                        let inner: String = self.chars[start..self.pos].iter().collect();
                        self.pos += 1;
                        return Ok(inner);
                    }
                    Some('"') => self.string()?,
                    Some('{' | '[' | '(') => {
                        self.balanced()?;
                    }
                    Some('<') if self.starts_with("<<") => self.heredoc()?,
                    Some('#' | '/') if self.comment() => {}
                    Some(_) => self.pos += 1,
                }
            }
        }

        /// An attribute's expression: up to the end of its line, brackets spanning lines.
        fn expression(&mut self) -> Result<String, String> {
            let start = self.pos;
            let mut end = self.pos;
            loop {
                match self.peek(0) {
                    None | Some('\n') => break,
                    Some('"') => self.string()?,
                    Some('{' | '[' | '(') => {
                        self.balanced()?;
                    }
                    Some('<') if self.starts_with("<<") => self.heredoc()?,
                    Some('#' | '/') if self.comment() => continue,
                    Some(_) => self.pos += 1,
                }
                end = self.pos;
            }
            Ok(self.chars[start..end].iter().collect::<String>().trim().to_owned())
        }

        fn identifier(&mut self) -> String {
            let start = self.pos;
            while self.peek(0).is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                self.pos += 1;
            }
            self.chars[start..self.pos].iter().collect()
        }

        /// The items of a body (or of a whole file).
        fn items(&mut self) -> Result<Vec<Item>, String> {
            let mut items = Vec::new();
            loop {
                self.trivia();
                if self.peek(0).is_none() {
                    return Ok(items);
                }
                let key = self.identifier();
                if key.is_empty() {
                    return self.error(&format!("expected an attribute or a block, found {:?}", self.peek(0).unwrap()));
                }
                while self.peek(0).is_some_and(|c| c == ' ' || c == '\t') {
                    self.pos += 1;
                }
                if self.peek(0) == Some('=') && self.peek(1) != Some('=') {
                    self.pos += 1;
                    while self.peek(0).is_some_and(|c| c == ' ' || c == '\t') {
                        self.pos += 1;
                    }
                    let value = self.expression()?;
                    items.push(Item::Attr(key, value));
                    continue;
                }
                let mut labels = Vec::new();
                while self.peek(0) == Some('"') {
                    let start = self.pos + 1;
                    self.string()?;
                    labels.push(self.chars[start..self.pos - 1].iter().collect());
                    while self.peek(0).is_some_and(|c| c == ' ' || c == '\t') {
                        self.pos += 1;
                    }
                }
                if self.peek(0) != Some('{') {
                    return self.error(&format!("`{key}`: expected `=` or a block"));
                }
                let body = self.balanced()?;
                let inner = Scanner::new(&body).items().map_err(|e| format!("in {key} {labels:?}: {e}"))?;
                items.push(Item::Block(Block { kind: key, labels, items: inner }));
            }
        }
    }

    /// `"text"` without templates, unescaped.
    fn string_literal(expr: &str) -> Option<String> {
        let inner = expr.strip_prefix('"')?.strip_suffix('"')?;
        (!inner.contains("${") && !inner.contains("%{")).then(|| inner.replace("\\\"", "\"").replace("\\\\", "\\"))
    }

    /// `{ "key" = "value" … }` → its entries, in order of keys.
    fn map_literal(expr: &str) -> Result<BTreeMap<String, String>, String> {
        let inner = expr.trim().strip_prefix('{').and_then(|e| e.strip_suffix('}')).ok_or_else(|| format!("expected a map literal, found {expr:?}"))?;
        let mut map = BTreeMap::new();
        for line in inner.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let (key, value) = line.split_once('=').ok_or_else(|| format!("map entry {line:?}: expected \"key\" = \"value\""))?;
            let value = value.split(" #").next().unwrap_or(value).trim().trim_end_matches(',');
            match (string_literal(key.trim()), string_literal(value)) {
                (Some(k), Some(v)) => {
                    map.insert(k, v);
                }
                _ => return Err(format!("map entry {line:?}: expected \"key\" = \"value\" (string literals)")),
            }
        }
        Ok(map)
    }

    fn collapse(expr: &str) -> String {
        expr.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    // --- What infra/ grants -------------------------------------------------------------

    /// One role granted to one identity on one resource.
    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
    pub struct Grant {
        identity: String,
        role: String,
        level: Level,
        /// Where it is made, for messages.
        origin: String,
    }

    /// A state of the deployment the grants depend on: `var.services` and
    /// `var.deployed_services`.
    #[derive(Debug, Clone)]
    struct Scenario {
        name: &'static str,
        services: BTreeSet<String>,
        deployed: BTreeSet<String>,
    }

    /// The resources and locals of `infra/*.tf`.
    struct Terraform {
        resources: Vec<(String, Block)>,
        locals: BTreeMap<String, String>,
        /// Service accounts the files create, by resource name → account ids.
        accounts: BTreeMap<String, Vec<String>>,
    }

    impl Terraform {
        fn parse(files: &[(String, String)]) -> Result<Terraform, Vec<String>> {
            let mut errors = Vec::new();
            let mut tf = Terraform { resources: Vec::new(), locals: BTreeMap::new(), accounts: BTreeMap::new() };
            for (file, text) in files {
                let items = match Scanner::new(text).items() {
                    Ok(items) => items,
                    Err(e) => {
                        errors.push(format!("{file}: {e}"));
                        continue;
                    }
                };
                for item in items {
                    match item {
                        Item::Block(b) if b.kind == "resource" && b.labels.len() == 2 => tf.resources.push((file.clone(), b)),
                        Item::Block(b) if b.kind == "locals" => {
                            for item in b.items {
                                if let Item::Attr(k, v) = item {
                                    tf.locals.insert(k, v);
                                }
                            }
                        }
                        Item::Block(_) => {}
                        Item::Attr(k, _) => errors.push(format!("{file}: top-level attribute `{k}`")),
                    }
                }
            }
            for (file, b) in tf.resources.iter().filter(|(_, b)| b.labels[0] == "google_service_account") {
                let ids = match (b.attr("for_each"), b.attr("account_id")) {
                    (None, Some(id)) => string_literal(id).map(|id| vec![id]),
                    (Some(each), Some("each.key")) => each.strip_prefix("local.").and_then(|l| tf.locals.get(l)).and_then(|m| map_literal(m).ok()).map(|m| m.into_keys().collect()),
                    _ => None,
                };
                match ids {
                    Some(ids) => {
                        tf.accounts.insert(b.labels[1].clone(), ids);
                    }
                    None => errors.push(format!(
                        "{file}: google_service_account.{}: expected account_id = \"<id>\", or for_each = local.<map> with account_id = each.key",
                        b.labels[1]
                    )),
                }
            }
            if errors.is_empty() {
                Ok(tf)
            } else {
                Err(errors)
            }
        }

        fn resource(&self, kind: &str, name: &str) -> Option<&Block> {
            self.resources.iter().map(|(_, b)| b).find(|b| b.labels[0] == kind && b.labels[1] == name)
        }

        /// The name attribute (`attr`) of the resource an expression such as
        /// `google_pubsub_topic.dead_letter.id` or `google_secret_manager_secret.x[0].id`
        /// refers to.
        fn referenced_name(&self, expr: &str, kind: &str, attr: &str) -> Result<String, String> {
            let rest = expr.strip_prefix(&format!("{kind}.")).ok_or_else(|| format!("expected a reference to a {kind}, found {expr:?}"))?;
            let name = rest.split(['.', '[']).next().unwrap_or_default();
            let suffix = &rest[name.len()..];
            if !matches!(suffix, ".id" | ".name" | "[0].id" | "[0].name") {
                return Err(format!("{expr:?}: expected {kind}.<name>.id or .name"));
            }
            let block = self.resource(kind, name).ok_or_else(|| format!("{expr:?}: no resource {kind}.{name} in infra/"))?;
            block.attr(attr).and_then(string_literal).ok_or_else(|| format!("{kind}.{name}: expected a literal {attr}"))
        }

        /// A `local.<name>` that is a map literal.
        fn local_map(&self, name: &str) -> Result<BTreeMap<String, String>, String> {
            let expr = self.locals.get(name).ok_or_else(|| format!("local.{name} is not defined"))?;
            map_literal(expr).map_err(|e| format!("local.{name}: {e}"))
        }

        /// The invoker locals of iam.tf, evaluated for `scenario`. The checker models
        /// their expressions; it refuses to guess if they change.
        fn invokers(&self, which: &str, scenario: &Scenario) -> Result<Vec<(String, String)>, String> {
            let expected = [
                ("invoked", "{ for svc, sa in local.invoked_by : svc => sa if contains(var.services, svc) }"),
                ("project_invokers", "toset([for svc, sa in local.invoked : sa if !contains(var.deployed_services, svc)])"),
                ("service_invokers", "{ for svc, sa in local.invoked : svc => sa if contains(var.deployed_services, svc) }"),
            ];
            for (name, text) in expected {
                let found = self.locals.get(name).map(|e| collapse(e)).unwrap_or_default();
                if found != text {
                    return Err(format!(
                        "local.{name} is `{found}`; the checker models it as `{text}`: update the model in tests/tests/infra.rs (mod iam, Terraform::invokers) with the new expression"
                    ));
                }
            }
            let invoked: Vec<(String, String)> = self.local_map("invoked_by")?.into_iter().filter(|(svc, _)| scenario.services.contains(svc)).collect();
            Ok(match which {
                "project_invokers" => invoked
                    .iter()
                    .filter(|(svc, _)| !scenario.deployed.contains(svc))
                    .map(|(_, sa)| (sa.clone(), sa.clone()))
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect(),
                _ => invoked.into_iter().filter(|(svc, _)| scenario.deployed.contains(svc)).collect(),
            })
        }

        /// The instances of a resource: `(each.key, each.value)`, or one without `each`.
        fn instances(&self, block: &Block, scenario: &Scenario) -> Result<Vec<Option<(String, String)>>, String> {
            let Some(expr) = block.attr("for_each") else { return Ok(vec![None]) };
            // `var.flag ? <expr> : {}`: checked as if the feature were on.
            let expr = match expr.split_once(" ? ") {
                Some((cond, rest)) if cond.starts_with("var.") && rest.trim_end().ends_with(": {}") => rest.trim_end().trim_end_matches(": {}").trim(),
                Some(_) => return Err(format!("for_each = {expr}: the checker reads `var.<flag> ? <expression> : {{}}` only")),
                None => expr,
            };
            let entries = match expr.strip_prefix("local.") {
                Some(which @ ("project_invokers" | "service_invokers")) => self.invokers(which, scenario)?,
                Some(name) => self.local_map(name)?.into_iter().collect(),
                None => return Err(format!("for_each = {expr}: the checker reads for_each over a local map (or the invoker locals) only")),
            };
            Ok(entries.into_iter().map(Some).collect())
        }

        /// Evaluates a role or a resource name: a literal, `each.key` or `each.value`.
        fn value(expr: &str, each: &Option<(String, String)>) -> Result<String, String> {
            match (expr, each) {
                ("each.key", Some((k, _))) => Ok(k.clone()),
                ("each.value", Some((_, v))) => Ok(v.clone()),
                _ => string_literal(expr).ok_or_else(|| format!("{expr:?}: expected a string literal, each.key or each.value")),
            }
        }

        /// The identity a `member` expression names.
        fn member(&self, expr: &str, each: &Option<(String, String)>) -> Result<String, String> {
            if let Some(name) = expr.strip_prefix("google_service_account.").and_then(|r| r.strip_suffix(".member")) {
                return match (name.split_once('['), each) {
                    (Some((resource, "each.key]")), Some((key, _))) => match self.accounts.get(resource) {
                        Some(ids) if ids.contains(key) => Ok(key.clone()),
                        _ => Err(format!("{expr}: google_service_account.{resource} creates no account {key:?}")),
                    },
                    (None, _) => match self.accounts.get(name).map(Vec::as_slice) {
                        Some([id]) => Ok(id.clone()),
                        _ => Err(format!("{expr}: no single google_service_account.{name}")),
                    },
                    _ => Err(format!("{expr}: expected google_service_account.<name>.member or google_service_account.<name>[each.key].member")),
                };
            }
            match (expr, each) {
                ("\"serviceAccount:${each.value}@${var.project}.iam.gserviceaccount.com\"", Some((_, v))) => Ok(v.clone()),
                ("\"serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com\"", _) => Ok(PUBSUB_AGENT.to_owned()),
                _ => Err(format!("member = {expr}: the checker knows service account resources, \"serviceAccount:${{each.value}}@${{var.project}}.iam.gserviceaccount.com\" and Pub/Sub's service agent only")),
            }
        }

        /// Where a grant resource grants.
        fn level(&self, block: &Block, each: &Option<(String, String)>) -> Result<Level, String> {
            let attr = |key: &str| block.attr(key).ok_or_else(|| format!("no `{key}`"));
            match block.labels[0].as_str() {
                "google_project_iam_member" => match block.block("condition") {
                    None => Ok(Level::project()),
                    Some(condition) => {
                        let expression = condition.attr("expression").unwrap_or_default();
                        let database = self.locals.get("firestore_resource").map(String::as_str);
                        if expression == r#""resource.name == \"${local.firestore_resource}\"""#
                            && database == Some("\"projects/${var.project}/databases/${var.firestore_database}\"")
                        {
                            Ok(Level::new("database", ""))
                        } else {
                            Err(format!("condition {expression}: the checker knows `resource.name == \"${{local.firestore_resource}}\"` (the Firestore database) only"))
                        }
                    }
                },
                "google_bigquery_dataset_iam_member" => match attr("dataset_id")? {
                    "google_bigquery_dataset.converge.dataset_id" if self.resource("google_bigquery_dataset", "converge").is_some() => Ok(Level::new("dataset", "")),
                    other => Err(format!("dataset_id = {other}: expected google_bigquery_dataset.converge.dataset_id (Converge's dataset)")),
                },
                "google_pubsub_topic_iam_member" => Ok(Level::new("topic", &self.referenced_name(attr("topic")?, "google_pubsub_topic", "name")?)),
                "google_pubsub_subscription_iam_member" => Ok(Level::new("subscription", &self.referenced_name(attr("subscription")?, "google_pubsub_subscription", "name")?)),
                "google_cloud_run_v2_service_iam_member" => Ok(Level::new("service", &Self::value(attr("name")?, each)?)),
                "google_secret_manager_secret_iam_member" => Ok(Level::new("secret", &self.referenced_name(attr("secret_id")?, "google_secret_manager_secret", "secret_id")?)),
                other => Err(format!("{other} is a grant the checker does not read")),
            }
        }

        /// Every grant of `infra/*.tf` in `scenario`, or why the checker cannot tell.
        fn grants(&self, scenario: &Scenario) -> (Vec<Grant>, Vec<String>) {
            const READ: &[&str] = &[
                "google_project_iam_member",
                "google_bigquery_dataset_iam_member",
                "google_pubsub_topic_iam_member",
                "google_pubsub_subscription_iam_member",
                "google_cloud_run_v2_service_iam_member",
                "google_secret_manager_secret_iam_member",
            ];
            let (mut grants, mut errors) = (Vec::new(), Vec::new());
            for (file, block) in &self.resources {
                let (kind, name) = (block.labels[0].as_str(), block.labels[1].as_str());
                let grants_access = kind.contains("_iam_") || kind.ends_with("_access") || (kind == "google_bigquery_dataset" && block.block("access").is_some());
                if !READ.contains(&kind) {
                    if grants_access {
                        errors.push(format!(
                            "{file}: {kind}.{name} grants access in a way the IAM checker does not read (it reads {}): use one of those, or teach tests/tests/infra.rs (mod iam, Terraform::level) the new kind",
                            READ.join(", ")
                        ));
                    }
                    continue;
                }
                let instances = match self.instances(block, scenario) {
                    Ok(instances) => instances,
                    Err(e) => {
                        errors.push(format!("{file}: {kind}.{name}: {e}"));
                        continue;
                    }
                };
                for each in instances {
                    let origin = match &each {
                        Some((key, _)) => format!("{file}: {kind}.{name}[\"{key}\"]"),
                        None => format!("{file}: {kind}.{name}"),
                    };
                    let grant = (|| -> Result<Grant, String> {
                        let role = Self::value(block.attr("role").ok_or("no `role`")?, &each)?;
                        let identity = self.member(block.attr("member").ok_or("no `member`")?, &each)?;
                        Ok(Grant { identity, role, level: self.level(block, &each)?, origin: origin.clone() })
                    })();
                    match grant {
                        Ok(grant) => grants.push(grant),
                        Err(e) => errors.push(format!("{origin}: {e}")),
                    }
                }
            }
            (grants, errors)
        }
    }

    /// Grants `deploy/deploy.sh` makes (its dry run prints every command): on resources
    /// that exist only once it ran, such as each trigger's subscription. Bindings for
    /// people (printed for `REBUILD_CALLERS`) are not identities of the table.
    fn deploy_grants(dry_run: &str, table: &Table) -> (Vec<Grant>, Vec<String>) {
        let (mut grants, mut errors) = (Vec::new(), Vec::new());
        for line in dry_run.lines().filter(|l| l.starts_with("+ gcloud ") && l.contains(" add-iam-policy-binding ")) {
            let words: Vec<&str> = line.split_whitespace().collect();
            let at = words.iter().position(|w| *w == "add-iam-policy-binding").expect("filtered on it");
            let kind = words[2..at].join(" ");
            let resource = words.get(at + 1).copied().unwrap_or_default();
            let flag = |name: &str| words.iter().find_map(|w| w.strip_prefix(name)).unwrap_or_default();
            let member = flag("--member=");
            let identity = match member.strip_prefix("serviceAccount:").and_then(|email| email.split_once('@')) {
                Some((local, "gcp-sa-pubsub.iam.gserviceaccount.com")) if local.starts_with("service-") => PUBSUB_AGENT.to_owned(),
                Some((local, domain)) if domain.ends_with(".iam.gserviceaccount.com") && table.identities.contains_key(local) => local.to_owned(),
                _ => continue,
            };
            let name = resource.rsplit('/').next().unwrap_or(resource);
            let level = match kind.as_str() {
                "pubsub subscriptions" if name.starts_with("eventarc-") => Level::new("subscription", "eventarc-*"),
                "pubsub subscriptions" => Level::new("subscription", name),
                "run services" => Level::new("service", name),
                "projects" => Level::project(),
                _ => {
                    errors.push(format!("deploy/deploy.sh: `gcloud {kind} add-iam-policy-binding` for {identity}: the IAM checker does not know where that grants"));
                    continue;
                }
            };
            grants.push(Grant { identity, role: flag("--role=").to_owned(), level, origin: format!("deploy/deploy.sh: gcloud {kind} add-iam-policy-binding {name}") });
        }
        (grants, errors)
    }

    // --- The check --------------------------------------------------------------------

    /// The text the checker reads.
    pub struct Inputs<'a> {
        /// infra/IAM.md.
        pub table: &'a str,
        /// Every `infra/*.tf`: (path, text).
        pub terraform: &'a [(String, String)],
        /// `DRY_RUN=1 bash deploy/deploy.sh` output.
        pub deploy_dry_run: &'a str,
        /// Every directory under `functions/`, as `functions/<dir>`.
        pub function_dirs: &'a [String],
    }

    /// Every disagreement between the table and the grants; empty when they agree. Each
    /// problem says what was expected, what was found, and what to change.
    pub fn check(inputs: &Inputs<'_>) -> Vec<String> {
        let table = match parse_table(inputs.table) {
            Ok(table) => table,
            Err(errors) => return errors,
        };
        let tf = match Terraform::parse(inputs.terraform) {
            Ok(tf) => tf,
            Err(errors) => return errors,
        };
        let mut problems = coverage(&table, &tf, inputs.function_dirs);
        // Invoker grants depend on which services exist: check before the first
        // deployment (none yet) and after it (all of them).
        let services: BTreeSet<String> = table.functions.values().cloned().collect();
        let scenarios = [
            Scenario { name: "before the first deployment", services: services.clone(), deployed: BTreeSet::new() },
            Scenario { name: "after the first deployment", services: services.clone(), deployed: services },
        ];
        let mut per_scenario: Vec<BTreeSet<String>> = Vec::new();
        let mut granted_roles = BTreeSet::new();
        for scenario in &scenarios {
            let (mut grants, mut errors) = tf.grants(scenario);
            let (deployed, deploy_errors) = deploy_grants(inputs.deploy_dry_run, &table);
            grants.extend(deployed);
            errors.extend(deploy_errors);
            granted_roles.extend(grants.iter().map(|g| g.role.clone()));
            errors.extend(check_grants(&table, &grants, scenario));
            per_scenario.push(errors.into_iter().collect());
        }
        // A problem of both states is stated once; one of a single state names it.
        for (i, scenario) in scenarios.iter().enumerate() {
            for problem in &per_scenario[i] {
                if per_scenario.iter().all(|set| set.contains(problem)) {
                    problems.insert(problem.clone());
                } else {
                    problems.insert(format!("[{}] {problem}", scenario.name));
                }
            }
        }
        // The role table lists only what the calls need, and only roles infra/ grants.
        let needed: BTreeSet<&String> = table.needs.iter().flat_map(|n| &n.permissions).collect();
        for (role, permissions) in &table.roles {
            for p in permissions.iter().filter(|p| !needed.contains(p)) {
                problems.insert(format!("infra/IAM.md's role table lists `{p}` for `{role}`, but no call in the calls table needs it: remove it from the role's row"));
            }
            if !granted_roles.contains(role) {
                problems.insert(format!("infra/IAM.md describes `{role}`, which infra/ grants to nobody: remove its row (or the grant went missing)"));
            }
        }
        problems.into_iter().collect()
    }

    /// Every function, every service account of iam.tf and every identity of the table
    /// accounted for on both sides.
    fn coverage(table: &Table, tf: &Terraform, function_dirs: &[String]) -> BTreeSet<String> {
        let mut problems = BTreeSet::new();
        for dir in function_dirs.iter().filter(|d| !table.functions.contains_key(*d)) {
            problems.insert(format!("{dir} exists, but infra/IAM.md's Functions table does not list it: add | `{dir}` | `<its service account>` | … | and the rows of its calls"));
        }
        for dir in table.functions.keys().filter(|d| !function_dirs.contains(d)) {
            problems.insert(format!("infra/IAM.md lists {dir}, but there is no such directory: remove its row"));
        }
        let function_accounts: BTreeSet<&String> = tf.accounts.get("function").map(|ids| ids.iter().collect()).unwrap_or_default();
        let table_accounts: BTreeSet<&String> = table.functions.values().collect();
        for sa in function_accounts.difference(&table_accounts) {
            problems.insert(format!("infra/iam.tf creates the function service account {sa} (local.functions), but no function in infra/IAM.md runs as it"));
        }
        for sa in table_accounts.difference(&function_accounts) {
            problems.insert(format!("infra/IAM.md runs a function as {sa}, but infra/iam.tf's local.functions does not create it"));
        }
        let created: BTreeSet<&String> = tf.accounts.values().flatten().collect();
        for sa in &created {
            if table.identities.get(*sa) != Some(&true) {
                problems.insert(format!("infra/iam.tf creates the service account {sa}, but infra/IAM.md's Identities table does not list it with grants from infra: add it, and the rows of its calls"));
            }
        }
        for (identity, _) in table.identities.iter().filter(|(_, infra)| **infra) {
            if !table.needs.iter().any(|n| n.identities.contains(identity)) {
                problems.insert(format!("infra/IAM.md lists {identity}, but no row of the calls table says what it calls"));
            }
            if identity != PUBSUB_AGENT && !created.contains(identity) {
                problems.insert(format!("infra/IAM.md says infra/ grants {identity}'s roles, but infra/*.tf creates no such service account"));
            }
        }
        problems
    }

    /// (a) every permission a call needs is granted where it is needed; (b) every grant
    /// supplies something its holder needs where it is granted; (c) every granted role is
    /// described.
    fn check_grants(table: &Table, grants: &[Grant], scenario: &Scenario) -> Vec<String> {
        let mut problems = Vec::new();
        let supplies = |g: &Grant, permission: &str| table.roles.get(&g.role).is_some_and(|ps| ps.contains(permission));
        // A service that is not deployed yet cannot carry a binding: its invoker is
        // granted on the project meanwhile (infra/iam.tf, local.project_invokers).
        let not_yet = |level: &Level| level.kind == "service" && scenario.services.contains(&level.name) && !scenario.deployed.contains(&level.name);
        let describe = |identity: &str| -> String {
            let held: Vec<String> = grants.iter().filter(|g| g.identity == identity).map(|g| format!("`{}` on {}", g.role, g.level)).collect();
            if held.is_empty() {
                "no grant at all".to_owned()
            } else {
                held.join(", ")
            }
        };
        for need in &table.needs {
            let Some(level) = &need.level else { continue };
            for identity in need.identities.iter().filter(|i| table.identities.get(*i) == Some(&true)) {
                for permission in &need.permissions {
                    if grants.iter().any(|g| &g.identity == identity && g.level.covers(level) && supplies(g, permission)) {
                        continue;
                    }
                    let roles: Vec<String> = table.roles.iter().filter(|(_, ps)| ps.contains(permission)).map(|(r, _)| format!("`{r}`")).collect();
                    problems.push(format!(
                        "{identity} lacks `{permission}` on {level}, which it needs for {} (infra/IAM.md line {}). Found for {identity}: {}. Expected: a role with `{permission}` granted on {level}{}; roles in the table that carry it: {}. Add the grant to infra/iam.tf, or remove the row if the code no longer makes the call",
                        need.label(),
                        need.line,
                        describe(identity),
                        if level.is_project() { "" } else { " (or the project)" },
                        if roles.is_empty() { "none yet (describe one)".to_owned() } else { roles.join(", ") }
                    ));
                }
            }
        }
        for g in grants {
            match table.identities.get(&g.identity) {
                None => {
                    problems.push(format!("{} grants `{}` to {}, which infra/IAM.md's Identities table does not list: add the identity and its calls, or remove the grant", g.origin, g.role, g.identity));
                    continue;
                }
                Some(false) => problems.push(format!("{} grants `{}` to {}, whose grants infra/IAM.md says come from outside infra/: fix the Identities table or remove the grant", g.origin, g.role, g.identity)),
                Some(true) => {}
            }
            let described = table.roles.get(&g.role);
            if described.is_none() {
                problems.push(format!(
                    "{} grants `{}` to {} on {}, but infra/IAM.md's role table does not describe `{}`: add its row (the permissions the calls need from it, and its reference page), or remove the grant",
                    g.origin, g.role, g.identity, g.level, g.role
                ));
            }
            let mine: Vec<(&Level, &String)> = table
                .needs
                .iter()
                .filter(|n| n.identities.contains(&g.identity))
                .filter_map(|n| n.level.as_ref().map(|l| (l, &n.permissions)))
                .flat_map(|(l, ps)| ps.iter().map(move |p| (l, p)))
                .collect();
            let useful = mine.iter().any(|(level, p)| {
                described.is_some_and(|ps| ps.contains(*p)) && if g.level.is_project() { level.is_project() || not_yet(level) } else { g.level.covers(level) }
            });
            if useful {
                continue;
            }
            if g.level.is_project() {
                let at_project: BTreeSet<&str> = mine.iter().filter(|(l, _)| l.is_project()).map(|(_, p)| p.as_str()).collect();
                let elsewhere: BTreeSet<String> = mine.iter().filter(|(_, p)| described.is_some_and(|ps| ps.contains(*p))).map(|(l, _)| l.to_string()).collect();
                problems.push(format!(
                    "unneeded project-wide role: {} grants `{}` to {} on the whole project, but none of the permissions {} needs at project level ({}) comes from it{}. Remove it from infra/iam.tf{}",
                    g.origin,
                    g.role,
                    g.identity,
                    g.identity,
                    if at_project.is_empty() { "none".to_owned() } else { at_project.into_iter().collect::<Vec<_>>().join(", ") },
                    if elsewhere.is_empty() { String::new() } else { format!("; what it supplies that {} needs is needed on {} only", g.identity, elsewhere.into_iter().collect::<Vec<_>>().join(", ")) },
                    if described.is_none() { "" } else { ", or grant it where the need is" }
                ));
            } else {
                problems.push(format!(
                    "unneeded grant: {} grants `{}` to {} on {}, but no call of {} in infra/IAM.md needs any of its permissions there: remove the grant, or add the call that needs it",
                    g.origin, g.role, g.identity, g.level, g.identity
                ));
            }
        }
        problems
    }

    // --- Inputs from the repository -----------------------------------------------------

    fn terraform_files() -> Vec<(String, String)> {
        let mut paths: Vec<String> = std::fs::read_dir(repo().join("infra"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tf"))
            .map(|n| format!("infra/{n}"))
            .collect();
        paths.sort();
        paths.into_iter().map(|p| (p.clone(), read(&p))).collect()
    }

    fn function_dirs() -> Vec<String> {
        let mut dirs: Vec<String> = std::fs::read_dir(repo().join("functions"))
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().unwrap().is_dir())
            .map(|e| format!("functions/{}", e.file_name().to_string_lossy()))
            .collect();
        dirs.sort();
        dirs
    }

    fn dry_run() -> String {
        let (ok, out) = deploy(&repo().join("deploy/converge.env.example"));
        assert!(ok, "deploy dry run failed:\n{out}");
        out
    }

    /// Runs the checker on the repository's files, with `edit` applied to (path, text).
    fn check_with(edit: impl Fn(&str, String) -> String, dry_run: &str) -> Vec<String> {
        let table = edit("infra/IAM.md", read("infra/IAM.md"));
        let terraform: Vec<(String, String)> = terraform_files().into_iter().map(|(p, t)| (p.clone(), edit(&p, t))).collect();
        check(&Inputs { table: &table, terraform: &terraform, deploy_dry_run: dry_run, function_dirs: &function_dirs() })
    }

    /// `text` without the resource block `resource "<kind>" "<name>" { … }` (iam.tf is
    /// `terraform fmt`ed: a top-level block ends with `}` alone on its line).
    fn without_resource(text: &str, kind: &str, name: &str) -> String {
        let head = format!("resource \"{kind}\" \"{name}\" {{");
        let start = text.find(&head).unwrap_or_else(|| panic!("no {kind}.{name} in the text"));
        let end = start + text[start..].find("\n}\n").expect("a block ending in a `}` line") + 3;
        format!("{}{}", &text[..start], &text[end..])
    }

    fn listing(problems: &[String]) -> String {
        problems.iter().map(|p| format!("- {p}")).collect::<Vec<_>>().join("\n")
    }

    // --- Tests --------------------------------------------------------------------------

    #[test]
    fn every_identity_holds_what_its_calls_need_and_nothing_project_wide_it_does_not() {
        let problems = check_with(|_, text| text, &dry_run());
        assert!(problems.is_empty(), "infra/IAM.md and the grants of infra/ disagree:\n{}", listing(&problems));
    }

    #[test]
    fn a_removed_grant_is_reported_by_the_permission_it_took_away() {
        let dry_run = dry_run();
        let problems = check_with(|path, text| if path == "infra/iam.tf" { without_resource(&text, "google_bigquery_dataset_iam_member", "editor") } else { text }, &dry_run);
        for function in ["converge-sync", "converge-reconciler", "converge-rebuild", "converge-etl", "converge-detectors"] {
            assert!(
                problems.iter().any(|p| p.starts_with(&format!("{function} lacks `bigquery.tables.updateData` on the dataset"))),
                "{function} without dataEditor must be reported as lacking bigquery.tables.updateData:\n{}",
                listing(&problems)
            );
        }
        let problems = check_with(|path, text| if path == "infra/iam.tf" { without_resource(&text, "google_project_iam_member", "job_user") } else { text }, &dry_run);
        assert!(
            problems.iter().any(|p| p.starts_with("converge-sync lacks `bigquery.jobs.create` on the project") && p.contains("`roles/bigquery.jobUser`")),
            "without jobUser the report names bigquery.jobs.create and the role that carries it:\n{}",
            listing(&problems)
        );
    }

    #[test]
    fn a_broad_role_on_the_project_is_reported_as_unneeded() {
        let dry_run = dry_run();
        // bigquery.admin on the project for every function: undescribed and unneeded.
        let admin = "\nresource \"google_project_iam_member\" \"bigquery_admin\" {\n  for_each = local.functions\n  project  = var.project\n  role     = \"roles/bigquery.admin\"\n  member   = google_service_account.function[each.key].member\n}\n";
        let problems = check_with(|path, text| if path == "infra/iam.tf" { format!("{text}{admin}") } else { text }, &dry_run);
        assert!(
            problems.iter().any(|p| p.starts_with("unneeded project-wide role: infra/iam.tf: google_project_iam_member.bigquery_admin[\"converge-sync\"] grants `roles/bigquery.admin`")),
            "bigquery.admin on the project must be reported as an unneeded project-wide role:\n{}",
            listing(&problems)
        );
        assert!(problems.iter().any(|p| p.contains("does not describe `roles/bigquery.admin`")), "{}", listing(&problems));
        assert!(!problems.iter().any(|p| p.contains(" lacks ")), "adding a role takes nothing away:\n{}", listing(&problems));

        // dataEditor moved from the dataset to the project: everything still works, but
        // the role is needed on the dataset only.
        let problems = check_with(
            |path, text| {
                if path != "infra/iam.tf" {
                    return text;
                }
                let moved = "\nresource \"google_project_iam_member\" \"editor\" {\n  for_each = local.functions\n  project  = var.project\n  role     = \"roles/bigquery.dataEditor\"\n  member   = google_service_account.function[each.key].member\n}\n";
                format!("{}{moved}", without_resource(&text, "google_bigquery_dataset_iam_member", "editor"))
            },
            &dry_run,
        );
        assert!(
            problems.iter().any(|p| p.starts_with("unneeded project-wide role:") && p.contains("`roles/bigquery.dataEditor`") && p.contains("is needed on the dataset only")),
            "dataEditor on the project must be reported, pointing at the dataset:\n{}",
            listing(&problems)
        );
        assert!(!problems.iter().any(|p| p.contains(" lacks ")), "{}", listing(&problems));
    }

    #[test]
    fn an_invoker_grant_on_a_service_that_checks_tokens_itself_is_reported() {
        // converge-etl turns Cloud Run's invoker check off: run.invoker there is unused.
        let problems = check_with(
            |path, text| if path == "infra/iam.tf" { text.replace("\"converge-reconciler\" = \"converge-scheduler\"\n", "\"converge-reconciler\" = \"converge-scheduler\"\n    \"converge-etl\"        = \"converge-scheduler\"\n") } else { text },
            &dry_run(),
        );
        assert!(
            problems.iter().any(|p| p.starts_with("[after the first deployment] unneeded grant:") && p.contains("`roles/run.invoker` to converge-scheduler on service converge-etl")),
            "{}",
            listing(&problems)
        );
    }

    #[test]
    fn grants_the_checker_cannot_read_fail_instead_of_passing_silently() {
        let dry_run = dry_run();
        // An authoritative binding: a kind the checker does not read.
        let problems = check_with(|path, text| if path == "infra/iam.tf" { text.replace("\"google_project_iam_member\" \"job_user\"", "\"google_project_iam_binding\" \"job_user\"") } else { text }, &dry_run);
        assert!(problems.iter().any(|p| p.contains("google_project_iam_binding.job_user grants access in a way the IAM checker does not read")), "{}", listing(&problems));
        // A condition it does not know.
        let problems = check_with(|path, text| if path == "infra/iam.tf" { text.replace("resource.name == \\\"${local.firestore_resource}\\\"", "resource.type == \\\"firestore.googleapis.com/Database\\\"") } else { text }, &dry_run);
        assert!(problems.iter().any(|p| p.contains("the checker knows `resource.name == \"${local.firestore_resource}\"`")), "{}", listing(&problems));
    }

    #[test]
    fn the_table_covers_every_function_and_every_service_account() {
        let dry_run = dry_run();
        let problems = check_with(|path, text| if path == "infra/IAM.md" { text.lines().filter(|l| !l.starts_with("| `functions/rebuild`")).collect::<Vec<_>>().join("\n") } else { text }, &dry_run);
        assert!(problems.iter().any(|p| p.starts_with("functions/rebuild exists, but infra/IAM.md's Functions table does not list it")), "{}", listing(&problems));
        let problems = check_with(
            |path, text| if path == "infra/iam.tf" { text.replace("    \"converge-detectors\"  = \"detector runner: SQL detectors, findings back to Firestore\"\n", "    \"converge-detectors\"  = \"detector runner: SQL detectors, findings back to Firestore\"\n    \"converge-export\"     = \"a new function\"\n") } else { text },
            &dry_run,
        );
        assert!(problems.iter().any(|p| p.contains("creates the function service account converge-export")), "{}", listing(&problems));
    }

    /// The Firestore RPCs `crates/converge-firestore` sends (through the `firestore`
    /// crate's raw gRPC client) are each named in the table.
    #[test]
    fn the_table_names_every_firestore_rpc_the_code_sends() {
        let text = read("infra/IAM.md");
        let dir = repo().join("crates/converge-firestore/src");
        let mut rpcs = BTreeSet::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            // The emulator harness talks to the emulator's REST endpoints, never Google.
            if path.extension().is_none_or(|e| e != "rs") || path.file_name().is_some_and(|n| n == "emulator.rs") {
                continue;
            }
            let source = std::fs::read_to_string(&path).unwrap();
            for (at, _) in source.match_indices(".client().") {
                // `self.db.client().get()` takes a channel from the pool; an RPC goes
                // through `Inner::client()` (`self.client()` / `inner.client()`).
                if source[..at].ends_with(".db") {
                    continue;
                }
                let method: String = source[at + ".client().".len()..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                let camel: String = method.split('_').map(|w| w[..1].to_ascii_uppercase() + &w[1..]).collect();
                rpcs.insert((camel, path.file_name().unwrap().to_string_lossy().into_owned()));
            }
        }
        assert!(rpcs.iter().any(|(r, _)| r == "Commit") && rpcs.iter().any(|(r, _)| r == "RunQuery"), "found no Firestore RPC calls in {}: {rpcs:?}", dir.display());
        for (rpc, file) in &rpcs {
            assert!(text.contains(&format!("`{rpc}`")), "crates/converge-firestore/src/{file} sends Firestore `{rpc}`, which infra/IAM.md does not name: add the rows of its callers with its permissions (https://cloud.google.com/firestore/docs/security/iam)");
        }
    }

    /// The Storage Write API and query calls of `crates/converge-bigquery` are named in
    /// the table.
    #[test]
    fn the_table_names_every_bigquery_method_the_code_calls() {
        let text = read("infra/IAM.md");
        let dir = repo().join("crates/converge-bigquery/src");
        let sources: String = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "rs") && p.file_name().is_some_and(|n| n != "emulator.rs"))
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect();
        // Client call → the API method it sends (google-cloud-bigquery 0.19: write/writer_builder.rs,
        // write/base.rs, write/pending.rs, query/execution.rs; google-cloud-bigquery-v2's
        // DatasetService for get_dataset).
        for (call, methods) in [
            (".open_default_stream(", &["AppendRows"][..]),
            (".create_stream(", &["CreateWriteStream", "AppendRows"][..]),
            (".attach_to_stream(", &["GetWriteStream"][..]),
            (".finalize()", &["FinalizeWriteStream"][..]),
            (".commit()", &["BatchCommitWriteStreams"][..]),
            (".query(", &["jobs.query", "jobs.getQueryResults"][..]),
            (".get_dataset(", &["datasets.get"][..]),
            ("INFORMATION_SCHEMA.TABLES", &["INFORMATION_SCHEMA.TABLES"][..]),
        ] {
            if !sources.contains(call) {
                continue;
            }
            for method in methods {
                assert!(text.contains(&format!("`{method}`")), "crates/converge-bigquery calls `{call}` (BigQuery `{method}`), which infra/IAM.md does not name: add the rows of its callers");
            }
        }
    }

    /// Every `gcloud` command `deploy/deploy.sh` runs or prints has a row (and every row's
    /// command is one the script has).
    #[test]
    fn the_table_names_every_gcloud_command_deploy_runs() {
        let table = parse_table(&read("infra/IAM.md")).unwrap_or_else(|e| panic!("{}", e.join("\n")));
        let script = read("deploy/deploy.sh");
        let mut commands = BTreeSet::new();
        for line in script.lines().map(str::trim) {
            // Comments, messages and the "is gcloud installed" probe are not calls.
            if line.starts_with('#') || line.contains("die ") || line.contains("note ") || line.contains("command -v gcloud") {
                continue;
            }
            for (at, _) in line.match_indices("gcloud ") {
                if at > 0 && !line[..at].ends_with([' ', '(', '"']) {
                    continue;
                }
                let words: Vec<&str> = line[at..].split_whitespace().take_while(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '-')).collect();
                commands.insert(words.join(" "));
            }
        }
        assert!(commands.len() > 10, "found too few gcloud commands in deploy/deploy.sh: {commands:?}");
        let word_prefix = |long: &str, short: &str| long == short || long.starts_with(&format!("{short} "));
        for command in &commands {
            assert!(
                table.gcloud.iter().any(|row| word_prefix(command, row)),
                "deploy/deploy.sh runs `{command}`, which no row of infra/IAM.md's calls table names: add an `operator` row with its API method and permissions"
            );
        }
        for row in &table.gcloud {
            assert!(commands.iter().any(|c| word_prefix(c, row)), "infra/IAM.md names `{row}`, which deploy/deploy.sh does not run: remove or correct the row");
        }
    }

    /// A service with Cloud Run's invoker check on needs `run.routes.invoke` for its
    /// caller (deploy.sh's kind: Eventarc, Scheduler, or an operator); one with the check
    /// off needs it for nobody. Also: the table maps each function to the service
    /// deploy.sh deploys it as.
    #[test]
    fn invoker_rows_follow_each_service_s_invoker_check() {
        let table = parse_table(&read("infra/IAM.md")).unwrap_or_else(|e| panic!("{}", e.join("\n")));
        let script = read("deploy/deploy.sh");
        let entries: Vec<(&str, &str, &str)> = script
            .lines()
            .filter_map(|l| l.trim().strip_prefix('"').and_then(|l| l.strip_suffix('"')))
            .filter_map(|l| {
                let parts: Vec<&str> = l.split('|').collect();
                (parts.len() == 4 && matches!(parts[2], "firestore" | "schedule" | "http")).then(|| (parts[0], parts[1], parts[2]))
            })
            .collect();
        assert_eq!(entries.len(), table.functions.len(), "deploy.sh's FUNCTIONS and infra/IAM.md's Functions table list different functions: {entries:?}");
        for (dir, service, kind) in entries {
            assert_eq!(table.functions.get(&format!("functions/{dir}")).map(String::as_str), Some(service), "deploy.sh deploys functions/{dir} as {service}; infra/IAM.md must say it runs as that service account");
            let yaml = read(&format!("deploy/services/{dir}.yaml"));
            let check_off = yaml.contains("run.googleapis.com/invoker-iam-disabled: \"true\"");
            let level = Level::new("service", service);
            let invokers: BTreeSet<&String> = table.needs.iter().filter(|n| n.level.as_ref() == Some(&level) && n.permissions.iter().any(|p| p == "run.routes.invoke")).flat_map(|n| &n.identities).collect();
            let caller = match kind {
                "firestore" => "converge-eventarc",
                "schedule" => "converge-scheduler",
                _ => "operator",
            };
            if check_off {
                assert!(invokers.is_empty(), "deploy/services/{dir}.yaml turns Cloud Run's invoker check off, so nobody needs run.routes.invoke on {service}; infra/IAM.md says {invokers:?} do: remove those rows");
            } else {
                assert!(
                    invokers.iter().any(|i| i.as_str() == caller),
                    "{service} keeps Cloud Run's invoker check on and is called by {caller} ({kind} in deploy.sh): infra/IAM.md needs a row giving {caller} `run.routes.invoke` on service {service}"
                );
            }
        }
    }
}

/// The alert policies watch log lines the code writes: every message a log-based
/// metric of `infra/monitoring.tf` matches is written, word for word, by the code its
/// comment names, and every field a metric extracts is one that line carries.
#[test]
fn every_alert_watches_a_line_the_code_writes() {
    let monitoring = read("infra/monitoring.tf");
    let lines = [
        ("silent drift: differences no sync error record explains", "crates/converge-reconcile/src/run.rs", None),
        ("event quarantined", "crates/converge-sync/src/service.rs", Some("reason")),
        ("sync failed; error recorded", "crates/converge-sync/src/service.rs", None),
        ("sync minute", "crates/converge-sync/src/minutes.rs", Some("lag_ms_max")),
        ("current tables refreshed", "crates/converge-retention/src/run.rs", None),
    ];
    let matched: Vec<&str> = monitoring.split("jsonPayload.message=\\\"").skip(1).map(|rest| rest.split("\\\"").next().unwrap()).collect();
    assert_eq!(matched.len(), lines.len(), "{matched:?}");
    for (message, file, field) in lines {
        assert!(matched.contains(&message), "no metric matches {message:?}");
        let code = read(file);
        assert!(code.contains(&format!("\"{message}\"")), "{file} does not log {message:?}");
        if let Some(field) = field {
            assert!(monitoring.contains(&format!("EXTRACT(jsonPayload.{field})")), "{field} is not extracted");
            let statement = code.split(&format!("\"{message}\"")).next().unwrap();
            let call = &statement[statement.rfind("tracing::").expect("a tracing macro before the message")..];
            assert!(call.contains(field), "{file}'s {message:?} line does not carry {field}: {call}");
        }
    }
    for policy in ["silent_drift", "quarantine_rate", "sync_error_rate", "freshness"] {
        assert!(monitoring.contains(&format!("resource \"google_monitoring_alert_policy\" \"{policy}\"")), "no {policy} policy");
    }
    assert!(read("infra/main.tf").contains("\"monitoring.googleapis.com\""), "the Monitoring API is enabled");
}
