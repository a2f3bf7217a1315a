"""Review text embeddings: each day's reviews, and each customer's text profile.

* ``scores/review_embeddings/dt=D/``: the reviews validated on day D (review_id, customer_id,
  product_id, rating, embedding), embedded with all-MiniLM-L6-v2. Each day embeds only its own
  reviews, so the task costs the same on day 10 and day 1000.
* ``features/customer_text/dt=D/``: per customer, the normalised mean embedding of their reviews of
  the last ``PROFILE_DAYS`` days (customer_id, reviews, embedding): a customer feature table and an
  alternative segmentation input (compared with the model's embeddings in ``refresh_segments``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np

from include.preference.config import Settings
from include.preference.storage import (
    ObjectStore,
    PartitionRef,
    list_partitions,
    publish_table,
    read_manifest,
    read_table,
    require_manifest,
    upstream_entry,
)

PROFILE_DAYS = 90


def _embedding_column(vectors: np.ndarray) -> Any:
    import pyarrow as pa

    rows, dim = vectors.shape
    offsets = pa.array(np.arange(0, (rows + 1) * dim, dim, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(vectors.reshape(-1), pa.float32()))


def run_review_embeddings(store: ObjectStore, settings: Settings, day: dt.date, *, run_id: str) -> dict[str, Any]:
    """Embed the day's validated reviews, then publish the customers' text profiles as of the day."""
    import pyarrow as pa

    from include.preference.text.minilm import DIMENSION, shared_model

    ref = PartitionRef("validated", "reviews", day)
    manifest = require_manifest(store, ref)
    reviews = read_table(store, ref, columns=["review_id", "customer_id", "product_id", "rating", "text"]).to_pandas()
    reviews = reviews.sort_values("review_id").reset_index(drop=True)
    texts = reviews["text"].fillna("").astype(str).tolist()
    vectors = shared_model().encode(texts) if texts else np.zeros((0, DIMENSION), np.float32)
    table = pa.table(
        {
            "review_id": pa.array(reviews["review_id"].astype(str).tolist(), pa.string()),
            "customer_id": pa.array(reviews["customer_id"].astype(str).tolist(), pa.string()),
            "product_id": pa.array(reviews["product_id"].astype(str).tolist(), pa.string()),
            "rating": pa.array(reviews["rating"].to_numpy(dtype=np.int32), pa.int32()),
            "embedding": _embedding_column(vectors),
        }
    )
    upstream = [upstream_entry(store, ref, manifest)]
    publish_table(
        store,
        PartitionRef("scores", "review_embeddings", day),
        table,
        run_id=run_id,
        code_version=settings.code_version,
        upstream=upstream,
        extra={"model": "all-MiniLM-L6-v2", "dimension": DIMENSION},
    )
    profiles = customer_profiles(store, settings, day, run_id=run_id)
    return {"date": day.isoformat(), "reviews": table.num_rows, "customers_with_text": profiles}


def customer_profiles(store: ObjectStore, settings: Settings, day: dt.date, *, run_id: str) -> int:
    """Publish ``features/customer_text/dt=day`` from the review embeddings of the last PROFILE_DAYS days."""
    import pyarrow as pa

    first = day - dt.timedelta(days=PROFILE_DAYS - 1)
    days = [d for d in list_partitions(store, "scores", "review_embeddings") if first <= d <= day]
    upstream, ids, vectors = [], [], []
    for past in days:
        ref = PartitionRef("scores", "review_embeddings", past)
        manifest = read_manifest(store, ref)
        if manifest is None:
            continue
        upstream.append(upstream_entry(store, ref, manifest))
        part = read_table(store, ref, columns=["customer_id", "embedding"])
        if part.num_rows:
            ids.extend(part.column("customer_id").to_pylist())
            flat = part.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
            vectors.append(flat.reshape(part.num_rows, -1))
    if vectors:
        import pandas as pd

        matrix = np.concatenate(vectors).astype(np.float32)
        codes, customers = pd.factorize(pd.Series(ids), sort=True)
        sums = np.zeros((len(customers), matrix.shape[1]), dtype=np.float64)
        np.add.at(sums, codes, matrix)
        counts = np.bincount(codes, minlength=len(customers))
        profile = (sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)).astype(np.float32)
        table = pa.table(
            {
                "customer_id": pa.array(list(customers), pa.string()),
                "reviews": pa.array(counts, pa.int64()),
                "embedding": _embedding_column(profile),
            }
        )
    else:
        table = pa.table(
            {
                "customer_id": pa.array([], pa.string()),
                "reviews": pa.array([], pa.int64()),
                "embedding": pa.array([], pa.list_(pa.float32())),
            }
        )
    publish_table(
        store,
        PartitionRef("features", "customer_text", day),
        table,
        run_id=run_id,
        code_version=settings.code_version,
        upstream=upstream,
        extra={"profile_days": PROFILE_DAYS},
    )
    return table.num_rows
