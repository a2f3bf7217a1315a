"""Spark batch scoring equals single-process Keras on the same rows; candidates and top-K hold."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from include.preference.features import spec
from include.preference.features.build import feature_ref, pair_features
from include.preference.model import load_model, predict_frame
from include.preference.scoring import batch
from include.preference.scoring.handle import ModelHandle, encoder_of

pytestmark = [pytest.mark.integration]

TAG = {"model_version": "7", "input_manifests": '{"s3://lake/features/x": "abc"}'}


@pytest.fixture(scope="module")
def day_tables(training_sets, spark):
    lake = training_sets["lake"]
    day = training_sets["holdout"]
    tables = {
        t: lake.read(spark, feature_ref(t, day))
        for t in ("customers", "products", "state_pairs", "state_customer_categories")
    }
    return day, tables


@pytest.fixture(scope="module")
def handle(small_model):
    return ModelHandle(uri=str(small_model), version="7")


def _vectors(frame: pd.DataFrame) -> np.ndarray:
    return np.stack(frame[batch.EMBEDDING].to_numpy()).astype(np.float32)


@pytest.mark.parametrize("entity", ["customer", "product"])
@pytest.mark.parametrize("method", ["arrow", "pandas"])
def test_spark_embeddings_equal_single_process_predict(day_tables, handle, small_model, entity, method):
    _, tables = day_tables
    source = tables[f"{entity}s"]
    key = batch.KEY_OF[entity]
    scored = batch.embeddings(source.repartition(3), handle, entity, TAG, method).toPandas().sort_values(key)
    rows = source.toPandas().sort_values(key).reset_index(drop=True)
    encoder = encoder_of(load_model(small_model), entity)
    inputs = {f.name: rows[f.name].to_numpy() for f in spec.features_of(entity)}
    expected = np.asarray(encoder.predict(inputs, verbose=0), dtype=np.float32)

    assert scored[key].tolist() == rows[key].tolist()
    got = _vectors(scored)
    assert got.shape == expected.shape and got.shape[1] > 1
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert set(scored["model_version"]) == {"7"} and set(scored["input_manifests"]) == {TAG["input_manifests"]}


def test_candidates_ranked_with_the_full_model(day_tables, handle, small_model, spark):
    day, tables = day_tables
    products = batch.embeddings(tables["products"], handle, "product", TAG)
    neighbours = batch.product_neighbours(products).toPandas()
    active = batch.active_customers(tables["customers"], 90)
    candidates = batch.candidates(
        active,
        tables["state_pairs"],
        tables["state_customer_categories"],
        tables["products"],
        spark.createDataFrame(neighbours),
    )
    pairs = pair_features(
        candidates,
        tables["state_pairs"],
        tables["state_customer_categories"],
        tables["customers"],
        tables["products"],
        day,
    )
    rows = (
        candidates.join(tables["customers"], batch.CUSTOMER)
        .join(tables["products"], batch.PRODUCT)
        .join(pairs, [batch.CUSTOMER, batch.PRODUCT])
        .select(batch.CUSTOMER, batch.PRODUCT, "source", *spec.BY_NAME)
    )
    scored = batch.propensities(rows, handle, TAG, keep=("source",)).toPandas()
    local = rows.toPandas()
    expected = predict_frame(load_model(small_model), local)
    merged = (
        local[[batch.CUSTOMER, batch.PRODUCT]]
        .assign(expected=expected)
        .merge(scored, on=[batch.CUSTOMER, batch.PRODUCT])
    )
    assert len(merged) == len(local) == len(scored)
    np.testing.assert_allclose(merged["propensity"], merged["expected"], rtol=1e-4, atol=1e-6)

    # Every active customer has candidates; their own purchases are among them (buy-again).
    active_ids = set(active.toPandas()[batch.CUSTOMER])
    assert set(scored[batch.CUSTOMER]) == active_ids
    own = tables["state_pairs"].where("purchases_all > 0").toPandas()
    own = own[own[batch.CUSTOMER].isin(active_ids)]
    keyed = set(zip(scored[batch.CUSTOMER], scored[batch.PRODUCT], strict=True))
    assert set(zip(own[batch.CUSTOMER], own[batch.PRODUCT], strict=True)) <= keyed
    assert set(scored["source"]) <= set(batch.SOURCES) and "embedding_neighbours" in set(scored["source"])
    # Neighbours: never the product itself, ``NEIGHBOURS`` each (fewer only in a tiny catalogue).
    assert (neighbours[batch.PRODUCT] != neighbours["neighbour_id"]).all()
    assert neighbours.groupby(batch.PRODUCT).size().max() == min(
        batch.NEIGHBOURS, len(set(neighbours[batch.PRODUCT])) - 1
    )

    top = batch.top_k(spark.createDataFrame(scored), 5).toPandas()
    for customer, part in top.groupby(batch.CUSTOMER):
        mine = scored[scored[batch.CUSTOMER] == customer].sort_values(
            ["propensity", batch.PRODUCT], ascending=[False, True]
        )
        assert part.sort_values("rank")[batch.PRODUCT].tolist() == mine[batch.PRODUCT].head(5).tolist()
