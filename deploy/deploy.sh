#!/usr/bin/env bash
# Deploys Converge to Google Cloud: the warehouse's tables and views (`converge setup
# --backend cloud`), images, Cloud Run services, Eventarc triggers and Cloud Scheduler
# jobs. Run `terraform -chdir=infra apply` first (dataset, tables, service accounts,
# IAM); see deploy/README.md.
#
#   make deploy                       # = CONVERGE_BIN=<built converge> bash deploy/deploy.sh
#   DRY_RUN=1 bash deploy/deploy.sh   # print every gcloud command, run none
#
# Environment:
#   CONVERGE_DEPLOY_ENV  configuration file (default deploy/converge.env)
#   CONVERGE_BIN         the `converge` command (default: `converge` on PATH; make deploy
#                        builds it and passes its path)
#   DRY_RUN=1            print the commands instead of running them; renders the service
#                        definitions into a temporary directory and prints its path.
#                        Needs neither gcloud nor credentials.
#
# Idempotent: every step describes what exists and creates or updates it, so running it
# again after a change updates in place, and running it twice changes nothing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# --- The functions ----------------------------------------------------------------------
#
# One line per function: directory under functions/ (= package name = image name) |
# Cloud Run service (= its service account, created by infra/) | how it is invoked |
# schedule (cron, for `schedule`). Kinds:
#   firestore  Eventarc Firestore triggers, one per TRIGGER_PATH_PATTERNS entry
#   schedule   Cloud Scheduler jobs POST to the service with an OIDC token: a job named
#              after the service POSTs to / on the schedule given here; with no schedule
#              here, every job of the function is in SCHEDULED_PATHS (the reconciler's
#              two reconcile runs, each with its own body)
#   http       authenticated HTTP only (operators; nothing scheduled)
# Only functions whose directory exists are deployed; the others are named and skipped.
FUNCTIONS=(
  "on-write-sync|converge-sync|firestore|"
  "nightly-etl|converge-etl|schedule|0 2 * * *"
  "reconciler|converge-reconciler|schedule|"
  "detector-runner|converge-detectors|schedule|0 5 * * *"
  "rebuild|converge-rebuild|http|"
)

# Cloud Scheduler jobs for a scheduled function's further modes, each on its own path
# (a `schedule` function's own job POSTs to /). One line per job: job name | function |
# path | schedule (cron) | retry class (below) | body (optional: the JSON request the
# job POSTs, without a `|`; the functions read it as JSON whatever its content type).
# A line without a body leaves the job's body as it is, so an operator's
# (gcloud scheduler jobs update http JOB --message-body=...) survives a deployment. A
# job is made only when its function is deployed; it runs as converge-scheduler, whose
# run.invoker on the service (infra/) covers every path.
SCHEDULED_PATHS=(
  # The reconcile runs (functions/reconciler, POST /): incremental daily at 03:00, what
  # may have changed since each tenant's last verified point (documents whose change
  # field is newer, and count() per path range), and in full weekly, Sunday 02:00,
  # every document: only a full run sees a warehouse row corrupted for a document
  # nobody touched, or a write that did not set the change field
  # (crates/converge-core/src/incremental.rs). The daily job keeps the name of the
  # nightly full job it replaces, so a deployment made before is updated in place.
  # The full run ends within the service's 30-minute timeout
  # (deploy/services/reconciler.yaml), before Sunday's incremental run starts from the
  # point it recorded; an incremental run of a tenant with no point yet reads it in full.
  'converge-reconciler|reconciler|/|0 3 * * *|daily|{"mode": "incremental"}'
  'converge-reconcile-full|reconciler|/|0 2 * * 0|daily|{"mode": "full"}'
  # The error log's own retry (functions/reconciler, Reconciler::retry_errors): every
  # 10 minutes. Cloud Scheduler takes unix-cron schedules, so one minute is the finest
  # interval (https://cloud.google.com/scheduler/docs/configuring/cron-job-schedules);
  # 10 minutes keeps a lost write's repair within minutes at a cost of one query on
  # sync_errors when nothing is open.
  "converge-retry-errors|reconciler|/retry-errors|*/10 * * * *|frequent"
  # The current tables (<table>_current) refreshed from their watermarks
  # (converge_retention::Retention::refresh): every 15 minutes, so a report on them is
  # at most that far behind the changelog (repairs and rebuilds refresh at once).
  "converge-refresh-current|reconciler|/refresh-current|*/15 * * * *|frequent"
  # Compaction with a retention horizon (Retention::compact), after the daily
  # reconcile: the body {"retain_days": N} sets the history kept (default 400 days):
  # gcloud scheduler jobs update http converge-compact --message-body='{"retain_days": 90}'
  "converge-compact|reconciler|/compact|0 4 * * *|daily"
)

