"""Product neighbours found on Spark's executors, block pair by block pair: the same neighbours as
all pairs compared at once, whatever the blocks and the input's partitioning, with no broadcast (the
embeddings never gather on the driver)."""

from __future__ import annotations

import numpy as np
import pytest

from include.preference.scoring import batch

pytestmark = pytest.mark.integration

N = 5


def all_pairs(ids: list[str], vectors: np.ndarray, n: int) -> dict[str, list[tuple[float, str]]]:
    """Each product's n best (similarity, id) by cosine in float64, ties to the smaller id."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    similarity = unit @ unit.T
    best = {}
    for i, product in enumerate(ids):
        ranked = sorted((-similarity[i, j], ids[j]) for j in range(len(ids)) if j != i)
        best[product] = [(-s, other) for s, other in ranked[: n + 1]]
    return best


@pytest.fixture(scope="module")
def embeddings(spark):
    rng = np.random.default_rng(11)
    vectors = rng.normal(size=(57, 8)).astype(np.float32)
    ids = [f"P{i:03d}" for i in range(len(vectors))]
    frame = spark.createDataFrame(
        [(p, v.tolist()) for p, v in zip(ids, vectors, strict=True)], "product_id string, embedding array<float>"
    )
    return frame, ids, vectors


@pytest.mark.parametrize("block", [20, 4096])  # 3 blocks (9 block pairs, uneven) and one
def test_blocks_find_the_same_neighbours_as_all_pairs(embeddings, block):
    frame, ids, vectors = embeddings
    found = batch.product_neighbours(frame, n=N, block=block).toPandas()
    reference = all_pairs(ids, vectors.astype(np.float64), N)
    assert sorted(found["product_id"].unique()) == ids
    for product, rows in found.groupby("product_id"):
        expected = reference[product]
        assert len(rows) == N and product not in set(rows["neighbour_id"])
        got = rows.sort_values("similarity", ascending=False)
        np.testing.assert_allclose(got["similarity"], [s for s, _ in expected[:N]], atol=1e-5)
        if expected[N - 1][0] - expected[N][0] > 1e-4:  # no near tie at the edge of the n best
            assert set(got["neighbour_id"]) == {other for _, other in expected[:N]}, product


def test_the_result_does_not_depend_on_the_input_partitioning_and_nothing_is_broadcast(embeddings):
    frame, *_ = embeddings
    one = batch.product_neighbours(frame.repartition(1), n=N, block=20)
    three = batch.product_neighbours(frame.repartition(3, "product_id"), n=N, block=20)
    order = ["product_id", "neighbour_id"]
    assert (
        one.toPandas()
        .sort_values(order)
        .reset_index(drop=True)
        .equals(three.toPandas().sort_values(order).reset_index(drop=True))
    )
    plan = one._jdf.queryExecution().executedPlan().toString()  # noqa: SLF001 - the physical plan
    assert "CartesianProduct" in plan and "Broadcast" not in plan, plan


def test_identical_embeddings_tie_and_go_to_the_smaller_id(spark):
    vectors = {"A": [1.0, 0.0], "B": [0.0, 1.0], "C": [0.0, 1.0], "D": [0.0, 1.0], "E": [0.6, 0.8]}
    frame = spark.createDataFrame(list(vectors.items()), "product_id string, embedding array<float>")
    found = batch.product_neighbours(frame, n=1, block=2).toPandas().set_index("product_id")["neighbour_id"]
    # A's nearest is E; B, C and D are equally near one another: the smaller id wins each tie.
    assert found.to_dict() == {"A": "E", "B": "C", "C": "B", "D": "B", "E": "B"}
