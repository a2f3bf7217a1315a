"""Write training examples as GZIP TFRecord files without TensorFlow, fast.

A ``tf.train.Example`` is a small protobuf whose layout here is fixed by the feature spec, so it is
encoded directly: the byte prefix of every field is computed once, and each row only appends its
values (numeric vectors come from one numpy array per entity). Records are framed as TFRecord
(length, masked CRC32C of the length, data, masked CRC32C of the data) and gzip-compressed with
a zeroed header time, so the same rows always give the same bytes. Building ``tf.train.Example``
objects per row would cost several times more and would need TensorFlow in every Spark worker.
"""

from __future__ import annotations

import contextlib
import gzip
import struct
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import google_crc32c
import numpy as np

from include.preference.features import spec

if TYPE_CHECKING:
    import pyarrow as pa

_MASK_DELTA = 0xA282EAD8
CATEGORICAL = spec.PACKED_CATEGORICAL
# zlib level 1: about twice as fast as level 6 for a few percent more bytes; readers do not care.
COMPRESSION_LEVEL = 1


def _varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


_SMALL_VARINTS = [_varint(i) for i in range(1 << 14)]


def _length_delimited(field: int, payload_length: int) -> bytes:
    """Tag and length of a length-delimited protobuf field."""
    length = _SMALL_VARINTS[payload_length] if payload_length < 1 << 14 else _varint(payload_length)
    return _SMALL_VARINTS[field << 3 | 2] + length


def _entry_prefix(name: str, feature_length: int) -> bytes:
    """Bytes of a ``Features.feature`` map entry before the Feature message body."""
    key = name.encode()
    key_part = _length_delimited(1, len(key)) + key
    value_part_head = _length_delimited(2, feature_length)
    entry_length = len(key_part) + len(value_part_head) + feature_length
    return _length_delimited(1, entry_length) + key_part + value_part_head


def _float_list_prefix(name: str, count: int) -> bytes:
    """Everything before the ``count`` little-endian float32 values of a FloatList feature."""
    values_head = _length_delimited(1, 4 * count)  # FloatList.value, packed
    float_list_length = len(values_head) + 4 * count
    feature_head = _length_delimited(2, float_list_length)  # Feature.float_list
    return _entry_prefix(name, len(feature_head) + float_list_length) + feature_head + values_head


def _bytes_entry(name: str, value: bytes) -> bytes:
    return _bytes_list_entry(name, _length_delimited(1, len(value)) + value)


def _bytes_list_entry(name: str, values: bytes) -> bytes:
    """A BytesList feature entry from its already-encoded ``value`` fields."""
    feature = _length_delimited(1, len(values)) + values
    return _entry_prefix(name, len(feature)) + feature


def _masked_crc(data: bytes) -> bytes:
    crc = google_crc32c.value(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF)


