"""tf.data input pipelines over the training TFRecords (layout from the feature spec)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from include.preference.features import spec

# Batches reshuffled per epoch; examples are already shuffled within files by the writer.
SHUFFLE_BATCHES = 64

T = TypeVar("T")


def shards_to_read(files: Sequence[T], index: int, workers: int) -> list[T]:
    """The shards input pipeline ``index`` of ``workers`` reads: its share by file when there are
    enough files, else all of them (each pipeline then keeps its share of the batches)."""
    files = list(files)
    return files[index::workers] if len(files) >= workers else files


def training_dataset(
    files: Sequence[str],
    batch_size: int = 1024,
    *,
    shuffle: bool = True,
    seed: int = 0,
    repeat: bool = False,
    cache: bool = False,
) -> Any:
    """(features, label) batches from GZIP TFRecord shards.

    Records are parsed a batch at a time (one vectorised ``parse_example`` per batch rather than
    one per record), reading files in parallel and prefetching so the model never waits. With
    ``cache``, parsed batches are kept in memory after the first epoch, so later epochs skip
    decompression and parsing (the writer already stores examples in a seeded random order, and
    batches are reshuffled every epoch).
    """
    import tensorflow as tf

    files = list(files)
    if not files:
        raise ValueError("no TFRecord files to read")
    autotune = tf.data.AUTOTUNE
    dataset = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        dataset = dataset.shuffle(len(files), seed=seed)
    dataset = dataset.interleave(
        lambda path: tf.data.TFRecordDataset(path, compression_type="GZIP", buffer_size=1 << 20),
        cycle_length=min(len(files), 4),
        num_parallel_calls=autotune,
        deterministic=not shuffle,
    )
    dataset = dataset.batch(batch_size).map(_split, num_parallel_calls=autotune)
    if cache:
        dataset = dataset.cache()
    if shuffle:
        dataset = dataset.shuffle(SHUFFLE_BATCHES, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    return dataset.prefetch(autotune)


def _split(serialized: Any) -> tuple[dict[str, Any], Any]:
    columns = spec.parse_examples(serialized)
    return spec.model_inputs(columns), columns[spec.LABEL]