# Every API Converge uses (infra/main.tf enables the same list).
APIS=(
  artifactregistry.googleapis.com bigquery.googleapis.com bigquerystorage.googleapis.com
  cloudbuild.googleapis.com cloudscheduler.googleapis.com eventarc.googleapis.com
  eventarcpublishing.googleapis.com firestore.googleapis.com iam.googleapis.com
  logging.googleapis.com monitoring.googleapis.com pubsub.googleapis.com run.googleapis.com secretmanager.googleapis.com
)

FIRESTORE_EVENT=google.cloud.firestore.document.v1.written
BUILTIN_PATTERN='orgs/{tenant}/records/{doc}'
CONFIG_SECRET=converge-config
EVENTARC_SA_NAME=converge-eventarc
SCHEDULER_SA_NAME=converge-scheduler

# Delivery rules (ARCHITECTURE.md, "What is acknowledged when").
# Eventarc delivers through a Pub/Sub push subscription it creates (eventarc-REGION-…):
# every answer that is not a success is redelivered with exponential backoff (10 s up
# to 600 s) for the subscription's retention (24 h by default), then dropped unless a
# dead-letter topic is set (https://cloud.google.com/eventarc/docs/retry-events).
# So each trigger's subscription gets: the longest retention a subscription may keep
# (7 days), and after DEAD_LETTER_MAX_ATTEMPTS deliveries (5 to 100 allowed; ~16 h of
# retries at the 600 s ceiling) the dead-letter topic that infra/pubsub.tf creates with
# a subscription holding its messages, since a topic without one loses them
# (https://cloud.google.com/pubsub/docs/handling-failures).
DEAD_LETTER_TOPIC=converge-dead-letter
DEAD_LETTER_MAX_ATTEMPTS=100
SUBSCRIPTION_RETENTION=7d
# Cloud Scheduler retries a failed job only when its retry settings say so; the default
# is no retry (https://cloud.google.com/scheduler/docs/configuring/retry-jobs). Every
# scheduled function is idempotent (a deterministic batch id per schedule time) and
# answers 503 when a retry may help: 5 retries (the most allowed), backoff 60 s
# doubling to 900 s, for at most an hour.
SCHEDULER_RETRY=(--max-retry-attempts=5 --min-backoff=60s --max-backoff=900s --max-doublings=3 --max-retry-duration=3600s)
# A frequent job's next tick is its retry: its attempt and its own retries fit within
# its interval. Execution n + 1 of a job does not begin until execution n has finished
# (Job.schedule, https://cloud.google.com/scheduler/docs/reference/rest/v1/projects.locations.jobs),
# so a slow pass delays the next rather than overlapping it; an HTTP target's attempt
# deadline may be 15 s to 30 min (Job.attemptDeadline, same page).
FREQUENT_RETRY=(--max-retry-attempts=2 --min-backoff=30s --max-backoff=120s --max-doublings=2 --max-retry-duration=480s)

die() { echo "deploy.sh: error: $*" >&2; exit 1; }
note() { echo "==> $*"; }

DRY_RUN=${DRY_RUN:-0}
case "$DRY_RUN" in 0 | 1) ;; *) die "DRY_RUN: expected 0 or 1, found '$DRY_RUN'" ;; esac
dry() { [[ $DRY_RUN == 1 ]]; }

