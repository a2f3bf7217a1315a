"""Training examples of an anchor: labels from the horizon only, features as of the anchor,
TFRecords that parse back to exactly the Parquet rows, and a rerun that writes the same bytes."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from include.preference.features import spec
from include.preference.features.examples import ExampleSettings, build_training_examples, horizon_days_of
from include.preference.storage import PartitionRef
from include.preference.storage.partitions import staged_names
from tests.integration.features.conftest import read

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ANCHOR_INDEX = 28
SETTINGS = ExampleSettings(horizon_days=7, negatives_per_positive=3, seed=5)


def work_files(lake, ref) -> dict[str, bytes]:
    """What a build wrote for ``ref``, by the names it will be published under."""
    written = {o.key[len(lake.prefix(ref)) :]: o.key for o in lake.written(ref)}
    names = staged_names(sorted(written))
    return {names[relative]: lake.store.get_bytes(key) for relative, key in written.items()}


@pytest.fixture(scope="module")
def examples(chain, spark, tmp_path_factory):
    lake, _, days, _ = chain
    anchor = days[ANCHOR_INDEX]
    # A table of its own: the session's training sets use the same anchor with other settings.
    ref = PartitionRef("training", "examples", anchor)
    counts = build_training_examples(spark, lake, anchor, SETTINGS, ref)
    frame = lake.read_arrow(ref).to_pandas()
    out = tmp_path_factory.mktemp("examples") / "out"
    for name, body in work_files(lake, ref).items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(body)
    return lake, anchor, out, counts, frame


def test_positives_are_exactly_the_horizon_purchases_of_known_customers_and_products(examples):
    root, anchor, _, counts, frame = examples
    orders = pd.concat(
        root.read_arrow(PartitionRef("validated", "orders", d)).to_pandas()
        for d in horizon_days_of(anchor, SETTINGS.horizon_days)
    )
    customers = set(read(root, "customers", anchor)["customer_id"])
    products = set(read(root, "products", anchor)["product_id"])
    expected = {
        (c, p)
        for c, p in zip(orders["customer_id"], orders["product_id"], strict=True)
        if c in customers and p in products
    }
    positives = frame[frame[spec.LABEL] == 1.0]
    assert set(zip(positives["customer_id"], positives["product_id"], strict=True)) == expected
    assert counts["positives"] == len(expected) > 50
    assert frame.duplicated(["customer_id", "product_id"]).sum() == 0  # so no negative is also a positive


def test_negatives_follow_the_ratio_and_favour_viewed_products(examples):
    _, _, _, _, frame = examples
    per_customer = frame.groupby("customer_id")[spec.LABEL].agg(["sum", "count"])
    wanted = np.maximum(per_customer["sum"], 1) * SETTINGS.negatives_per_positive
    negatives = per_customer["count"] - per_customer["sum"]
    assert (negatives <= wanted).all()
    assert (negatives == wanted).mean() > 0.9  # short only when a small catalogue runs out
    # Customers with no purchase in the horizon are there too, with negatives only.
    assert (per_customer["sum"] == 0).sum() > 10
    negative_rows = frame[frame[spec.LABEL] == 0.0]
    assert (negative_rows["pair_views"] > 0).mean() > 0.25


def test_example_features_are_the_anchor_day_features(examples):
    root, anchor, _, _, frame = examples
    customers = read(root, "customers", anchor).set_index("customer_id")
    products = read(root, "products", anchor).set_index("product_id")
    sample = frame.sample(200, random_state=1)
    for name in spec.numeric_names("customer") + spec.categorical_names("customer"):
        assert (sample[name].to_numpy() == customers.loc[sample["customer_id"], name].to_numpy()).all(), name
    for name in spec.numeric_names("product") + spec.categorical_names("product"):
        assert (sample[name].to_numpy() == products.loc[sample["product_id"], name].to_numpy()).all(), name
    assert (frame["anchor_date"] == anchor).all()


def test_tfrecords_parse_back_to_exactly_the_parquet_rows(examples):
    import tensorflow as tf

    _, _, out, counts, frame = examples
    shards = sorted(str(p) for p in (out / "tfrecord").glob("*.tfrecord.gz"))
    assert shards and counts["shards"] == {f"tfrecord/{Path(p).name}": len(frame) for p in shards}
    dataset = tf.data.TFRecordDataset(shards, compression_type="GZIP").batch(4096).map(spec.parse_examples)
    parsed: dict[str, list] = {}
    for batch in dataset:
        for name, tensor in batch.items():
            parsed.setdefault(name, []).append(tensor.numpy())
    columns = {name: np.concatenate(parts) for name, parts in parsed.items()}
    assert set(columns) == set(spec.example_columns())
    for name in spec.example_columns():
        expected = frame[name]
        if name == "anchor_date":
            expected = expected.map(dt.date.isoformat)
        if expected.dtype == object:
            got = [v.decode() for v in columns[name]]
            assert got == expected.tolist(), name
        else:
            np.testing.assert_array_equal(columns[name], expected.to_numpy(np.float32), err_msg=name)


def test_a_rerun_writes_byte_identical_files(examples, spark):
    root, anchor, out, _, _ = examples
    again = PartitionRef("training", "again", anchor)
    build_training_examples(spark, root, anchor, SETTINGS, again)
    first = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    second = work_files(root, again)
    assert first.keys() == second.keys() and first == second
    assert "schema.json" in first and any(k.endswith(".tfrecord.gz") for k in first)