class ExampleEncoder:
    """Encodes rows of the training-example table (spec columns) as serialized ``tf.train.Example``."""

    def __init__(self) -> None:
        self.key_columns = (*spec.KEYS, "anchor_date")
        self.categorical = spec.categorical_names()
        self.packed = {entity: spec.numeric_names(entity) for entity in spec.ENTITIES}
        self._label_prefix = _float_list_prefix(spec.LABEL, 1)
        self._packed_prefix = {
            entity: _float_list_prefix(spec.packed_name(entity), len(names)) for entity, names in self.packed.items()
        }

    def encode(self, batch: "pa.RecordBatch | pa.Table") -> list[bytes]:
        """Serialized examples of every row of ``batch``, in row order."""
        import pyarrow as pa
        import pyarrow.compute as pc

        rows = batch.num_rows
        if rows == 0:
            return []
        # Fixed-width part: label then each entity's vector, as one float32 matrix per field.
        label = np.asarray(batch.column(spec.LABEL).to_numpy(zero_copy_only=False), dtype="<f4").reshape(rows, 1)
        fixed_blocks: list[tuple[bytes, np.ndarray]] = [(self._label_prefix, label)]
        for entity, names in self.packed.items():
            matrix = np.column_stack(
                [np.asarray(batch.column(n).to_numpy(zero_copy_only=False), dtype="<f4") for n in names]
            )
            fixed_blocks.append((self._packed_prefix[entity], np.ascontiguousarray(matrix)))
        # One contiguous byte row per example for the fixed part: prefix + values, for every field.
        width = sum(len(prefix) + block.shape[1] * 4 for prefix, block in fixed_blocks)
        fixed = np.empty((rows, width), dtype=np.uint8)
        offset = 0
        for prefix, block in fixed_blocks:
            fixed[:, offset : offset + len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
            offset += len(prefix)
            size = block.shape[1] * 4
            fixed[:, offset : offset + size] = block.view(np.uint8).reshape(rows, size)
            offset += size
        fixed_rows = fixed.tobytes()

        # Text values repeat a lot (countries, categories, a customer's id across its examples):
        # each distinct value is encoded once, then rows pick theirs by dictionary index.
        def encoded(name: str, make: Any) -> list[bytes]:
            column = batch.column(name)
            if isinstance(column, pa.ChunkedArray):
                column = column.combine_chunks()
            if pa.types.is_date(column.type):
                column = pc.strftime(column.cast(pa.timestamp("s")), format="%Y-%m-%d")
            dictionary = pc.dictionary_encode(pc.fill_null(column, spec.UNKNOWN))
            pieces = [make(value.encode()) for value in dictionary.dictionary.to_pylist()]
            return [pieces[i] for i in dictionary.indices.to_numpy(zero_copy_only=False)]

        keys = [encoded(name, lambda v, name=name: _bytes_entry(name, v)) for name in self.key_columns]
        values = [encoded(name, lambda v: _length_delimited(1, len(v)) + v) for name in self.categorical]
        categorical = [_bytes_list_entry(CATEGORICAL, b"".join(parts)) for parts in zip(*values, strict=True)]
        fixed_parts = [fixed_rows[i * width : (i + 1) * width] for i in range(rows)]
        bodies = [b"".join(parts) for parts in zip(fixed_parts, categorical, *keys, strict=True)]
        return [_length_delimited(1, len(body)) + body for body in bodies]


def frame(record: bytes) -> bytes:
    """One TFRecord: length, masked CRC of the length, data, masked CRC of the data."""
    return _length_header(len(record)) + record + _masked_crc(record)


@lru_cache(maxsize=65536)
def _length_header(length: int) -> bytes:
    """Length and its masked CRC: records of a file have few distinct lengths, so this is cached."""
    packed = struct.pack("<Q", length)
    return packed + _masked_crc(packed)


def write_records(
    target: "Path | BinaryIO", batches: Iterable["pa.RecordBatch | pa.Table"], level: int = COMPRESSION_LEVEL
) -> int:
    """Write the batches as one GZIP TFRecord file (a path, or an open binary file); returns the records.

    Compression runs in a helper thread (zlib releases the GIL), overlapping the next batch's
    encoding; writes stay in batch order.
    """
    from concurrent.futures import Future, ThreadPoolExecutor

    encoder = ExampleEncoder()
    if isinstance(target, Path):
        target.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with (
        open(target, "wb") if isinstance(target, Path) else contextlib.nullcontext(target) as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=level, mtime=0) as out,
        ThreadPoolExecutor(max_workers=1) as compressor,
    ):
        pending: Future[int] | None = None
        for batch in batches:
            records = encoder.encode(batch)
            chunk = b"".join([frame(r) for r in records])
            if pending is not None:
                pending.result()
            pending = compressor.submit(out.write, chunk)
            count += len(records)
        if pending is not None:
            pending.result()
    return count


def read_records(path: Path) -> Iterator[bytes]:
    """The serialized records of a GZIP TFRecord file, checksums verified (for tools and tests)."""
    with gzip.open(path, "rb") as handle:
        while header := handle.read(12):
            length_bytes, length_crc = header[:8], header[8:]
            if _masked_crc(length_bytes) != length_crc:
                raise ValueError(f"{path}: corrupt record length")
            (length,) = struct.unpack("<Q", length_bytes)
            data = handle.read(length)
            if _masked_crc(data) != handle.read(4):
                raise ValueError(f"{path}: corrupt record data")
            yield data
