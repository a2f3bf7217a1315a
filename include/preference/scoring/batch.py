"""Spark batch scoring: embeddings and propensities over Arrow batches, candidates, top-K.

The model travels as a :class:`ModelHandle` (its URI), broadcast once; each Python worker loads the
model on first use. Rows are scored with ``mapInArrow`` (Arrow batches straight into Keras, no
pandas round trip); ``mapInPandas`` is kept for comparison in ``bench/bench_scoring.py``.

Top-K recommendations per active customer come in two steps:

1. retrieval of candidates from four sources: the customer's own past products (buy-again), the
   products nearest in the model's product-embedding space to the products the customer bought
   most recently, the most bought products of the customer's favourite categories, and the overall most
   bought products (so a customer without history still gets a list);
2. ranking of every candidate with the full model; the K most likely purchases are kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from include.preference.features import spec
from include.preference.scoring.handle import ModelHandle, embed, profile, propensity

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame

CUSTOMER, PRODUCT = "customer_id", "product_id"
KEY_OF = {"customer": CUSTOMER, "product": PRODUCT}
EMBEDDING = "embedding"
PROFILE, RECONSTRUCTION_ERROR = "profile", "reconstruction_error"
MODEL_VERSION = "model_version"
INPUT_MANIFESTS = "input_manifests"
# Retrieval sizes: neighbours per recent product, recent products per customer, products per category.
NEIGHBOURS = 10
RECENT_PRODUCTS = 10
PER_CATEGORY = 20
TOP_CATEGORIES = 3
POPULAR = 20
SOURCES = ("buy_again", "embedding_neighbours", "category_popular", "popular")


def _embedding_array(values: np.ndarray) -> "pa.Array":
    import pyarrow as pa

    rows, dim = values.shape if values.size else (len(values), 0)
    offsets = pa.array(np.arange(0, (rows + 1) * dim, dim, dtype=np.int32) if rows else np.zeros(1, np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1), type=pa.float32()))


def embedding_batches(handle: Any, entity: str, tag: dict[str, str]):
    """The ``mapInArrow`` function: (key, features...) batches -> (key, embedding, tags...) batches.

    ``handle``: a :class:`ModelHandle` or a Spark broadcast of one.
    """
    import pyarrow as pa

    key = KEY_OF[entity]

    def run(batches: Iterator["pa.RecordBatch"]) -> Iterator["pa.RecordBatch"]:
        model = _value(handle)
        for batch in batches:
            vectors = embed(model, entity, batch)
            columns = {key: batch.column(key), EMBEDDING: _embedding_array(vectors)}
            columns.update({name: pa.array([value] * batch.num_rows, pa.string()) for name, value in tag.items()})
            yield pa.RecordBatch.from_pydict(columns)

    return run


def propensity_batches(handle: Any, tag: dict[str, str], keep: tuple[str, ...] = ()):
    """The ``mapInArrow`` function: (customer, product, features...) -> (customer, product, propensity, ...)."""
    import pyarrow as pa

    def run(batches: Iterator["pa.RecordBatch"]) -> Iterator["pa.RecordBatch"]:
        model = _value(handle)
        for batch in batches:
            columns = {name: batch.column(name) for name in (CUSTOMER, PRODUCT, *keep)}
            columns["propensity"] = pa.array(propensity(model, batch), pa.float32())
            columns.update({name: pa.array([value] * batch.num_rows, pa.string()) for name, value in tag.items()})
            yield pa.RecordBatch.from_pydict(columns)

    return run


def profile_batches(handle: Any, tag: dict[str, str]):
    """The ``mapInArrow`` function: (customer, features...) -> (customer, profile, reconstruction_error, tags...)."""
    import pyarrow as pa

    def run(batches: Iterator["pa.RecordBatch"]) -> Iterator["pa.RecordBatch"]:
        model = _value(handle)
        for batch in batches:
            vectors, errors = profile(model, batch)
            columns = {
                CUSTOMER: batch.column(CUSTOMER),
                PROFILE: _embedding_array(vectors),
                RECONSTRUCTION_ERROR: pa.array(errors, pa.float32()),
            }
            columns.update({name: pa.array([value] * batch.num_rows, pa.string()) for name, value in tag.items()})
            yield pa.RecordBatch.from_pydict(columns)

    return run


def _value(handle: Any) -> ModelHandle:
    """The handle itself, or the value of its broadcast."""
    return handle if isinstance(handle, ModelHandle) else handle.value


def _broadcast(frame: "DataFrame", handle: ModelHandle) -> Any:
    """The handle broadcast once to the executors (a few hundred bytes: the model loads there)."""
    return frame.sparkSession.sparkContext.broadcast(handle)


def _tag_schema(tag: dict[str, str]) -> str:
    return "".join(f", {name} string" for name in tag)


def embeddings(
    frame: "DataFrame", handle: ModelHandle, entity: str, tag: dict[str, str], method: str = "arrow"
) -> "DataFrame":
    """Embeddings of every row of an entity's feature table (``customers`` or ``products``).

    ``tag``: constant string columns written on every row (model version, input manifests).
    ``method``: ``arrow`` (``mapInArrow``) or ``pandas`` (``mapInPandas``, for comparison).
    """
    key = KEY_OF[entity]
    columns = [key, *(f.name for f in spec.features_of(entity))]
    schema = f"{key} string, {EMBEDDING} array<float>{_tag_schema(tag)}"
    run = embedding_batches(_broadcast(frame, handle), entity, tag)
    rows = frame.select(*columns).sortWithinPartitions(key)
    if method == "arrow":
        return rows.mapInArrow(run, schema)
    if method == "pandas":
        return rows.mapInPandas(_via_pandas(run), schema)
    raise ValueError(f"unknown scoring method {method!r}; expected arrow or pandas")


def profiles(frame: "DataFrame", handle: ModelHandle, tag: dict[str, str]) -> "DataFrame":
    """Profile and reconstruction error of every row of the customer feature table (``mapInArrow``),
    with the profile model's version and the input manifests on every row."""
    from include.preference.profiles import PROFILE_FEATURES

    schema = f"{CUSTOMER} string, {PROFILE} array<float>, {RECONSTRUCTION_ERROR} float{_tag_schema(tag)}"
    rows = frame.select(CUSTOMER, *PROFILE_FEATURES).sortWithinPartitions(CUSTOMER)
    return rows.mapInArrow(profile_batches(_broadcast(frame, handle), tag), schema)


