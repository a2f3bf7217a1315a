"""The plugin's API and pages against real published outputs: two days of the synthetic chain
scored, segmented and tiered by the real tasks in a real S3 bucket, a validation report with Data
Docs from the real validation task, and a training report for the registered champion."""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from include.preference import tasks
from include.preference.storage import PartitionRef, list_partitions, read_file, read_table
from tests.support.browser import SHOTS, logged_in_browser
from tests.support.lake import publish_from

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FEATURE_TABLES = ("customers", "products", "state_pairs", "state_customer_categories")


@pytest.fixture(scope="module")
def published(
    training_sets, small_model, small_profile, s3_service, mlflow_service, tmp_path_factory
) -> Iterator[dict[str, Any]]:
    import mlflow
    from mlflow.tracking import MlflowClient

    from include.preference.config import load_settings
    from include.preference.evaluation.metrics import decision_metrics
    from include.preference.features import spec
    from include.preference.model import load_model, predict_frame
    from include.preference.registry import CHAMPION, CHAMPION_SINCE, decide
    from include.preference.training.jobs import (
        baseline_rankings,
        baseline_scores,
        holdout_scores,
        holdout_slices,
        publish_training_report,
    )
    from tests.conftest import make_store

    store = make_store(s3_service)
    local = tmp_path_factory.mktemp("webapp-local")
    name = f"webapp-{local.name[-8:]}".replace("_", "-")
    day = training_sets["holdout"]
    next_day = day + dt.timedelta(days=1)
    with pytest.MonkeyPatch.context() as env:
        for key, value in s3_service.client_env().items():
            env.setenv(key, value)
        env.setenv("PREFERENCE_BUCKET", store.bucket)
        env.setenv("MLFLOW_TRACKING_URI", mlflow_service.mlflow_uri)
        env.setenv("PREFERENCE_LOCAL_DIR", str(local))
        env.setenv("PREFERENCE_MODEL_NAME", name)
        env.setenv("PREFERENCE_SEGMENT_SAMPLE_PER_STRATUM", "120")
        for d in (day, next_day):
            for table in FEATURE_TABLES:
                publish_from(training_sets["lake"], PartitionRef("features", table, d), store)
        # The catalogue of the scored world on the later day (titles of recommended products).
        publish_from(training_sets["lake"], PartitionRef("validated", "products", next_day), store)

        # The champion, registered in MLflow, and its training report (holdout metrics on the
        # holdout anchor's examples, computed by the training job's own functions).
        mlflow.set_tracking_uri(mlflow_service.mlflow_uri)
        model = load_model(small_model)
        with mlflow.start_run() as run:
            info = mlflow.keras.log_model(model, name="model")
        version = mlflow.register_model(info.model_uri, name)
        client = MlflowClient()
        client.set_model_version_tag(name, version.version, CHAMPION_SINCE, day.isoformat())
        client.set_registered_model_alias(name, CHAMPION, version.version)
        # The customer profile autoencoder, champion of its own registered model.
        with mlflow.start_run():
            profile_info = mlflow.keras.log_model(load_model(small_profile), name="profile")
        profile = mlflow.register_model(profile_info.model_uri, f"{name}-profile")
        client.set_model_version_tag(f"{name}-profile", profile.version, CHAMPION_SINCE, day.isoformat())
        client.set_registered_model_alias(f"{name}-profile", CHAMPION, profile.version)
        holdout = training_sets["frame"](day)
        metrics = holdout_scores(holdout, predict_frame(model, holdout), 10)
        baselines = baseline_scores(holdout, 10)
        rankings = {"model": predict_frame(model, holdout), **baseline_rankings(holdout)}
        slices = holdout_slices(holdout, rankings, 10, seed=0)
        validation = training_sets["frame"](training_sets["train"][-1])
        decision = decision_metrics(
            validation[spec.LABEL].to_numpy(),
            predict_frame(model, validation),
            holdout[spec.LABEL].to_numpy(),
            predict_frame(model, holdout),
        )
        gate = decide(metrics["recall_at_k"], None, {b: v["recall_at_k"] for b, v in baselines.items()}, backfill=False)
        summary = {
            "date": day.isoformat(),
            "model": name,
            "version": str(version.version),
            "mlflow_run_id": run.info.run_id,
            "mlflow_experiment_id": run.info.experiment_id,
            "champion_version": str(version.version),
            "gate": gate.to_dict(),
            "k": 10,
            "holdout": metrics,
            "threshold_metrics": {**decision, "validation_anchor": training_sets["train"][-1].isoformat()},
            "baselines": baselines,
            "slices": slices,
        }
        publish_training_report(store, load_settings(), day, summary, [], run_id="t", upstream=[])

        # A landed and validated day: its Data Docs.
        tasks.land_raw_data(day, run_id="t", generator={"customers": 60, "products": 20, "sessions_per_day": 30})
        tasks.validate_raw_data(day, run_id="t")

        for d in (day, next_day):
            tasks.compute_rfm(d, run_id="t")
            tasks.score_products(d, run_id="t")
            tasks.score_customers(d, run_id="t")
            tasks.score_profiles(d, run_id="t")
            for entity in ("customers", "products"):
                tasks.refresh_segments(d, entity, run_id="t")
                tasks.assign_segments(d, entity, run_id="t")
        yield {
            "store": store,
            "day": day,
            "next_day": next_day,
            "version": str(version.version),
            "holdout_rows": len(holdout),
            "holdout_metrics": metrics,
            "slices": slices,
            "run_id": run.info.run_id,
            "experiment_id": run.info.experiment_id,
            "mlflow_uri": mlflow_service.mlflow_uri,
            "runtime": dataclasses.replace(s3_service, bucket=store.bucket),
        }


