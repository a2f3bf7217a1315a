"""The hand-rolled Example encoder and TFRecord framing agree with TensorFlow's own parser."""

from __future__ import annotations

import datetime as dt
import gzip
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from include.preference.features import spec, tfrecord

pytestmark = pytest.mark.unit


def rows(count: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    columns = {
        "customer_id": pa.array([f"C{i:04d}" for i in range(count)]),
        "product_id": pa.array([f"P{i % 7}" for i in range(count)]),
        "anchor_date": pa.array([dt.date(2025, 3, 1)] * count, pa.date32()),
        spec.LABEL: pa.array(rng.integers(0, 2, count).astype("float32")),
    }
    for feature in spec.FEATURES:
        if feature.kind == "numeric":
            values = rng.normal(size=count).astype("float32")
            values[0] = np.float32(3.4028235e38)  # extremes survive the byte copy
            columns[feature.name] = pa.array(values)
        else:
            values = [None if i % 5 == 0 else f"{feature.name}-{i % 3}-Zürich & <b>" for i in range(count)]
            columns[feature.name] = pa.array(values, pa.string())
    return pa.table(columns)


def test_encoded_examples_parse_with_tensorflow_to_the_same_values():
    import tensorflow as tf

    table = rows(300)
    serialized = tfrecord.ExampleEncoder().encode(table)
    assert len(serialized) == 300
    parsed = spec.parse_examples(tf.constant(serialized))
    for name in spec.example_columns():
        got = parsed[name].numpy()
        column = table.column(name)
        if name == "anchor_date":
            assert {v.decode() for v in got} == {"2025-03-01"}
        elif pa.types.is_string(column.type):
            expected = [v if v is not None else spec.UNKNOWN for v in column.to_pylist()]
            assert [v.decode() for v in got] == expected, name
        else:
            np.testing.assert_array_equal(got, column.to_numpy(), err_msg=name)
    # And the generic protobuf parser reads the same message.
    example = tf.train.Example.FromString(serialized[1])
    assert example.features.feature["customer_id"].bytes_list.value == [b"C0001"]
    assert len(example.features.feature[spec.packed_name("pair")].float_list.value) == len(spec.numeric_names("pair"))


def test_written_files_read_back_with_tf_data_and_are_reproducible(tmp_path: Path):
    import tensorflow as tf

    table = rows(1000, seed=3)
    first, second = tmp_path / "a.tfrecord.gz", tmp_path / "b.tfrecord.gz"
    assert tfrecord.write_records(first, table.to_batches(max_chunksize=128)) == 1000
    assert tfrecord.write_records(second, table.to_batches(max_chunksize=333)) == 1000
    assert first.read_bytes() == second.read_bytes()  # batching and the clock do not show in the bytes
    read = list(tf.data.TFRecordDataset(str(first), compression_type="GZIP").as_numpy_iterator())
    assert read == list(tfrecord.read_records(first))
    assert read == tfrecord.ExampleEncoder().encode(table)


def test_a_corrupted_record_is_detected(tmp_path: Path):
    path = tmp_path / "x.tfrecord.gz"
    tfrecord.write_records(path, [rows(20)])
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[200] ^= 0xFF
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(ValueError, match="corrupt record"):
        list(tfrecord.read_records(path))