def propensities(
    frame: "DataFrame", handle: ModelHandle, tag: dict[str, str], keep: tuple[str, ...] = (), method: str = "arrow"
) -> "DataFrame":
    """Propensity of every (customer, product) row holding all feature columns.

    Rows are sorted inside each partition first, so every Arrow batch holds the same rows on a
    rerun (the model's arithmetic then sees the same batches).

    ``keep``: string columns passed through (e.g. the candidate's retrieval source).
    """
    columns = [CUSTOMER, PRODUCT, *keep, *spec.BY_NAME]
    kept = "".join(f", {name} string" for name in keep)
    schema = f"{CUSTOMER} string, {PRODUCT} string{kept}, propensity float{_tag_schema(tag)}"
    run = propensity_batches(_broadcast(frame, handle), tag, keep)
    rows = frame.select(*columns).sortWithinPartitions(CUSTOMER, PRODUCT)
    if method == "arrow":
        return rows.mapInArrow(run, schema)
    if method == "pandas":
        return rows.mapInPandas(_via_pandas(run), schema)
    raise ValueError(f"unknown scoring method {method!r}; expected arrow or pandas")


def _via_pandas(run):
    """The same batch function behind ``mapInPandas`` (pandas frames in and out)."""
    import pyarrow as pa

    def wrapped(frames):
        for frame in frames:
            batch = pa.RecordBatch.from_pandas(frame, preserve_index=False)
            for out in run(iter([batch])):
                yield out.to_pandas()

    return wrapped


def product_neighbours(product_embeddings: "DataFrame", n: int = NEIGHBOURS, block: int = 2048) -> "DataFrame":
    """Each product's ``n`` nearest products by cosine similarity of their embeddings, on the executors.

    The products are split into blocks of about ``block`` by a hash of their id; each pair of
    blocks (a block with itself included) is one task, which scores its left block's products
    against the right block's in numpy and keeps each product's ``n`` best; a window then keeps the
    ``n`` best over all blocks. Exact, like all pairs, at a block pair's memory (``block``² floats)
    per task; the pairs are formed by a shuffle, not a broadcast, so the embeddings never pass
    through the driver, which learns only how many products there are. Ties go to the smaller
    neighbour id: the result does not depend on how Spark read or partitioned the input.
    """
    import math

    import pyarrow as pa
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    schema = f"{PRODUCT} string, neighbour_id string, similarity float"
    vectors = product_embeddings.select(PRODUCT, EMBEDDING)
    count = vectors.count()
    if count < 2:
        return product_embeddings.sparkSession.createDataFrame([], schema)
    take = min(n, count - 1)
    blocks = max(1, math.ceil(count / block))
    grouped = (
        vectors.withColumn("_block", F.pmod(F.xxhash64(PRODUCT), F.lit(blocks)))
        .groupBy("_block")
        .agg(F.collect_list(F.struct(PRODUCT, EMBEDDING)).alias("_items"))
    )
    left = grouped.select(F.col("_block").alias("_left"), F.col("_items").alias("_left_items"))
    right = grouped.select(F.col("_block").alias("_right"), F.col("_items").alias("_right_items"))
    # A shuffled cartesian product: a broadcast would collect every embedding on the driver first.
    pairs = left.join(right.hint("shuffle_replicate_nl"), how="cross").repartition(blocks * blocks)

    def unpack(items: "pa.ListScalar") -> tuple[np.ndarray, np.ndarray]:
        values = items.values
        ids = np.asarray(values.field(PRODUCT).to_pylist(), dtype=object)
        flat = values.field(EMBEDDING).flatten().to_numpy(zero_copy_only=False).astype(np.float32)
        # In id order: the same block gives bit-identical products whatever order Spark collected it in.
        order = np.argsort(ids, kind="stable")
        matrix = flat.reshape(len(ids), -1)[order]
        return ids[order], matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)

    def best(batches: Iterator["pa.RecordBatch"]) -> Iterator["pa.RecordBatch"]:
        for batch in batches:
            for lefts, rights in zip(batch.column("_left_items"), batch.column("_right_items"), strict=True):
                left_ids, left_vectors = unpack(lefts)
                right_ids, right_vectors = unpack(rights)
                similarity = left_vectors @ right_vectors.T
                similarity[left_ids[:, None] == right_ids[None, :]] = -np.inf  # not its own neighbour
                keep = min(take, len(right_ids))
                # Each product's keep-th best score here; everything at least as good goes on, ties
                # at that score included, so the window below decides them by id as a whole sort would.
                kth = -np.partition(-similarity, keep - 1, axis=1)[:, keep - 1 : keep]
                rows, columns = np.nonzero((similarity >= kth) & np.isfinite(similarity))
                yield pa.RecordBatch.from_pydict(
                    {
                        PRODUCT: pa.array(left_ids[rows].tolist(), pa.string()),
                        "neighbour_id": pa.array(right_ids[columns].tolist(), pa.string()),
                        "similarity": pa.array(similarity[rows, columns], pa.float32()),
                    }
                )

    candidates = pairs.mapInArrow(best, schema)
    nearest = Window.partitionBy(PRODUCT).orderBy(F.col("similarity").desc(), F.col("neighbour_id"))
    return candidates.withColumn("_rank", F.row_number().over(nearest)).where(F.col("_rank") <= take).drop("_rank")


