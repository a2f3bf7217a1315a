"""
## Marketplace ingest (daily)

Lands one day of raw marketplace data into the lake, `raw/<table>/dt=YYYY-MM-DD/` for `events`,
`orders`, `products`, `customers` and `reviews`, then validates it with Great Expectations suites:

* **validate_raw_data**: every row ends in `validated/<table>/` or in `quarantine/<table>/` with the
  rule it broke (counts in both manifests). Blocking rules (missing columns, wrong types, duplicate
  keys, an empty, truncated or stale day, volume far outside the trailing days) fail the task at
  once, naming the rule, the count and the report. Data Docs: `reports/validation/dt=YYYY-MM-DD/`.

* **build_features** (Spark): point-in-time customer, product and pair aggregates as of the day,
  `features/{daily_*,state_*,customers,products}/dt=YYYY-MM-DD/`. Incremental: the day's validated
  rows are folded into the previous day's state (window sums minus the day leaving each window);
  it recomputes from all history when the previous state is missing or its inputs changed. It waits
  for the previous day's build (`depends_on_past`), so backfills fold days in order.
* **build_training_data**: examples for the anchor `D - horizon` (`PREFERENCE_HORIZON_DAYS`), whose
  label window ends with this day: positives are that window's purchases, negatives are sampled
  (viewed-not-bought, popularity-weighted). GZIP TFRecord shards, Parquet and `schema.json` in
  `training/dt=<anchor>/`. Skipped while the anchor has no features or a horizon day is missing.

* **train_model** (queue and pool `gpu`): trains on the latest published training anchors whose
  labels end before the holdout (anchor `D - horizon`), evaluates model, champion and baselines on
  it, logs an MLflow run, registers a version (`challenger`) and moves `champion` only when it wins
  on recall@K. Backfill runs never move `champion`. Checkpoints in `checkpoints/train/dt=D/`.

* **train_profile_model** (queue and pool `gpu`): the customer profile autoencoder on the same
  partitions and loop (checkpoints in `checkpoints/profile/dt=D/`), registered as
  `<model name>-profile`; `champion` moves when its holdout reconstruction error is below the mean
  profile's and the champion profile's. **score_profiles**: every customer's profile and
  reconstruction error with the profile champion of the day, `scores/customer_profiles/`.

* **embed_reviews**: the day's review texts embedded with all-MiniLM-L6-v2 (`scores/review_embeddings/`)
  and each customer's 90-day text profile (`features/customer_text/`).
* **compute_rfm**: RFM value tiers (1-D k-means per dimension, k by the elbow) in `segments/rfm/`.
* **score_products**, **score_customers** (Spark, `mapInArrow`): with the model that was `champion`
  on the logical date (a backfill scores with the champion of its day; skipped before any champion):
  embeddings, candidate propensities and top-K recommendations per active customer, in `scores/`.
  Every row carries the model version and the input manifests.
* **refresh_segments**: when the champion changed, a stratified sample's embeddings are mapped with
  t-SNE and clustered with DBSCAN; centroids (embedding space, ids matched to the previous ones) in
  `segments/centroids_<entity>/`. Skipped while the champion is unchanged. Customers are segmented
  on the taste part of the embeddings or on the profiles (`PREFERENCE_SEGMENT_SPACE`); the report
  compares both spaces.
* **assign_segments**: every customer and product to its nearest centroid by L1 distance, with a
  per-cluster summary and the migration from the previous day, in `segments/<entity>/`.

* **Partition**: the run's logical date (`data_interval_start`, UTC). The run for day D starts
  after D has ended. Rerunning a date replaces exactly that date's partitions with identical content.
* **Trigger**: a manual run processes the last complete day before its logical date (Airflow's
  data-interval rule), so "Trigger" with the default logical date (now) processes yesterday.
* **Backfill**: runs of a backfill may overlap (up to its `max_active_runs`); tasks that read earlier
  days' outputs (features, text profiles, segment centroids and assignments) wait for the previous
  day (`depends_on_past`), so the outputs equal those of the days run one by one. Training data
  waits too: `train_model` reads every earlier anchor's examples, so it must not start before the
  days before have published theirs. Any past range
  (UI "Backfill", or the CLI), e.g.
  `airflow backfill create --dag-id marketplace_ingest_daily --from-date 2025-03-01 --to-date 2025-03-07`.
* **Source**: the synthetic marketplace generator (deterministic by seed and date), scaled by the
  deployment's `PREFERENCE_SYNTH_*` settings; trigger with parameters to override them for one run.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import CronDataIntervalTimetable, ExceptionRetryPolicy, Param, RetryAction, RetryRule, dag, task

from include.preference.dag_policy import (
    DEFAULT_ARGS,
    FAIL_FAST_ERRORS,
    FAIL_FAST_REASON,
    SOURCE_LABELS,
    START_DATE,
)

FAIL_FAST = ExceptionRetryPolicy(
    rules=[RetryRule(exception=list(FAIL_FAST_ERRORS), action=RetryAction.FAIL, reason=FAIL_FAST_REASON)]
)


@dag(
    dag_id="marketplace_ingest_daily",
    # Data-interval semantics: the run for day D starts after D ends, with data_interval_start = D.
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.instance(START_DATE),
    catchup=False,
    max_active_runs=3,
    default_args={**DEFAULT_ARGS, "retry_policy": FAIL_FAST},
    tags=["customer-preference", "ingest"],
    doc_md=__doc__,
    params={
        "source": Param(
            "synthetic",
            type="string",
            enum=["synthetic", "online_retail", "rees46", "mapped"],
            values_display=SOURCE_LABELS,
            description="Where the day's raw data comes from: the synthetic marketplace, an Online Retail "
            "invoice file, a REES46 clickstream file, or CSV/Parquet files described by a mapping file.",
        ),
        # Optional (null by default, as every optional param): a blank required-looking field would
        # keep the UI's Trigger and Run Backfill buttons disabled on an untouched form.
        "input_path": Param(
            None,
            type=["null", "string"],
            description="For file sources: the file, or for 'mapped' the mapping file (a path on the worker, "
            "or an s3:// URI in the lake bucket). Empty for the synthetic source.",
        ),
        "date_order": Param(
            None,
            type=["null", "string"],
            enum=[None, "day_first", "month_first"],
            # The form's label for each value ("None": the empty choice, shown instead of "null").
            values_display={
                "None": "as PREFERENCE_DATE_ORDER says",
                "day_first": "day first (03/04/2011 is 3 April)",
                "month_first": "month first (03/04/2011 is 4 March)",
            },
            description="For file sources whose numeric dates (03/04/2011) never pass 12, so the file cannot "
            "tell: read them day first or month first. Empty: PREFERENCE_DATE_ORDER; a file that tells "
            "must agree.",
        ),
        # Generator settings: empty (null) takes the deployment's PREFERENCE_SYNTH_* setting, so
        # scheduled, triggered and backfill runs all generate the same world unless a run overrides.
        "seed": Param(
            None, type=["null", "integer"], minimum=0, description="Generator seed (empty: PREFERENCE_SYNTH_SEED)."
        ),
        "customers": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            description="Customers in the world (empty: PREFERENCE_SYNTH_CUSTOMERS).",
        ),
        "products": Param(
            None,
            type=["null", "integer"],
            minimum=18,
            description="Products in the catalogue (empty: PREFERENCE_SYNTH_PRODUCTS).",
        ),
        "sessions_per_day": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            description="Shopping sessions per day (empty: PREFERENCE_SYNTH_SESSIONS_PER_DAY).",
        ),
    },
)
def marketplace_ingest_daily():
    @task
    def land_raw_data(data_interval_start=None, run_id=None, params=None) -> dict:
        """Generate or import the logical date's raw tables and publish them to `raw/`."""
        from include.preference import tasks

        generator = {k: params[k] for k in ("seed", "customers", "products", "sessions_per_day")}
        return tasks.land_raw_data(
            tasks.logical_day(data_interval_start),
            run_id=run_id,
            source=params["source"],
            generator=generator,
            input_path=params["input_path"] or "",
            date_order=params.get("date_order"),
        )

    @task
    def validate_raw_data(landed: dict, data_interval_start=None, run_id=None) -> dict:
        """Validate the day's raw tables: publish `validated/`, `quarantine/` and the Data Docs report."""
        from include.preference import tasks

        return tasks.validate_raw_data(tasks.logical_day(data_interval_start), run_id=run_id)

    @task(depends_on_past=True)
    def build_features(validated: dict, data_interval_start=None, run_id=None) -> dict:
        """Fold the day's validated rows into point-in-time features (Spark); publish `features/`."""
        from include.preference import tasks

        return tasks.build_features(tasks.logical_day(data_interval_start), run_id=run_id)

    # Training reads the earlier days' examples: each day's examples wait for the day before's.
    @task(depends_on_past=True)
    def build_training_data(features: dict, data_interval_start=None, run_id=None) -> dict:
        """Write the training examples whose label horizon ends today (TFRecords + Parquet)."""
        from airflow.sdk.exceptions import AirflowSkipException

        from include.preference import tasks

        result = tasks.build_training_data(tasks.logical_day(data_interval_start), run_id=run_id)
        if "skipped" in result:
            raise AirflowSkipException(result["skipped"])
        return result

    @task(queue="gpu", pool="gpu")
    def train_model(training: dict, data_interval_start=None, run_id=None, dag_run=None) -> dict:
        """Train (GPU queue and pool), evaluate on the holdout, register in MLflow, gate `champion`."""
        from airflow.sdk.exceptions import AirflowSkipException

        from include.preference import tasks

        backfill = str(getattr(dag_run, "run_type", "")).lower().endswith("backfill")
        result = tasks.train_model(tasks.logical_day(data_interval_start), run_id=run_id, backfill=backfill)
        if "skipped" in result:
            raise AirflowSkipException(result["skipped"])
        return result

    @task(queue="gpu", pool="gpu")
    def train_profile_model(training: dict, data_interval_start=None, run_id=None, dag_run=None) -> dict:
        """Train the customer profile autoencoder (GPU queue and pool), register it, gate its `champion`."""
        from airflow.sdk.exceptions import AirflowSkipException

        from include.preference import tasks

        backfill = str(getattr(dag_run, "run_type", "")).lower().endswith("backfill")
        result = tasks.train_profile_model(tasks.logical_day(data_interval_start), run_id=run_id, backfill=backfill)
        if "skipped" in result:
            raise AirflowSkipException(result["skipped"])
        return result

    @task(trigger_rule="none_failed")
    def score_profiles(features: dict, data_interval_start=None, run_id=None) -> dict:
        """Every customer's profile and reconstruction error with the day's champion profile model."""
        from airflow.sdk.exceptions import AirflowSkipException

        from include.preference import tasks

        result = tasks.score_profiles(tasks.logical_day(data_interval_start), run_id=run_id)
        if "skipped" in result:
            raise AirflowSkipException(result["skipped"])
        return result

    # The text profile folds in the previous days' review embeddings: wait for the previous day.
    @task(depends_on_past=True)
    def embed_reviews(validated: dict, data_interval_start=None, run_id=None) -> dict:
        """Sentence embeddings of the day's reviews; customers' text profiles."""
        from include.preference import tasks

        return tasks.embed_reviews(tasks.logical_day(data_interval_start), run_id=run_id)

    @task
    def compute_rfm(features: dict, data_interval_start=None, run_id=None) -> dict:
        """RFM value tiers of the customers as of the day; publish `segments/rfm/`."""
        from include.preference import tasks

        return tasks.compute_rfm(tasks.logical_day(data_interval_start), run_id=run_id)

    @task(trigger_rule="none_failed")
    def score_products(data_interval_start=None, run_id=None) -> dict:
        """Product embeddings with the day's champion (after training, trained or not)."""
        from airflow.sdk.exceptions import AirflowSkipException

        from include.preference import tasks

        result = tasks.score_products(tasks.logical_day(data_interval_start), run_id=run_id)
        if "skipped" in result:
            raise AirflowSkipException(result["skipped"])
        return result

    @task
    def score_customers(products: dict, data_interval_start=None, run_id=None) -> dict:
        """Customer embeddings, candidate propensities and top-K recommendations."""
        from include.preference import tasks

        return tasks.score_customers(tasks.logical_day(data_interval_start), run_id=run_id)

    # Centroid ids are matched to the previous centroids: wait for the previous day. Runs after the
    # profiles too (skipped when no profile model is champion yet), which it compares with.
    @task(depends_on_past=True, trigger_rule="none_failed")
    def refresh_segments(customers: dict | None, rfm: dict, texts: dict, data_interval_start=None, run_id=None) -> dict:
        """New centroids when the champion changed (t-SNE + DBSCAN on a stratified sample)."""
        from airflow.sdk.exceptions import AirflowSkipException

        from include.preference import tasks

        day = tasks.logical_day(data_interval_start)
        if not tasks.has_segment_inputs(day):
            raise AirflowSkipException(f"nothing to segment on {day}: no champion scored that day")
        results = {entity: tasks.refresh_segments(day, entity, run_id=run_id) for entity in ("customers", "products")}
        if all("skipped" in r for r in results.values()):
            raise AirflowSkipException("; ".join(f"{e}: {r['skipped']}" for e, r in results.items()))
        return results

    # The migration matrix compares with the previous day's assignment: wait for it.
    @task(trigger_rule="none_failed", depends_on_past=True)
    def assign_segments(data_interval_start=None, run_id=None) -> dict:
        """Every customer and product to its nearest centroid (L1); summary and migration."""
        from airflow.sdk.exceptions import AirflowSkipException

        from include.preference import tasks

        day = tasks.logical_day(data_interval_start)
        if not tasks.has_segment_inputs(day):
            raise AirflowSkipException(f"nothing to segment on {day}: no model was champion on that day")
        return {entity: tasks.assign_segments(day, entity, run_id=run_id) for entity in ("customers", "products")}

    validated = validate_raw_data(land_raw_data())
    features = build_features(validated)
    training = build_training_data(features)
    trained = train_model(training)
    rfm = compute_rfm(features)
    products = score_products()
    trained >> products
    profiles = score_profiles(features)
    train_profile_model(training) >> profiles
    refresh = refresh_segments(score_customers(products), rfm, embed_reviews(validated))
    profiles >> refresh
    refresh >> assign_segments()


marketplace_ingest_daily()