@pytest.fixture(scope="module")
def api(published):
    from fastapi.testclient import TestClient

    from include.preference.webapp.app import airflow_user, create_app
    from include.preference.webapp.outputs import Outputs

    app = create_app(lambda: Outputs(published["store"], published["mlflow_uri"]))
    # Authentication is Airflow's (tested against the real API server below); here the data.
    app.dependency_overrides[airflow_user] = lambda: "tester"
    with TestClient(app) as client:
        yield client


def _customer_rows(published, table: str, day: dt.date, customer_id: str) -> list[dict[str, Any]]:
    import pyarrow.compute as pc

    frame = read_table(published["store"], PartitionRef(*table.split("/"), day))
    return frame.filter(pc.equal(frame.column("customer_id"), customer_id)).to_pylist()


def test_customer_lookup_returns_the_published_tier_segment_and_recommendations(published, api):
    day = published["next_day"]
    recommendations = read_table(published["store"], PartitionRef("scores", "recommendations", day)).to_pandas()
    customer_id = sorted(recommendations["customer_id"].unique())[0]
    answer = api.get(f"/api/customers/{customer_id}")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    expected = recommendations[recommendations["customer_id"] == customer_id].sort_values("rank")
    assert [r["product_id"] for r in body["recommendations"]] == expected["product_id"].tolist()
    assert [r["rank"] for r in body["recommendations"]] == list(range(1, len(expected) + 1))
    assert [round(r["propensity"], 6) for r in body["recommendations"]] == [
        round(float(p), 6) for p in expected["propensity"]
    ]
    assert body["model_version"] == published["version"]
    assert body["recommendations_date"] == day.isoformat()
    # Each product is named as the day's validated catalogue names it.
    catalogue = read_table(published["store"], PartitionRef("validated", "products", day)).to_pandas()
    titles = dict(zip(catalogue["product_id"], catalogue["title"], strict=True))
    assert [r["title"] for r in body["recommendations"]] == [titles[p] for p in expected["product_id"]]
    assert all(r["title"] for r in body["recommendations"])
    (tier,) = _customer_rows(published, "segments/rfm", day, customer_id)
    assert body["value_tier"]["tier"] == tier["tier"] and body["value_tier"]["date"] == day.isoformat()
    (segment,) = _customer_rows(published, "segments/customers", day, customer_id)
    assert body["segment"]["cluster_id"] == segment["cluster_id"]

    # As of the first day: that day's outputs.
    earlier = api.get(f"/api/customers/{customer_id}", params={"date": published["day"].isoformat()}).json()
    assert earlier["recommendations_date"] == published["day"].isoformat()