def candidates(
    active: "DataFrame",
    pairs: "DataFrame",
    categories: "DataFrame",
    products: "DataFrame",
    neighbours: "DataFrame",
) -> "DataFrame":
    """(customer_id, product_id, source) candidates of the active customers, one row per pair.

    Args:
        active: the customers to recommend to (``customer_id``).
        pairs: ``state_pairs`` as of the day (purchases and last order day per customer and product).
        categories: ``state_customer_categories`` as of the day.
        products: the day's product features.
        neighbours: :func:`product_neighbours` of the day's product embeddings.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    customers = active.select(CUSTOMER).distinct()
    bought = pairs.where(F.col("purchases_all") > 0).join(customers, CUSTOMER)
    own = bought.select(CUSTOMER, PRODUCT, F.lit(0).alias("_source"))

    recent_order = Window.partitionBy(CUSTOMER).orderBy(F.col("last_order_day").desc(), F.col(PRODUCT))
    recent = bought.withColumn("_recent", F.row_number().over(recent_order)).where(F.col("_recent") <= RECENT_PRODUCTS)
    near = recent.join(neighbours, PRODUCT).select(
        CUSTOMER, F.col("neighbour_id").alias(PRODUCT), F.lit(1).alias("_source")
    )

    sold = f"product_purchases_{spec.BUYER_WINDOW}d"
    by_category = Window.partitionBy("product_category").orderBy(F.col(sold).desc(), F.col(PRODUCT))
    category_top = (
        products.where(F.col(sold) > 0)
        .withColumn("_place", F.row_number().over(by_category))
        .where(F.col("_place") <= PER_CATEGORY)
        .select(PRODUCT, F.col("product_category").alias("category"))
    )
    window = f"interactions_{spec.AFFINITY_WINDOW}d"
    favourite = Window.partitionBy(CUSTOMER).orderBy(F.col(window).desc(), F.col("category"))
    liked = (
        categories.join(customers, CUSTOMER)
        .where(F.col(window) > 0)
        .withColumn("_place", F.row_number().over(favourite))
        .where(F.col("_place") <= TOP_CATEGORIES)
    )
    in_category = liked.join(category_top, "category").select(CUSTOMER, PRODUCT, F.lit(2).alias("_source"))

    popular = products.orderBy(F.col(sold).desc(), F.col(PRODUCT)).limit(POPULAR).select(PRODUCT)
    overall = customers.crossJoin(F.broadcast(popular)).select(CUSTOMER, PRODUCT, F.lit(3).alias("_source"))

    union = own.unionByName(near).unionByName(in_category).unionByName(overall)
    best_source = union.groupBy(CUSTOMER, PRODUCT).agg(F.min("_source").alias("_source"))
    names = F.array(*(F.lit(s) for s in SOURCES))
    return best_source.join(products.select(PRODUCT), PRODUCT).select(
        CUSTOMER, PRODUCT, F.element_at(names, F.col("_source") + 1).alias("source")
    )


def top_k(scored: "DataFrame", k: int) -> "DataFrame":
    """The ``k`` highest propensities per customer, ranked from 1 (ties broken by product id)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    order = Window.partitionBy(CUSTOMER).orderBy(F.col("propensity").desc(), F.col(PRODUCT))
    return scored.withColumn("rank", F.row_number().over(order)).where(F.col("rank") <= k)


def active_customers(customers: "DataFrame", active_days: int) -> "DataFrame":
    """Customers with any event in the last ``active_days`` days."""
    from pyspark.sql import functions as F

    return customers.where(F.col("customer_days_since_active") <= float(active_days))
