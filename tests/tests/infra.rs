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

/// Where the view and the table function are among `create_statements`: after the
/// table and its added columns.
const VIEW: usize = 3;
const TABLE_FUNCTION: usize = 4;

fn statements() -> Vec<String> {
    let config = BigQueryConfig::new(PROJECT, DATASET).unwrap();
    schema::create_statements(&config, &MirrorConfig::default().routes[0])
}

fn body<'a>(statement: &'a str, prefix: &str) -> &'a str {
    statement.strip_prefix(prefix).unwrap_or_else(|| panic!("expected {prefix:?} at the start of {statement}"))
}

#[test]
fn the_runs_table_schema_is_the_code_s_ddl() {
    let json: serde_json::Value = serde_json::from_str(&read("infra/schema/converge_runs.json")).unwrap();
    let file: Vec<String> = json
        .as_array()
        .expect("a JSON array of fields")
        .iter()
        .map(|f| format!("{} {}{}", f["name"].as_str().unwrap(), f["type"].as_str().unwrap(), if f["mode"] == "REQUIRED" { " NOT NULL" } else { "" }))
        .collect();
    let config = BigQueryConfig::new(PROJECT, DATASET).unwrap();
    let ddl = schema::create_runs(&config);
    let columns = ddl.split_once(" (").and_then(|(_, rest)| rest.split_once(") OPTIONS")).map(|(cols, _)| cols).expect("CREATE TABLE … (columns) OPTIONS");
    let code: Vec<String> = columns.split(", ").map(str::to_owned).collect();
    assert_eq!(file, code, "infra/schema/converge_runs.json must list the columns of converge_bigquery::schema::create_runs()");
    assert!(read("infra/bigquery.tf").contains("schema/converge_runs.json"));
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
    assert_eq!(render("infra/sql/records_latest.sql"), body(&statements[VIEW], &latest));
    let as_of = format!("CREATE OR REPLACE TABLE FUNCTION `{PROJECT}.{DATASET}.records_as_of`(as_of TIMESTAMP) AS ");
    assert_eq!(render("infra/sql/records_as_of.sql"), body(&statements[TABLE_FUNCTION], &as_of));
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
    for (file, index) in [("records_latest.sql", VIEW), ("records_as_of.sql", TABLE_FUNCTION)] {
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
        let statement = &statements()[index];
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
    assert_eq!(jobs.len(), 3, "{out}");
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

#[test]
fn the_rebuild_service_checks_tokens_for_its_own_url_and_the_configured_callers() {
    let tmp = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) = dry_run(&repo().join("deploy/converge.env.example"), tmp.path());
    assert!(ok, "{stdout}{stderr}");
    let dir = stdout.lines().find_map(|l| l.strip_prefix("==> service definitions rendered in ")).expect("rendered path printed");
    let yaml = std::fs::read_to_string(Path::new(dir).join("rebuild.yaml")).unwrap();
    assert!(!yaml.contains("${"), "placeholder left:\n{yaml}");
    for (name, value) in [
        (converge_http::env::AUTH_AUDIENCE, "\"https://converge-rebuild-000000000000.europe-west1.run.app\""),
        (converge_http::env::AUTH_ALLOWED_EMAILS, "\"ops@example.com\""),
        (converge_http::env::BACKEND, "cloud"),
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
        (converge_http::env::BACKEND, "cloud"),
        (converge_http::env::PROJECT, "\"my-project-id\""),
        (converge_http::env::FIRESTORE_DATABASE, "\"(default)\""),
        (converge_http::env::BIGQUERY_DATASET, "\"converge\""),
        (converge_http::env::BIGQUERY_LOCATION, "\"EU\""),
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
        let json: serde_json::Value = serde_json::from_str(&read(&format!("infra/schema/{table}.json"))).unwrap();
        let file: Vec<String> = json
            .as_array()
            .expect("a JSON array of fields")
            .iter()
            .map(|f| format!("{} {}{}", f["name"].as_str().unwrap(), f["type"].as_str().unwrap(), if f["mode"] == "REQUIRED" { " NOT NULL" } else { "" }))
            .collect();
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
        (converge_http::env::AUTH_AUDIENCE, "\"https://converge-etl-000000000000.europe-west1.run.app\""),
        (
            converge_http::env::AUTH_ALLOWED_EMAILS,
            "\"converge-scheduler@my-project-id.iam.gserviceaccount.com,converge-eventarc@my-project-id.iam.gserviceaccount.com\"",
        ),
        (converge_http::env::BACKEND, "cloud"),
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
        (converge_http::env::AUTH_AUDIENCE, "\"https://converge-detectors-000000000000.europe-west1.run.app\""),
        (converge_http::env::AUTH_ALLOWED_EMAILS, "\"converge-scheduler@my-project-id.iam.gserviceaccount.com\""),
        (converge_http::env::BACKEND, "cloud"),
        (converge_http::env::PROJECT, "\"my-project-id\""),
        (converge_http::env::BIGQUERY_DATASET, "\"converge\""),
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