def test_customer_lookup_gives_the_nearest_customers_by_profile_and_the_reconstruction_error(published, api):
    import numpy as np

    day = published["next_day"]
    profiles = read_table(published["store"], PartitionRef("scores", "customer_profiles", day)).to_pandas()
    customer_id = sorted(profiles["customer_id"])[len(profiles) // 2]
    body = api.get(f"/api/customers/{customer_id}").json()["profile"]
    assert body["date"] == day.isoformat() and body["model_version"] == "1"
    mine = profiles[profiles["customer_id"] == customer_id].iloc[0]
    assert body["reconstruction_error"] == pytest.approx(float(mine["reconstruction_error"]), rel=1e-6)
    errors = profiles["reconstruction_error"].to_numpy()
    assert body["error_percentile"] == pytest.approx(float(np.mean(errors < mine["reconstruction_error"])))
    # The five nearest others by Euclidean distance between published profiles, nearest first.
    vectors = np.stack(profiles["profile"].to_numpy()).astype(np.float64)
    distance = np.sqrt(np.square(vectors - np.asarray(mine["profile"], np.float64)).sum(axis=1))
    others = profiles.assign(distance=distance)[profiles["customer_id"] != customer_id]
    expected = others.sort_values(["distance", "customer_id"]).head(5)
    assert [n["customer_id"] for n in body["neighbours"]] == expected["customer_id"].tolist()
    np.testing.assert_allclose([n["distance"] for n in body["neighbours"]], expected["distance"], rtol=1e-5)
    page = api.get(f"/ui/customers/{customer_id}").text
    assert 'id="similar-customers"' in page and f'/ui/customers/{expected["customer_id"].iloc[0]}"' in page
    assert f"Reconstruction error {body['reconstruction_error']:.3f}" in page


def test_bad_input_gets_404_or_422_and_never_reaches_another_key(published, api):
    assert api.get("/api/customers/C99999999").status_code == 404
    for malformed in ("not a customer", "x" * 65, "-leading-dash", "C1;rm -rf"):
        assert api.get(f"/api/customers/{malformed}").status_code == 422, malformed
    assert api.get("/api/customers/C1", params={"date": "2025-13-01"}).status_code == 422
    assert api.get("/api/segments/users").status_code == 422
    assert api.get("/plots/tsne/../../raw.png").status_code == 404
    docs = f"/data-docs/{published['day'].isoformat()}"
    index = api.get(f"{docs}/index.html")
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    assert "Validation" in index.text or "validation" in index.text
    for escape in ("../../raw/events/_MANIFEST.json", "%2e%2e/%2e%2e/raw/events/_MANIFEST.json", "/etc/passwd"):
        assert api.get(f"{docs}/{escape}").status_code == 404, escape


def test_segments_tiers_model_and_run_links(published, api):
    segments = api.get("/api/segments/customers").json()
    assert [h["date"] for h in segments["history"]] == [published["day"].isoformat(), published["next_day"].isoformat()]
    for day in segments["history"]:
        assert abs(sum(c["share"] for c in day["clusters"]) - 1.0) < 1e-9
    assert segments["migration"]["date"] == published["next_day"].isoformat()
    tiers = api.get("/api/value-tiers").json()
    rfm = read_table(published["store"], PartitionRef("segments", "rfm", published["next_day"])).to_pandas()
    assert tiers["tiers"] == {k: int(v) for k, v in rfm["tier"].value_counts().items() if v} | {
        k: 0 for k in tiers["tiers"] if k not in set(rfm["tier"])
    }
    model = api.get("/api/model").json()
    assert model["champion_version"] == published["version"]
    assert {"popularity", "buy_again"} <= set(model["baselines"])
    assert model["holdout"] == pytest.approx(published["holdout_metrics"]) and "reason" in model["gate"]
    run_page = f"{published['mlflow_uri']}/#/experiments/{published['experiment_id']}/runs/{published['run_id']}"
    assert model["mlflow_run_url"] == run_page
    links = api.get(f"/api/runs/{published['day'].isoformat()}").json()
    assert links["data_docs"].endswith("index.html") and links["mlflow_run_id"] == published["run_id"]
    assert api.get(f"/api/runs/{published['next_day'].isoformat()}").json()["data_docs"] is None
    png = api.get("/plots/tsne/customers.png")
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_pages_show_the_data_and_the_api_is_documented(published, api):
    page = api.get("/ui")
    assert page.status_code == 200
    assert f'id="champion-version">{published["version"]}<' in page.text
    assert "<th>Recall@10</th>" in page.text and "<th>recall_at_k</th>" not in page.text  # named, with its K
    # The propensity as a decision: the threshold and the holdout's confusion matrix as published.
    decision = api.get("/api/model").json()["threshold_metrics"]
    assert f'id="decision-threshold">{decision["threshold"]:.3f}<' in page.text
    confusion = re.search(r'<table id="confusion">(.*?)</table>', page.text, re.S)
    assert confusion is not None
    cells = [int(c) for c in re.findall(r"<td>(\d+)</td>", confusion.group(1))]
    order = ("true_positives", "false_negatives", "false_positives", "true_negatives")
    assert cells == [int(decision[k]) for k in order]
    assert sum(cells) == published["holdout_rows"]
    # The model against every baseline per value tier and new vs returning, each group's size given.
    table = re.search(r'<table id="slices">(.*?)</table>', page.text, re.S)
    assert table is not None
    slices = published["slices"]
    header = re.findall(r"<th>([^<]+)</th>", table.group(1))
    assert header[0] == "model" and sorted(header) == sorted(slices) and {"buy_again", "popularity"} <= set(header)
    rows = re.findall(r'<tr data-group="(\w+):(\w+)"><td class="text">([^<]+)</td>\s*(.*?)</tr>', table.group(1), re.S)
    published_groups = [(slicing, label) for slicing, groups in slices["model"].items() for label in groups]
    assert sorted((r[0], r[1]) for r in rows) == sorted(published_groups)
    tiers = [r[1] for r in rows if r[0] == "value_tier"]
    assert tiers == [t for t in ("high", "mid", "low", "none") if t in tiers]  # best tier first
    for slicing, name, title, cells_html in rows:
        assert title.endswith(f"({int(slices['model'][slicing][name]['customers'])})")
        shown = re.findall(r"<td>([^<]+)</td>", cells_html)
        expected = [f"{slices[s][slicing][name]['recall_at_k']:.4f}" for s in header]
        assert shown == expected, (title, shown, expected)
    assert "Customers segments" in page.text and "RFM value tiers" in page.text
    customer_id = read_table(published["store"], PartitionRef("scores", "recommendations", published["next_day"]))[
        "customer_id"
    ][0].as_py()
    found = api.get(f"/ui/customers/{customer_id}")
    assert found.status_code == 200 and f'<span id="customer-id">{customer_id}</span>' in found.text
    missing = api.get("/ui/customers/C99999999")
    assert missing.status_code == 404 and "No published output knows customer C99999999" in missing.text
    # People get pages, not JSON: a malformed id says what an id looks like, with an example.
    for malformed in ("a%20b%3Cc", "-x", "x" * 65):
        page = api.get(f"/ui/customers/{malformed}")
        assert page.status_code == 400 and 'id="malformed"' in page.text and "for example" in page.text, malformed
        assert page.headers["content-type"].startswith("text/html")
    searched = api.get("/ui/customers", params={"customer_id": "bad id!"})
    assert searched.status_code == 400 and 'id="malformed"' in searched.text
    # A pasted id with spaces around it is trimmed.
    trimmed = api.get("/ui/customers", params={"customer_id": f"  {customer_id} "}, follow_redirects=False)
    assert trimmed.status_code == 303 and trimmed.headers["location"].endswith(f"/ui/customers/{customer_id}")
    spec = api.get("/openapi.json").json()
    lookup = spec["paths"]["/api/customers/{customer_id}"]["get"]
    assert "422" in lookup["responses"] and lookup["parameters"][0]["schema"]["pattern"]


def test_segment_profiles_in_the_api_the_dashboard_and_linked_from_the_customer_page(published, api):
    day = published["next_day"]
    body = api.get("/api/segments/customers/profiles").json()
    document = json.loads(read_file(published["store"], PartitionRef("segments", "customers", day), "profiles.json"))
    assert body["date"] == day.isoformat() and set(body["segments"]) == set(document) and document
    catalogue = read_table(published["store"], PartitionRef("validated", "products", day)).to_pandas()
    titles = dict(zip(catalogue["product_id"], catalogue["title"], strict=True))
    for cluster, profile in body["segments"].items():
        assert profile["members"] == document[cluster]["members"]
        assert [t["title"] for t in profile["top_products"]] == [
            titles.get(t["product_id"]) for t in document[cluster]["top_products"]
        ]
    assert set(body["segments"]) == {c for c, p in document.items() if p["members"] > 0}  # no empty cluster
    # Each named by its top category and commonest tier; its size against the day before's summary.
    earlier = json.loads(
        read_file(published["store"], PartitionRef("segments", "customers", published["day"]), "summary.json")
    )
    sizes = {str(row["cluster_id"]): row["count"] for row in earlier}
    for cluster, profile in body["segments"].items():
        top = profile["top_categories"][0]["category"] if profile["top_categories"] else "mixed tastes"
        assert profile["name"].startswith(top)
        counted = {tier: n for tier, n in profile["tiers"].items() if n}
        if counted:
            commonest = [tier for tier, n in counted.items() if n == max(counted.values())]
            assert any(profile["name"].endswith(f"mostly {tier} value") for tier in commonest)
        assert profile["previous_date"] == published["day"].isoformat()
        assert profile["previous_members"] == sizes.get(cluster)
    page = api.get("/ui").text
    for cluster, profile in body["segments"].items():
        assert f'<tr id="segment-customers-{cluster}"><td class="text">segment {cluster}</td>' in page
        row = re.search(rf'<tr id="segment-customers-{cluster}">(.*?)</tr>', page, re.S)
        assert row is not None and profile["name"] in html.unescape(row.group(1))
        if profile["previous_members"] is not None:
            change = profile["members"] - profile["previous_members"]
            assert f"{change:+d} since {published['day'].isoformat()}" in row.group(1)
    customer = api.get(f"/api/customers/{body_customer(published)}").json()
    linked = api.get(f"/ui/customers/{customer['customer_id']}").text
    assert f'href="/ui#segment-customers-{customer["segment"]["cluster_id"]}"' in linked


def body_customer(published) -> str:
    table = read_table(published["store"], PartitionRef("segments", "customers", published["next_day"]))
    return table["customer_id"][0].as_py()


@pytest.mark.unit
def test_strings_from_the_data_are_escaped_in_pages():
    from include.preference.webapp.app import render

    hostile = '<script>alert("x")</script>'
    page = render(
        "customer.html",
        customer_id="C1",
        base="",
        customer={
            "customer_id": "C1",
            "model_version": hostile,
            "recommendations_date": "2025-01-01",
            "value_tier": None,
            "segment": None,
            "recommendations": [
                {
                    "rank": 1,
                    "product_id": hostile,
                    "title": hostile,
                    "category": hostile,
                    "propensity": 0.5,
                    "source": hostile,
                }
            ],
        },
    )
    assert "<script>" not in page and page.count("&lt;script&gt;") == 5


@pytest.mark.unit
def test_a_customer_page_for_a_date_without_scores_says_so_and_every_reason_has_words():
    from include.preference.scoring.batch import SOURCES
    from include.preference.webapp.app import REASONS, render

    assert set(REASONS) == set(SOURCES)
    customer = {"customer_id": "C1", "value_tier": None, "segment": None, "recommendations": [], "profile": None}
    page = render("customer.html", customer_id="C1", base="/p", customer=customer, day=dt.date(2025, 1, 3))
    assert 'id="no-recommendations"' in page and "as of 2025-01-03" in page and "Top 0" not in page
    assert 'href="/p/ui/customers/C1">latest</a>' in page and 'value="2025-01-03"' in page


def test_the_customer_page_explains_its_numbers_in_words(published, api):
    from include.preference.webapp.app import REASONS

    recommendations = read_table(published["store"], PartitionRef("scores", "recommendations", published["next_day"]))
    customer_id = recommendations["customer_id"][0].as_py()
    body = api.get(f"/api/customers/{customer_id}").json()
    page = api.get(f"/ui/customers/{customer_id}").text
    tier = body["value_tier"]
    assert tier is not None and set(tier["scores"]) == {"recency", "frequency", "monetary"}
    assert sum(tier["scores"].values()) == pytest.approx(tier["rfm_score"])
    assert f'id="rfm-recency">{tier["recency_days"]:.0f}<' in page
    assert f'id="rfm-frequency">{tier["frequency"]:.0f}<' in page
    assert f'id="rfm-monetary">{tier["monetary"]:.2f}<' in page
    assert "of 3: low below 1, mid below 2, high from 2" in page
    assert "L1" not in page and "distance from the segment's centre" in page
    for row in body["recommendations"]:
        assert REASONS[row["source"]] in page
    assert "embedding_neighbours" not in page and "buy_again" not in page
    assert 'type="date" name="date"' in page


@pytest.fixture(scope="module")
def airflow(published) -> Iterator[Any]:
    """Airflow's real API server (standalone) on the published bucket, with the plugin loaded."""
    from include.preference.services import ServiceManager

    runtime = published["runtime"]
    manager = ServiceManager(runtime)
    manager.start("airflow")
    try:
        yield runtime
    finally:
        manager.stop("airflow")


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_the_dashboard_fits_segments_as_rows_lists_every_recent_day_and_says_why_tiers_count_fewer(published, api):
    page = api.get("/ui").text
    history = api.get("/api/segments/customers").json()["history"]
    table = re.search(r'<table class="history" id="history-customers">(.*?)</table>', page, re.S)
    assert table is not None
    header = re.findall(r"<th>(\d{4}-\d{2}-\d{2})</th>", table.group(1))
    assert header == [h["date"] for h in reversed(history)][:7]
    rows = re.findall(r"segment (-?\d+)</td>", table.group(1))
    assert rows == [str(c["cluster_id"]) for c in history[-1]["clusters"]]
    assert len(history) > 1 and "/plots/sizes/customers.png" in page and 'id="one-day-customers"' not in page
    store = published["store"]
    published_days = set()
    for layer, table_name in (
        ("reports", "validation"),
        ("reports", "training"),
        ("segments", "customers"),
        ("scores", "recommendations"),
    ):
        published_days |= {d.isoformat() for d in list_partitions(store, layer, table_name)}
    runs = re.search(r'<h2 id="runs">.*?</table>', page, re.S)
    assert runs is not None
    assert set(re.findall(r'<td class="text">(\d{4}-\d{2}-\d{2})</td>', runs.group(0))) == published_days
    tiers = api.get("/api/value-tiers").json()
    same_day = next(h for h in history if h["date"] == tiers["date"])
    note = re.search(r'<p class="muted" id="tiers-note">(.*?)</p>', page, re.S)
    assert note is not None
    assert f"{sum(tiers['tiers'].values())} customers who have ordered" in note.group(1)
    assert f"all\n{sum(c['count'] for c in same_day['clusters'])} customers with a taste vector" in note.group(1)


def test_airflow_serves_the_plugin_only_to_authenticated_callers(published, airflow):
    from include.preference.airflow_client import AirflowClient
    from include.preference.services import ADMIN_USER

    base = f"{airflow.airflow_url}/preference"
    assert _get(f"{base}/api/model")[0] == 401
    assert _get(f"{base}/ui")[0] == 401
    assert _get(f"{base}/api/model", token="not-a-token")[0] in (401, 403)  # Airflow: invalid JWT -> 403
    token = AirflowClient(airflow.airflow_url, ADMIN_USER, airflow.admin_password).token()
    status, body = _get(f"{base}/api/model", token)
    assert status == 200, body
    assert json.loads(body)["champion_version"] == published["version"]
    status, body = _get(f"{airflow.airflow_url}/api/v2/plugins", token)
    assert status == 200 and "customer_preference" in body.decode()


def test_browser_logs_in_and_reads_the_dashboard_and_a_customer(published, airflow):
    """Open the plugin's view from Airflow's navigation, then a customer's page; screenshots are kept."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    shots = SHOTS
    with logged_in_browser(airflow) as (driver, wait):
        # The plugin's entry in Airflow's UI: the dashboard inside Airflow's page.
        driver.get(f"{airflow.airflow_url}/plugin/customer-preference")
        frame = wait.until(ec.presence_of_element_located((By.TAG_NAME, "iframe")))
        driver.switch_to.frame(frame)
        version = wait.until(ec.presence_of_element_located((By.ID, "champion-version")))
        assert version.text == published["version"]
        assert "Customers segments" in driver.find_element(By.TAG_NAME, "body").text
        driver.switch_to.default_content()
        driver.save_screenshot(str(shots / "dashboard.png"))

        # A customer, looked up through the dashboard's form.
        recommendations = read_table(
            published["store"], PartitionRef("scores", "recommendations", published["next_day"])
        )
        customer_id = recommendations["customer_id"][0].as_py()
        driver.get(f"{airflow.airflow_url}/preference/ui")
        box = wait.until(ec.presence_of_element_located((By.NAME, "customer_id")))
        box.send_keys(customer_id)
        box.submit()
        wait.until(ec.presence_of_element_located((By.ID, "recommendations")))
        assert driver.find_element(By.ID, "customer-id").text == customer_id
        rows = driver.find_elements(By.CSS_SELECTOR, "#recommendations tr")
        expected = recommendations.to_pandas()
        assert len(rows) - 1 == int((expected["customer_id"] == customer_id).sum())
        assert driver.find_element(By.ID, "model-version").text == published["version"]
        catalogue = read_table(published["store"], PartitionRef("validated", "products", published["next_day"]))
        titles = dict(zip(catalogue["product_id"].to_pylist(), catalogue["title"].to_pylist(), strict=True))
        first = expected[expected["customer_id"] == customer_id].sort_values("rank")["product_id"].iloc[0]
        assert titles[first] in rows[1].text
        driver.save_screenshot(str(shots / "customer.png"))
    assert (shots / "dashboard.png").stat().st_size > 10_000
    print(f"screenshots: {shots}/dashboard.png, {shots}/customer.png")


def _local_assets(page: str) -> list[str]:
    return re.findall(r'<(?:script|link)\b[^>]*\b(?:src|href)="(/[^"]+)"', page)


def test_the_api_docs_and_the_data_docs_load_only_assets_this_app_serves(published, api):
    from include.preference.webassets import external_assets

    docs = api.get("/docs")
    assert docs.status_code == 200 and "SwaggerUIBundle" in docs.text
    day = published["day"].isoformat()
    index = api.get(f"/data-docs/{day}/index.html")
    assert index.status_code == 200 and "jquery" in index.text
    # The index's table rows link their pages from its script's data (_table_row_link_path).
    validation_pages = sorted(set(re.findall(r'(validations/[^"\\]+?\.html)', index.text)))
    assert validation_pages, "the index links no validation result"
    page = api.get(f"/data-docs/{day}/{validation_pages[0]}")
    assert page.status_code == 200
    for text in (docs.text, index.text, page.text):
        assert external_assets(text) == []
        assets = _local_assets(text)
        assert any("/assets/" in a for a in assets)
        for asset in assets:
            answer = api.get(asset)
            assert answer.status_code == 200 and len(answer.content) > 100, asset
    assert api.get("/assets/jquery@3.7.1/package.json").status_code == 404
    assert api.get("/assets/..%2F..%2Fpyproject.toml").status_code == 404


def test_the_api_docs_and_the_data_docs_render_without_internet(published, airflow):
    """Chromium with no host name resolving: Swagger UI lists the API's operations, and the Data
    Docs page runs its scripts and applies its styles, every request answered by 127.0.0.1."""
    from selenium.webdriver.common.by import By

    base = f"{airflow.airflow_url}/preference"
    api_paths = published_openapi_paths()
    with logged_in_browser(airflow, offline=True) as (driver, wait):
        driver.get(f"{base}/docs")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= len(api_paths))
        shown = {e.get_attribute("data-path") for e in driver.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
        assert set(api_paths) <= shown, (api_paths, shown)
        driver.save_screenshot(str(SHOTS / "api-docs.png"))
        docs_requests = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")

        driver.get(f"{base}/data-docs/{published['day'].isoformat()}/index.html")
        wait.until(lambda d: d.execute_script("return document.readyState") == "complete")
        scripts = driver.execute_script(
            "return [typeof jQuery, typeof jQuery.fn.bootstrapTable, typeof jQuery.fn.tooltip, typeof vegaEmbed]"
        )
        assert scripts == ["function"] * 4, scripts
        sheets = driver.execute_script(
            "return Array.from(document.styleSheets).filter(s => s.href).map(s => [s.href, s.cssRules.length])"
        )
        assert sheets and all(rules > 0 for _, rules in sheets), sheets
        # Bootstrap's utilities apply (without its stylesheet a div is a block).
        display = driver.execute_script(
            "const e = document.createElement('div'); e.className = 'd-flex'; document.body.appendChild(e);"
            "const shown = getComputedStyle(e).display; e.remove(); return shown"
        )
        assert display == "flex", display
        driver.save_screenshot(str(SHOTS / "data-docs.png"))
        docs_requests += driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    outside = [url for url in docs_requests if not url.startswith(airflow.airflow_url)]
    assert not outside, outside


def published_openapi_paths() -> list[str]:
    from include.preference.webapp.app import create_app

    return sorted(create_app(lambda: None).openapi()["paths"])  # type: ignore[arg-type, return-value]