# A command as it would be typed: words quoted only when they need it.
show() {
  local out="+" word
  for word in "$@"; do
    if [[ $word =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then out+=" $word"; else out+=" '${word//\'/\'\\\'\'}'"; fi
  done
  echo "$out"
}
# Runs a command that changes something; in a dry run, prints it.
run() {
  if dry; then show "$@"; else show "$@" >&2; "$@"; fi
}
# Whether something exists (a describe command succeeds); a dry run prints the command
# and answers no.
exists() {
  if dry; then show "$@"; echo "    (dry run: assumed absent)"; return 1; fi
  "$@" >/dev/null 2>&1
}

# --- Configuration ----------------------------------------------------------------------

ENV_FILE=${CONVERGE_DEPLOY_ENV:-deploy/converge.env}
[[ -f $ENV_FILE ]] || die "no configuration at $ENV_FILE: cp deploy/converge.env.example deploy/converge.env and fill it in (or set CONVERGE_DEPLOY_ENV)"

KEYS=(PROJECT REGION FIRESTORE_DATABASE FIRESTORE_LOCATION BIGQUERY_DATASET BIGQUERY_LOCATION
  TRIGGER_PATH_PATTERNS CONVERGE_CONFIG IMAGE_REPOSITORY IMAGE_TAG SCHEDULE_TIME_ZONE REBUILD_CALLERS)
declare -A CFG=()
lineno=0
while IFS= read -r line || [[ -n $line ]]; do
  lineno=$((lineno + 1))
  line=${line%$'\r'}
  [[ $line =~ ^[[:space:]]*(#.*)?$ ]] && continue
  [[ $line =~ ^[[:space:]]*([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] || die "$ENV_FILE:$lineno: expected KEY=value, found: $line"
  key=${BASH_REMATCH[1]} value=${BASH_REMATCH[2]}
  if [[ $value =~ ^\"([^\"]*)\"[[:space:]]*(#.*)?$ ]] || [[ $value =~ ^\'([^\']*)\'[[:space:]]*(#.*)?$ ]]; then
    value=${BASH_REMATCH[1]}
  else
    value=${value%%[[:space:]]#*}                 # trailing comment
    value=${value%"${value##*[![:space:]]}"}      # trailing blanks
  fi
  known=0
  for k in "${KEYS[@]}"; do [[ $k == "$key" ]] && known=1; done
  [[ $known == 1 ]] || die "$ENV_FILE:$lineno: unknown setting $key (known: ${KEYS[*]})"
  [[ -z ${CFG[$key]+set} ]] || die "$ENV_FILE:$lineno: $key is set twice"
  CFG[$key]=$value
done <"$ENV_FILE"

setting() { printf '%s\n' "${CFG[$1]:-${2:-}}"; }
# Fails naming the setting when it is empty or does not match.
check() { # NAME VALUE REGEX WHAT
  [[ -n $2 ]] || die "$1 is missing in $ENV_FILE: $4"
  [[ $2 =~ $3 ]] || die "$1='$2' in $ENV_FILE is not valid: expected $4"
}

PROJECT=$(setting PROJECT)
check PROJECT "$PROJECT" '^[a-z][a-z0-9-]{4,28}[a-z0-9]$' "a Google Cloud project id (6-30 characters of a-z, 0-9 and -, starting with a letter)"
if ! dry && [[ $PROJECT == my-project-id ]]; then die "PROJECT in $ENV_FILE is still the example value my-project-id: set your project id"; fi
REGION=$(setting REGION)
check REGION "$REGION" '^[a-z]+-[a-z]+[0-9]+$' "a Cloud Run region such as europe-west1"
FIRESTORE_DATABASE=$(setting FIRESTORE_DATABASE '(default)')
check FIRESTORE_DATABASE "$FIRESTORE_DATABASE" '^(\(default\)|[a-z][a-z0-9-]{2,61}[a-z0-9])$' "(default) or a Firestore database id"
FIRESTORE_LOCATION=$(setting FIRESTORE_LOCATION "$REGION")
check FIRESTORE_LOCATION "$FIRESTORE_LOCATION" '^([a-z]+-[a-z]+[0-9]+|nam5|eur3)$' "the Firestore database's location: a region such as europe-west1, or nam5 / eur3"
# Eventarc has no multi-region locations: Firestore's map to one region each.
case "$FIRESTORE_LOCATION" in
  nam5) EVENTARC_LOCATION=us-central1 ;;
  eur3) EVENTARC_LOCATION=europe-west4 ;;
  *) EVENTARC_LOCATION=$FIRESTORE_LOCATION ;;
esac
BIGQUERY_DATASET=$(setting BIGQUERY_DATASET converge)
check BIGQUERY_DATASET "$BIGQUERY_DATASET" '^[A-Za-z0-9_]{1,1024}$' "1-1024 characters of A-Z, a-z, 0-9 and _"
BIGQUERY_LOCATION=$(setting BIGQUERY_LOCATION)
check BIGQUERY_LOCATION "$BIGQUERY_LOCATION" '^([A-Z]{2}|[a-z]+-[a-z]+[0-9]+)$' "US, EU or a region such as europe-west1"
IMAGE_REPOSITORY=$(setting IMAGE_REPOSITORY converge)
check IMAGE_REPOSITORY "$IMAGE_REPOSITORY" '^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$' "an Artifact Registry repository id (a-z, 0-9 and -, starting with a letter)"
SCHEDULE_TIME_ZONE=$(setting SCHEDULE_TIME_ZONE Etc/UTC)
check SCHEDULE_TIME_ZONE "$SCHEDULE_TIME_ZONE" '^[A-Za-z_]+(/[A-Za-z0-9_+-]+)*$' "an IANA time zone such as Etc/UTC or Europe/Paris"

# Who may call the rebuild function (its in-app ID-token check; Cloud Run's IAM check
# comes first): emails of people or service accounts, separated by commas.
REBUILD_CALLERS=$(setting REBUILD_CALLERS)
check REBUILD_CALLERS "$REBUILD_CALLERS" '^[^,[:space:]@]+@[^,[:space:]@]+(,[[:space:]]*[^,[:space:]@]+@[^,[:space:]@]+)*$' "comma-separated emails allowed to rebuild (operators, or a service account)"

CONVERGE_CONFIG=$(setting CONVERGE_CONFIG)
if [[ -n $CONVERGE_CONFIG ]]; then
  [[ -f $CONVERGE_CONFIG && -r $CONVERGE_CONFIG ]] || die "CONVERGE_CONFIG='$CONVERGE_CONFIG' in $ENV_FILE is not a readable file (paths are relative to the repository root)"
fi

# Trigger patterns: the mirror configuration's pattern syntax ({tenant} and {doc}
# required, {doc} last, wildcards only in document positions) and routed by it.
read -r -a PATTERNS <<<"$(setting TRIGGER_PATH_PATTERNS "$BUILTIN_PATTERN")"
[[ ${#PATTERNS[@]} -gt 0 ]] || die "TRIGGER_PATH_PATTERNS is empty in $ENV_FILE: expected document path patterns such as $BUILTIN_PATTERN"
declare -A TRIGGER_NAMES=()
TRIGGERS=()
for pattern in "${PATTERNS[@]}"; do
  bad() { die "TRIGGER_PATH_PATTERNS: '$pattern' $1"; }
  IFS=/ read -r -a segments <<<"$pattern"
  (( ${#segments[@]} % 2 == 0 )) || bad "must name documents: collection/document pairs, ending in /{doc}"
  [[ ${segments[-1]} == '{doc}' ]] || bad "must end with /{doc}"
  tenant=0
  for i in "${!segments[@]}"; do
    s=${segments[$i]}
    if (( i % 2 == 0 )); then
      [[ $s =~ ^[A-Za-z0-9_.-]+$ ]] || bad "has collection segment '$s': expected a collection id (no wildcards)"
    else
      [[ $s =~ ^([A-Za-z0-9_.-]+|\{[a-z_]+\})$ ]] || bad "has document segment '$s': expected an id or a {name} wildcard"
      [[ $s == '{tenant}' ]] && tenant=$((tenant + 1))
    fi
  done
  (( tenant == 1 )) || bad "must contain {tenant} exactly once"
  if [[ -n $CONVERGE_CONFIG ]]; then
    # shellcheck disable=SC2016 # a sed program, not a shell expression
    re=$(printf '%s' "$pattern" | sed 's/[][\.*^$(){}+?|]/\\&/g')
    grep -Eq "^[[:space:]]*pattern[[:space:]]*=[[:space:]]*[\"']${re}[\"']" "$CONVERGE_CONFIG" \
      || bad "is not a route pattern of $CONVERGE_CONFIG: its events would be quarantined as unroutable"
  else
    [[ $pattern == "$BUILTIN_PATTERN" ]] || bad "is not a route of the built-in mirror configuration ($BUILTIN_PATTERN): set CONVERGE_CONFIG to a configuration that routes it"
  fi
  # Trigger name: converge-sync-<pattern as a slug>, at most 63 characters.
  slug=$(tr '[:upper:]' '[:lower:]' <<<"$pattern" | tr -c 'a-z0-9\n' '-' | tr -s '-' | sed 's/^-//; s/-$//')
  name="converge-sync-$slug"
  if (( ${#name} > 63 )); then name="${name:0:54}-$(cksum <<<"$pattern" | cut -c1-8)"; name=${name//--/-}; fi
  [[ -z ${TRIGGER_NAMES[$name]+set} ]] || bad "gives the same trigger name as '${TRIGGER_NAMES[$name]}' ($name)"
  TRIGGER_NAMES[$name]=$pattern
  TRIGGERS+=("$name|$pattern")
done

IMAGE_TAG=$(setting IMAGE_TAG)
TAG_IS_COMMIT=0
if [[ -z $IMAGE_TAG ]]; then
  if command -v git >/dev/null && git rev-parse --verify -q HEAD >/dev/null 2>&1; then
    IMAGE_TAG=$(git rev-parse --short=12 HEAD)
    if [[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]]; then
      IMAGE_TAG+="-dirty-$(date -u +%Y%m%d%H%M%S)"
    else
      TAG_IS_COMMIT=1
    fi
  else
    IMAGE_TAG="build-$(date -u +%Y%m%d%H%M%S)"
  fi
fi
check IMAGE_TAG "$IMAGE_TAG" '^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$' "a Docker tag (letters, digits, _ . -)"

sa_email() { echo "$1@$PROJECT.iam.gserviceaccount.com"; }
REGISTRY="$REGION-docker.pkg.dev/$PROJECT/$IMAGE_REPOSITORY"
G=(--project="$PROJECT" --quiet)

note "Converge deploy: project $PROJECT, region $REGION, Firestore $FIRESTORE_DATABASE ($FIRESTORE_LOCATION, triggers in $EVENTARC_LOCATION), BigQuery $BIGQUERY_DATASET ($BIGQUERY_LOCATION), images $REGISTRY:$IMAGE_TAG"
dry && note "DRY RUN: printing the gcloud commands, running none (configuration: $ENV_FILE)"

# --- Which functions --------------------------------------------------------------------

SELECTED=()
for entry in "${FUNCTIONS[@]}"; do
  IFS='|' read -r fn service kind schedule <<<"$entry"
  if [[ ! -d functions/$fn ]]; then
    when=$kind
    [[ -n $schedule ]] && when+=" \"$schedule\""
    note "skipping $fn: functions/$fn does not exist yet (service $service, $when)"
    continue
  fi
  [[ -f deploy/services/$fn.yaml ]] || die "functions/$fn exists but deploy/services/$fn.yaml does not: add its Cloud Run service definition (start from deploy/services/on-write-sync.yaml)"
  SELECTED+=("$entry")
done
declare -A JOB_NAMES=()
for line in "${SCHEDULED_PATHS[@]}"; do
  IFS='|' read -r job job_fn path job_schedule retry body <<<"$line"
  found=0
  for entry in "${FUNCTIONS[@]}"; do
    IFS='|' read -r fn service kind schedule <<<"$entry"
    [[ $fn == "$job_fn" && $kind == schedule ]] && found=1
    # A function's own job is named after its service.
    [[ $kind == schedule && -n $schedule && $service == "$job" ]] && die "SCHEDULED_PATHS: job $job is also the own job of $fn in FUNCTIONS: give one of them another name, or $fn no schedule there"
  done
  [[ $found == 1 ]] || die "SCHEDULED_PATHS: job $job names function '$job_fn', which is not a schedule function of FUNCTIONS"
  [[ -z ${JOB_NAMES[$job]+set} ]] || die "SCHEDULED_PATHS: job $job is listed twice: one Cloud Scheduler job per name"
  JOB_NAMES[$job]=1
  [[ -z $body || ($body == \{* && $body == *\}) ]] || die "SCHEDULED_PATHS: job $job's body '$body' is not a JSON object: expected {...} or nothing"
done
[[ ${#SELECTED[@]} -gt 0 ]] || die "no function to deploy: none of the directories under functions/ is in deploy.sh's FUNCTIONS list"

# --- Tools and credentials --------------------------------------------------------------

CONVERGE_BIN=${CONVERGE_BIN:-converge}
if ! dry; then
  command -v gcloud >/dev/null || die "gcloud not found: install the Google Cloud CLI (https://cloud.google.com/sdk/docs/install)"
  command -v "$CONVERGE_BIN" >/dev/null || die "$CONVERGE_BIN not found: run make deploy (it builds converge), or set CONVERGE_BIN to a built converge"
  [[ -n $(gcloud auth list --filter=status:ACTIVE --format='value(account)' 2>/dev/null) ]] \
    || die "gcloud has no active account: run gcloud auth login"
fi

# --- APIs, registry, identities ---------------------------------------------------------

note "enabling APIs"
run gcloud services enable "${APIS[@]}" "${G[@]}"

note "image registry $REGISTRY"
if exists gcloud artifacts repositories describe "$IMAGE_REPOSITORY" --location="$REGION" "${G[@]}"; then
  note "registry exists"
else
  run gcloud artifacts repositories create "$IMAGE_REPOSITORY" --repository-format=docker --location="$REGION" \
    --description="Converge function images" "${G[@]}"
fi

# The identities infra/ creates: fail early, naming the step to run, rather than halfway.
need_sa=()
for entry in "${SELECTED[@]}"; do
  IFS='|' read -r fn service kind schedule <<<"$entry"
  need_sa+=("$service")
  [[ $kind == firestore ]] && need_sa+=("$EVENTARC_SA_NAME")
  [[ $kind == schedule ]] && need_sa+=("$SCHEDULER_SA_NAME")
done
for sa in $(printf '%s\n' "${need_sa[@]}" | sort -u); do
  if ! exists gcloud iam service-accounts describe "$(sa_email "$sa")" "${G[@]}" && ! dry; then
    die "service account $(sa_email "$sa") does not exist: run terraform -chdir=infra apply first (infra/README.md)"
  fi
done

# --- Mirror configuration ---------------------------------------------------------------

CONFIG_SECRET_VERSION=""
if [[ -n $CONVERGE_CONFIG ]]; then
  note "mirror configuration $CONVERGE_CONFIG -> secret $CONFIG_SECRET"
  if dry; then
    show gcloud secrets versions access latest --secret="$CONFIG_SECRET" "${G[@]}"
    show gcloud secrets versions add "$CONFIG_SECRET" --data-file="$CONVERGE_CONFIG" --format='value(name)' "${G[@]}"
    CONFIG_SECRET_VERSION=1
  else
    gcloud secrets describe "$CONFIG_SECRET" "${G[@]}" >/dev/null 2>&1 \
      || die "CONVERGE_CONFIG is set but secret $CONFIG_SECRET does not exist: set mirror_config_secret = true in infra/terraform.tfvars and run terraform -chdir=infra apply"
    if current=$(gcloud secrets versions access latest --secret="$CONFIG_SECRET" "${G[@]}" 2>/dev/null) \
      && [[ $current == "$(cat "$CONVERGE_CONFIG")" ]]; then
      CONFIG_SECRET_VERSION=$(gcloud secrets versions describe latest --secret="$CONFIG_SECRET" --format='value(name)' "${G[@]}")
    else
      CONFIG_SECRET_VERSION=$(run gcloud secrets versions add "$CONFIG_SECRET" --data-file="$CONVERGE_CONFIG" --format='value(name)' "${G[@]}")
    fi
    CONFIG_SECRET_VERSION=${CONFIG_SECRET_VERSION##*/}
  fi
fi

# --- Service definitions ----------------------------------------------------------------
#
# Rendered before any build, so a broken definition fails in seconds. Only the listed
# variables are substituted (no envsubst of the whole environment), and a placeholder
# left over fails naming it.

if dry; then
  show gcloud projects describe "$PROJECT" --format='value(projectNumber)'
  PROJECT_NUMBER=000000000000
else
  PROJECT_NUMBER=$(gcloud projects describe "$PROJECT" --format='value(projectNumber)' --quiet)
  [[ $PROJECT_NUMBER =~ ^[0-9]+$ ]] || die "could not read the project number of $PROJECT (gcloud projects describe)"
fi

RENDER_DIR=$(mktemp -d "${TMPDIR:-/tmp}/converge-deploy.XXXXXX")
dry || trap 'rm -rf "$RENDER_DIR"' EXIT

render() { # FUNCTION SERVICE IMAGE -> $RENDER_DIR/FUNCTION.yaml
  local fn=$1 text name value
  local -A vars=(
    [FUNCTION]=$fn [SERVICE]=$2 [IMAGE]=$3 [SERVICE_ACCOUNT]=$(sa_email "$2")
    [PROJECT]=$PROJECT [REGION]=$REGION [FIRESTORE_DATABASE]=$FIRESTORE_DATABASE
    [BIGQUERY_DATASET]=$BIGQUERY_DATASET [BIGQUERY_LOCATION]=$BIGQUERY_LOCATION
    [CONFIG_SECRET_VERSION]=$CONFIG_SECRET_VERSION
    # Known before the first deployment: Cloud Run's deterministic URL. The rebuild
    # function checks that ID tokens were minted for exactly this audience.
    [SERVICE_URL]="https://$2-$PROJECT_NUMBER.$REGION.run.app" [REBUILD_CALLERS]=$REBUILD_CALLERS
    # Who triggers scheduled functions that check tokens in the app (nightly-etl): the
    # scheduler's OIDC tokens, and Eventarc's for the Pub/Sub form.
    [SCHEDULER_SA]=$(sa_email "$SCHEDULER_SA_NAME") [EVENTARC_SA]=$(sa_email "$EVENTARC_SA_NAME")
  )
  if [[ -n $CONVERGE_CONFIG ]]; then
    text=$(sed 's/[[:space:]]*#if-config$//' "deploy/services/$fn.yaml")
  else
    text=$(sed '/#if-config$/d' "deploy/services/$fn.yaml")
  fi
  for name in "${!vars[@]}"; do
    value=${vars[$name]}
    text=${text//"\${$name}"/"$value"}
  done
  if [[ $text =~ \$\{([A-Za-z_][A-Za-z0-9_]*)\} ]]; then
    die "deploy/services/$fn.yaml: unknown placeholder \${${BASH_REMATCH[1]}} (deploy.sh fills in: ${!vars[*]})"
  fi
  printf '%s\n' "$text" >"$RENDER_DIR/$fn.yaml"
}

for entry in "${SELECTED[@]}"; do
  IFS='|' read -r fn service kind schedule <<<"$entry"
  render "$fn" "$service" "$REGISTRY/$fn:$IMAGE_TAG"
done
dry && note "service definitions rendered in $RENDER_DIR"

# --- Images -----------------------------------------------------------------------------

for entry in "${SELECTED[@]}"; do
  IFS='|' read -r fn service kind schedule <<<"$entry"
  image="$REGISTRY/$fn:$IMAGE_TAG"
  note "image $image"
  if [[ $TAG_IS_COMMIT == 1 ]] && exists gcloud artifacts docker images describe "$image" "${G[@]}"; then
    note "$image already built from this commit: not rebuilt"
    continue
  fi
  run gcloud builds submit . --config=deploy/cloudbuild.yaml --ignore-file=deploy/gcloudignore \
    --substitutions="_FUNCTION=$fn,_IMAGE=$image" "${G[@]}"
done

# --- Warehouse tables -------------------------------------------------------------------
#
# The functions run no DDL at start: each checks that the tables and views of its
# configuration exist, as this version creates them, and exits naming what is missing.
# So setup runs here, before any service is replaced, with the operator's Application
# Default Credentials (gcloud auth application-default login) and the functions' own
# settings. Idempotent: tables and columns only if missing, views replaced with the same
# text, the dataset only if Terraform has not made it.

note "warehouse tables: converge setup --backend cloud"
SETUP_ENV=(CONVERGE_BACKEND=cloud "GOOGLE_CLOUD_PROJECT=$PROJECT" "CONVERGE_BIGQUERY_DATASET=$BIGQUERY_DATASET"
  "CONVERGE_BIGQUERY_LOCATION=$BIGQUERY_LOCATION" "CONVERGE_FIRESTORE_DATABASE=$FIRESTORE_DATABASE")
[[ -n $CONVERGE_CONFIG ]] && SETUP_ENV+=("CONVERGE_CONFIG=$CONVERGE_CONFIG")
run env "${SETUP_ENV[@]}" "$CONVERGE_BIN" setup --backend cloud

# --- Services, triggers, jobs -----------------------------------------------------------

# One Cloud Scheduler job: POST SERVICE's URL + PATH on SCHEDULE, with RETRY's settings
# (daily: SCHEDULER_RETRY, 30 min per attempt; frequent: FREQUENT_RETRY, 5 min), and
# BODY as the request when one is given (none: the job's body stays as it is).
schedule_job() { # JOB SERVICE URL PATH SCHEDULE RETRY [BODY]
  local job=$1 service=$2 url=$3 path=$4 schedule=$5 retry=$6 body=${7:-} deadline
  local -a retries
  case "$retry" in
    daily) deadline=1800s retries=("${SCHEDULER_RETRY[@]}") ;;
    frequent) deadline=300s retries=("${FREQUENT_RETRY[@]}") ;;
    *) die "scheduler job $job: unknown retry class '$retry' (expected daily or frequent)" ;;
  esac
  [[ $path == /* ]] || die "SCHEDULED_PATHS: job $job's path '$path' must start with /"
  note "Cloud Scheduler job $job: '$schedule' ($SCHEDULE_TIME_ZONE) -> POST $url$path${body:+ $body}"
  local -a common=(
    --location="$REGION" --schedule="$schedule" --time-zone="$SCHEDULE_TIME_ZONE"
    --uri="$url$path" --http-method=POST
    # An OIDC token of converge-scheduler for the service's deterministic URL: Cloud
    # Run's IAM invoker check admits it (run.invoker from infra/; either URL of the
    # service is a valid audience), and functions that verify tokens themselves
    # (nightly-etl) expect exactly that audience, known before the first deployment.
    --oidc-service-account-email="$(sa_email "$SCHEDULER_SA_NAME")" --oidc-token-audience="https://$service-$PROJECT_NUMBER.$REGION.run.app"
    --attempt-deadline="$deadline"
    "${retries[@]}"
  )
  # --message-body sets the body on create and on update alike.
  [[ -n $body ]] && common+=(--message-body="$body")
  if exists gcloud scheduler jobs describe "$job" --location="$REGION" "${G[@]}"; then
    run gcloud scheduler jobs update http "$job" "${common[@]}" "${G[@]}"
  else
    run gcloud scheduler jobs create http "$job" "${common[@]}" "${G[@]}"
  fi
}

declare -A URLS=()
DEPLOYED=()
for entry in "${SELECTED[@]}"; do
  IFS='|' read -r fn service kind schedule <<<"$entry"
  note "Cloud Run service $service ($fn)"
  run gcloud run services replace "$RENDER_DIR/$fn.yaml" --region="$REGION" "${G[@]}"
  if dry; then
    show gcloud run services describe "$service" --region="$REGION" --format='value(status.url)' "${G[@]}"
    URLS[$service]="https://$service-DRYRUN.$REGION.run.app"
  else
    URLS[$service]=$(gcloud run services describe "$service" --region="$REGION" --format='value(status.url)' "${G[@]}")
    [[ -n ${URLS[$service]} ]] || die "service $service has no URL after deployment"
  fi
  DEPLOYED+=("$service")
  url=${URLS[$service]}

  case "$kind" in
    firestore)
      for trigger in "${TRIGGERS[@]}"; do
        IFS='|' read -r name pattern <<<"$trigger"
        note "Eventarc trigger $name: $FIRESTORE_EVENT on $pattern in database $FIRESTORE_DATABASE -> $service /"
        common=(
          --location="$EVENTARC_LOCATION"
          --destination-run-service="$service" --destination-run-region="$REGION" --destination-run-path=/
          --event-filters="type=$FIRESTORE_EVENT"
          --event-filters="database=$FIRESTORE_DATABASE"
          --event-filters-path-pattern="document=$pattern"
          # Firestore triggers deliver protobuf only (JSON is refused for them).
          --event-data-content-type=application/protobuf
          # Eventarc calls with this identity's OIDC token (run.invoker from infra/).
          --service-account="$(sa_email "$EVENTARC_SA_NAME")"
        )
        if exists gcloud eventarc triggers describe "$name" --location="$EVENTARC_LOCATION" "${G[@]}"; then
          run gcloud eventarc triggers update "$name" "${common[@]}" --update-labels=app=converge "${G[@]}"
        else
          run gcloud eventarc triggers create "$name" "${common[@]}" --labels=app=converge "${G[@]}"
        fi
        # The trigger's own Pub/Sub subscription: dead-letter topic, retention, backoff.
        if dry; then
          show gcloud eventarc triggers describe "$name" --location="$EVENTARC_LOCATION" --format='value(transport.pubsub.subscription)' "${G[@]}"
          subscription="projects/$PROJECT/subscriptions/eventarc-$EVENTARC_LOCATION-$name-sub-DRYRUN"
        else
          subscription=$(gcloud eventarc triggers describe "$name" --location="$EVENTARC_LOCATION" --format='value(transport.pubsub.subscription)' "${G[@]}")
          [[ -n $subscription ]] || die "trigger $name has no Pub/Sub subscription"
        fi
        note "subscription of $name: dead letters to $DEAD_LETTER_TOPIC after $DEAD_LETTER_MAX_ATTEMPTS deliveries, retention $SUBSCRIPTION_RETENTION"
        run gcloud pubsub subscriptions update "$subscription" \
          --dead-letter-topic="projects/$PROJECT/topics/$DEAD_LETTER_TOPIC" --max-delivery-attempts="$DEAD_LETTER_MAX_ATTEMPTS" \
          --min-retry-delay=10s --max-retry-delay=600s --message-retention-duration="$SUBSCRIPTION_RETENTION" "${G[@]}"
        # Pub/Sub's service agent forwards dead letters: it must read this subscription
        # (publishing to the topic is granted in infra/pubsub.tf).
        run gcloud pubsub subscriptions add-iam-policy-binding "$subscription" \
          --member="serviceAccount:service-$PROJECT_NUMBER@gcp-sa-pubsub.iam.gserviceaccount.com" --role=roles/pubsub.subscriber "${G[@]}"
      done
      # A trigger of an earlier configuration keeps delivering until deleted: name it.
      if ! dry; then
        while read -r existing; do
          existing=${existing##*/}
          [[ -z $existing || -n ${TRIGGER_NAMES[$existing]+set} ]] && continue
          note "WARNING: trigger $existing is not in TRIGGER_PATH_PATTERNS; delete it if it is stale:"
          show gcloud eventarc triggers delete "$existing" --location="$EVENTARC_LOCATION" --project="$PROJECT"
        done < <(gcloud eventarc triggers list --location="$EVENTARC_LOCATION" --filter=labels.app=converge --format='value(name)' "${G[@]}")
      fi
      ;;
    schedule)
      if [[ -n $schedule ]]; then schedule_job "$service" "$service" "$url" / "$schedule" daily; fi
      for line in "${SCHEDULED_PATHS[@]}"; do
        IFS='|' read -r job job_fn path job_schedule retry body <<<"$line"
        if [[ $job_fn == "$fn" ]]; then schedule_job "$job" "$service" "$url" "$path" "$job_schedule" "$retry" "$body"; fi
      done
      ;;
    http)
      note "$service takes authenticated HTTP requests only, from: $REBUILD_CALLERS. Grant each of them roles/run.invoker on it:"
      IFS=',' read -r -a callers <<<"$REBUILD_CALLERS"
      for caller in "${callers[@]}"; do
        caller=${caller//[[:space:]]/}
        member="user:$caller"
        [[ $caller == *.gserviceaccount.com ]] && member="serviceAccount:$caller"
        show gcloud run services add-iam-policy-binding "$service" --region="$REGION" --member="$member" --role=roles/run.invoker "${G[@]}"
      done
      note "call it with an ID token minted for audience $url and carrying a caller's email, in both Authorization and X-Serverless-Authorization (deploy/README.md, \"Rebuild\")"
      ;;
    *) die "FUNCTIONS: unknown kind '$kind' for $fn" ;;
  esac
done

# --- Summary ----------------------------------------------------------------------------

note "deployed: ${DEPLOYED[*]}"
for service in "${DEPLOYED[@]}"; do echo "    $service  ${URLS[$service]}"; done
list=$(printf '"%s", ' "${DEPLOYED[@]}")
note "narrow the invoker grants to these services: in infra/terraform.tfvars set"
echo "    services          = [${list%, }]"
echo "    deployed_services = [${list%, }]"
echo "    then run: terraform -chdir=infra apply"
