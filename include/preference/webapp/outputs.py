"""What the web app shows, read from the published outputs in S3 (manifest-complete partitions only).

Every lookup names partitions through :class:`PartitionRef` (validated layer, table and date) and
serves only files listed in a partition's manifest, so no request can reach another S3 key.
"""

from __future__ import annotations

import datetime as dt
import json
import mimetypes
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from include.preference.storage import ObjectStore, PartitionRef, list_partitions, read_file, read_manifest, read_table

# Customer ids as the sources write them: letters, digits and a few separators, at most 64.
CUSTOMER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$")
ENTITIES = ("customers", "products")
PLOTS = {
    "tsne": ("segment_map_{entity}", "tsne_{entity}.png"),
    "sizes": ("segments_{entity}", "sizes_{entity}.png"),
    "migration": ("segments_{entity}", "migration_{entity}.png"),
    "rfm": ("rfm", "rfm_tiers.png"),
}


@dataclass(frozen=True)
class File:
    """A published file: its bytes and content type."""

    content: bytes
    media_type: str


# Concurrent S3 reads of one request (boto3's client is thread-safe).
READERS = 16
# How long a table's listed days serve before it is listed again: a day published since shows up
# within this many seconds.
LISTING_SECONDS = 15.0
# What the pages read.
CUSTOMER_TABLES = [
    ("scores", "recommendations"),
    ("segments", "rfm"),
    ("segments", "customers"),
    ("scores", "customer_profiles"),
    ("validated", "products"),
]
DASHBOARD_TABLES = [
    ("segments", "customers"),
    ("segments", "products"),
    ("reports", "validation"),
    ("reports", "training"),
    ("reports", "rfm"),
    ("scores", "recommendations"),
    ("validated", "products"),
]

# Nearest customers by profile shown per customer.
PROFILE_NEIGHBOURS = 5


@dataclass(frozen=True)
class ProfileIndex:
    """One day's customer profiles in memory (``PROFILE_DIM`` floats per customer), for lookups."""

    key: tuple[dt.date, str]  # the partition's date and manifest version
    model_version: str
    position: dict[str, int]
    ids: Any  # numpy array of customer ids
    vectors: Any  # customers x PROFILE_DIM float32
    errors: Any  # reconstruction error per customer


@dataclass(frozen=True)
class CustomerRows:
    """One partition's rows sorted by customer, with each customer's first row and row count."""

    table: Any  # pyarrow.Table sorted by customer_id
    spans: dict[str, tuple[int, int]]

    @classmethod
    def of(cls, table: Any) -> "CustomerRows":
        import numpy as np

        table = table.sort_by("customer_id")
        ids = table.column("customer_id").to_numpy(zero_copy_only=False)
        if not len(ids):
            return cls(table, {})
        starts = np.flatnonzero(np.concatenate(([True], ids[1:] != ids[:-1])))
        ends = np.append(starts[1:], len(ids))
        return cls(table, {str(ids[a]): (int(a), int(b - a)) for a, b in zip(starts, ends, strict=True)})

    def rows(self, customer_id: str) -> list[dict[str, Any]]:
        span = self.spans.get(customer_id)
        return [] if span is None else self.table.slice(*span).to_pylist()


# Partitions kept in memory by one app process (recommendations, tiers, segments, profiles and the
# catalogue of the latest day, and of a few days asked for).
CACHED_PARTITIONS = 8


class Outputs:
    """Read-side of the lake for the plugin: customers, segments, value tiers, the champion."""

    def __init__(self, store: ObjectStore, mlflow_ui: str | None = None) -> None:
        self.store = store
        self.mlflow_ui = mlflow_ui.rstrip("/") if mlflow_ui else None
        self._partitions: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._partitions_lock = threading.Lock()
        self._dates: dict[tuple[str, str], tuple[float, list[dt.date]]] = {}
        self._dates_lock = threading.Lock()

    # -- dates -------------------------------------------------------------------------------------
    def dates(self, layer: str, table: str) -> list[dt.date]:
        """The table's published days, listed at most once per ``LISTING_SECONDS`` (a page asks for
        the same tables several times, and a listing of a year of days takes a tenth of a second)."""
        key, now = (layer, table), time.monotonic()
        with self._dates_lock:
            listed = self._dates.get(key)
            if listed is not None and now - listed[0] < LISTING_SECONDS:
                return list(listed[1])
        found = list_partitions(self.store, layer, table)
        with self._dates_lock:
            self._dates[key] = (now, found)
        return list(found)

    def list_all(self, tables: list[tuple[str, str]]) -> None:
        """List the tables a page reads, concurrently, so that its lookups find them listed."""
        with ThreadPoolExecutor(max_workers=READERS) as pool:
            list(pool.map(lambda table: self.dates(*table), tables))

    def latest(self, layer: str, table: str, on_or_before: dt.date | None = None) -> dt.date | None:
        days = [d for d in self.dates(layer, table) if on_or_before is None or d <= on_or_before]
        return days[-1] if days else None

    def _json(self, layer: str, table: str, day: dt.date, name: str) -> Any:
        return json.loads(read_file(self.store, PartitionRef(layer, table, day), name))

    # -- one customer ------------------------------------------------------------------------------
    def _customer_rows(
        self, layer: str, table: str, customer_id: str, day: dt.date | None
    ) -> tuple[dt.date | None, list[dict[str, Any]]]:
        """The latest partition on or before ``day`` and the customer's rows in it."""
        found = self.latest(layer, table, day)
        if found is None:
            return None, []
        ref = PartitionRef(layer, table, found)
        manifest = read_manifest(self.store, ref)
        if manifest is None:  # removed since it was listed
            return None, []
        return found, self._rows_by_customer(ref, manifest.version).rows(customer_id)

    def _rows_by_customer(self, ref: PartitionRef, version: str) -> "CustomerRows":
        """A published per-customer partition in memory, indexed by customer."""
        return self._cached(ref, version, lambda: CustomerRows.of(read_table(self.store, ref)))

    def _cached(self, ref: PartitionRef, version: str, build: Callable[[], Any]) -> Any:
        """What ``build`` makes of a published partition, kept for the latest few partitions asked
        for (read once, not per request; a republished partition has a new version and is read anew)."""
        key = (ref.prefix, version)
        with self._partitions_lock:
            if key in self._partitions:
                self._partitions.move_to_end(key)
                return self._partitions[key]
        value = build()
        with self._partitions_lock:
            self._partitions[key] = value
            while len(self._partitions) > CACHED_PARTITIONS:
                self._partitions.popitem(last=False)
        return value

    def customer(self, customer_id: str, day: dt.date | None = None) -> dict[str, Any] | None:
        """Value tier, segment and top-K recommendations of one customer as of ``day`` (latest when
        None): None when no published output knows the customer."""
        if not CUSTOMER_ID.match(customer_id):
            raise ValueError("customer id must be 1-64 letters, digits, '_', '.', ':' or '-'")
        found: dict[str, Any] = {"customer_id": customer_id, "value_tier": None, "segment": None}
        self.list_all(CUSTOMER_TABLES)
        rec_day, rows = self._customer_rows("scores", "recommendations", customer_id, day)
        catalogue = self.catalogue(rec_day) if rows else {}
        found["recommendations"] = [
            {
                "rank": int(row["rank"]),
                "product_id": row["product_id"],
                "title": catalogue.get(row["product_id"], {}).get("title"),
                "category": catalogue.get(row["product_id"], {}).get("category_path"),
                "propensity": float(row["propensity"]),
                "source": row.get("source"),
            }
            for row in sorted(rows, key=lambda r: r["rank"])
        ]
        if rows and rec_day is not None:
            found["model_version"] = str(rows[0]["model_version"])
            found["recommendations_date"] = rec_day.isoformat()

        tier_day, rows = self._customer_rows("segments", "rfm", customer_id, day)
        if rows and tier_day is not None:
            row = rows[0]
            found["value_tier"] = {
                "tier": row["tier"],
                "rfm_score": float(row["rfm_score"]),
                "recency_days": float(row["recency"]),
                "frequency": float(row["frequency"]),
                "monetary": float(row["monetary"]),
                # Each dimension's score, 0 (worst cluster) to 1 (best); rfm_score is their sum.
                "scores": {name: float(row[f"{name}_score"]) for name in ("recency", "frequency", "monetary")},
                "date": tier_day.isoformat(),
            }
        seg_day, rows = self._customer_rows("segments", "customers", customer_id, day)
        if rows and seg_day is not None:
            row = rows[0]
            found["segment"] = {
                "cluster_id": int(row["cluster_id"]),
                "l1_distance": float(row["l1_distance"]),
                "model_version": str(row["model_version"]),
                "date": seg_day.isoformat(),
            }
            found.setdefault("model_version", str(row["model_version"]))
        found["profile"] = self.customer_profile(customer_id, day)
        if not found["recommendations"] and all(found[k] is None for k in ("value_tier", "segment", "profile")):
            return None
        return found

    def _profile_index(self, day: dt.date | None) -> ProfileIndex | None:
        """The latest published customer profiles on or before ``day``, in memory like the other
        per-customer partitions (read anew when republished)."""
        import numpy as np

        found = self.latest("scores", "customer_profiles", day)
        ref = PartitionRef("scores", "customer_profiles", found) if found else None
        manifest = read_manifest(self.store, ref) if ref else None
        if found is None or ref is None or manifest is None:
            return None

        def build() -> ProfileIndex:
            table = read_table(self.store, ref)
            ids = np.asarray(table.column("customer_id").to_pylist(), dtype=object)
            values = table.column("profile").combine_chunks()
            flat = values.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
            return ProfileIndex(
                key=(found, manifest.version),
                model_version=str(manifest.extra.get("model_version")),
                position={c: i for i, c in enumerate(ids)},
                ids=ids,
                vectors=flat.reshape(len(ids), -1) if len(ids) else np.zeros((0, 0), np.float32),
                errors=table.column("reconstruction_error").to_numpy(zero_copy_only=False).astype(np.float64),
            )

        index: ProfileIndex = self._cached(ref, manifest.version, build)
        return index

    def customer_profile(self, customer_id: str, day: dt.date | None = None) -> dict[str, Any] | None:
        """The customer's profile as of ``day``: its reconstruction error (with the share of customers
        whose error is lower: near 1 is a customer unlike the ones the profile was trained on) and
        the ``PROFILE_NEIGHBOURS`` nearest customers by Euclidean distance between profiles (ties to
        the smaller id). None when no profile of the customer is published."""
        import numpy as np

        index = self._profile_index(day)
        if index is None or customer_id not in index.position:
            return None
        at = index.position[customer_id]
        distance = np.sqrt(np.square(index.vectors - index.vectors[at]).sum(axis=1, dtype=np.float64))
        distance[at] = np.inf
        order = np.lexsort((index.ids, distance))[: min(PROFILE_NEIGHBOURS, len(distance) - 1)]
        error = float(index.errors[at])
        return {
            "date": index.key[0].isoformat(),
            "model_version": index.model_version,
            "reconstruction_error": error,
            "error_percentile": float(np.mean(index.errors < error)),
            "neighbours": [{"customer_id": str(index.ids[i]), "distance": float(distance[i])} for i in order],
        }

    def catalogue(self, day: dt.date | None) -> dict[str, dict[str, Any]]:
        """Title and category path of every product in the validated catalogue as of ``day`` (the
        latest published snapshot on or before it); empty when none is published."""
        found = self.latest("validated", "products", day)
        ref = PartitionRef("validated", "products", found) if found else None
        manifest = read_manifest(self.store, ref) if ref else None
        if ref is None or manifest is None:
            return {}

        def build() -> dict[str, dict[str, Any]]:
            rows = read_table(self.store, ref, ["product_id", "title", "category_path"]).to_pylist()
            return {row["product_id"]: row for row in rows}

        return dict(self._cached(ref, manifest.version, build))

    # -- dashboard ---------------------------------------------------------------------------------
    def segment_history(self, entity: str, days: list[dt.date] | None = None) -> list[dict[str, Any]]:
        """Per published day (of ``days``, default all): each cluster's count, share and mean distance.

        The days' summaries are read concurrently (a year of days is 730 small reads)."""
        _check_entity(entity)
        days = self.dates("segments", entity) if days is None else days
        with ThreadPoolExecutor(max_workers=READERS) as pool:
            summaries = list(pool.map(lambda d: self._json("segments", entity, d, "summary.json"), days))
        return [{"date": d.isoformat(), "clusters": s} for d, s in zip(days, summaries, strict=True)]

    def migration(self, entity: str, day: dt.date | None = None) -> dict[str, Any] | None:
        _check_entity(entity)
        found = self.latest("segments", entity, day)
        if found is None:
            return None
        moves = self._json("segments", entity, found, "migration.json")
        return {
            "date": found.isoformat(),
            "moves": moves,
            "moved": sum(
                m["count"] for m in moves if m["from"] != m["to"] and m["from"] != "new" and m["to"] != "gone"
            ),
            "new": sum(m["count"] for m in moves if m["from"] == "new"),
            "gone": sum(m["count"] for m in moves if m["to"] == "gone"),
        }

    def segment_profiles(self, day: dt.date | None = None) -> dict[str, Any] | None:
        """What sets each customer segment apart as of ``day`` (latest when None): members, mean
        revenue and orders, RFM tier mix, distinguishing categories and products (with titles)."""
        found = self.latest("segments", "customers", day)
        ref = PartitionRef("segments", "customers", found) if found else None
        manifest = read_manifest(self.store, ref) if ref else None
        if found is None or ref is None or manifest is None:
            return None
        entry = next((e for e in manifest.files if e.path == f"{manifest.version}/profiles.json"), None)
        if entry is None:
            return None  # published before segments had profiles
        profiles = json.loads(self.store.get_bytes(ref.prefix + entry.path))  # the manifest read just now
        catalogue = self.catalogue(found)
        earlier = [d for d in self.dates("segments", "customers") if d < found]
        before = {}
        if earlier:
            summary = self._json("segments", "customers", earlier[-1], "summary.json")
            before = {str(row["cluster_id"]): int(row["count"]) for row in summary}
        shown = {}
        for cluster, profile in profiles.items():
            if not profile["members"]:
                continue  # an empty cluster has nothing to show
            for product in profile["top_products"]:
                product["title"] = catalogue.get(product["product_id"], {}).get("title")
            profile["name"] = segment_name(profile)
            # Size trend: members now against the segment's size on the day before it was last assigned.
            profile["previous_date"] = earlier[-1].isoformat() if earlier else None
            profile["previous_members"] = before.get(cluster)
            shown[cluster] = profile
        return {"date": found.isoformat(), "segments": shown}

    def value_tiers(self, day: dt.date | None = None) -> dict[str, Any] | None:
        found = self.latest("reports", "rfm", day)
        if found is None:
            return None
        document = self._json("reports", "rfm", found, "rfm.json")
        return {"date": found.isoformat(), "tiers": document["tiers"]}

    def champion(self) -> dict[str, Any] | None:
        """The latest training report whose version is the champion: its holdout metrics against the
        baselines, gate decision and MLflow run."""
        days = self.dates("reports", "training")
        if not days:
            return None
        latest = self._json("reports", "training", days[-1], "summary.json")
        current = latest.get("champion_version")
        chosen = latest
        # The champion's own report: the newest whose version is the champion, read newest first
        # (usually a few days back, never the whole year).
        for day in reversed(days):
            if current is None:
                break
            report = latest if day == days[-1] else self._json("reports", "training", day, "summary.json")
            if report.get("version") == current:
                chosen = report
                break
        return {
            "champion_version": current,
            "trained_on": chosen["date"],
            "version": chosen["version"],
            "holdout": chosen["holdout"],
            "k": chosen.get("k"),  # the ranking metrics' K (reports before it was recorded: None)
            # Reports written before the threshold metrics have none.
            "threshold_metrics": chosen.get("threshold_metrics"),
            "baselines": chosen["baselines"],
            # Recall@K of the model and each baseline per RFM value tier and new vs returning customer
            # (reports before slices were recorded: None).
            "slices": chosen.get("slices"),
            "gate": chosen["gate"],
            "mlflow_run_id": chosen["mlflow_run_id"],
            "mlflow_run_url": self.mlflow_run_url(chosen["mlflow_run_id"], chosen.get("mlflow_experiment_id")),
        }

    def run_links(self, day: dt.date) -> dict[str, Any]:
        """Where a DAG run's outputs for ``day`` can be inspected: Data Docs, the MLflow training run."""
        links: dict[str, Any] = {"date": day.isoformat(), "data_docs": None, "mlflow_run_id": None}
        links["mlflow_run_url"] = None
        if read_manifest(self.store, PartitionRef("reports", "validation", day)) is not None:
            links["data_docs"] = f"docs/validation/{day.isoformat()}/index.html"
        if read_manifest(self.store, PartitionRef("reports", "training", day)) is not None:
            summary = self._json("reports", "training", day, "summary.json")
            links["mlflow_run_id"] = summary["mlflow_run_id"]
            links["mlflow_run_url"] = self.mlflow_run_url(summary["mlflow_run_id"], summary.get("mlflow_experiment_id"))
        return links

    def mlflow_run_url(self, run_id: str, experiment_id: str | None = None) -> str | None:
        """The run's page in the MLflow UI (the experiment's run page when its id is known)."""
        if not self.mlflow_ui:
            return None
        if experiment_id:
            return f"{self.mlflow_ui}/#/experiments/{experiment_id}/runs/{run_id}"
        return f"{self.mlflow_ui}/#/runs/{run_id}"

    # -- files -------------------------------------------------------------------------------------
    def plot(self, kind: str, entity: str, day: dt.date | None = None) -> File | None:
        if kind not in PLOTS:
            raise ValueError(f"unknown plot {kind!r}; expected one of {', '.join(PLOTS)}")
        if kind != "rfm":
            _check_entity(entity)
        table, name = (part.format(entity=entity) for part in PLOTS[kind])
        found = self.latest("reports", table, day)
        if found is None:
            return None
        return File(read_file(self.store, PartitionRef("reports", table, found), name), "image/png")

    def data_docs(self, day: dt.date, path: str) -> File | None:
        """A file of the day's validation Data Docs, only if its manifest lists it."""
        manifest = read_manifest(self.store, PartitionRef("reports", "validation", day))
        if manifest is None:
            return None
        wanted = f"{manifest.version}/{path}"
        if not any(entry.path == wanted for entry in manifest.files):
            return None
        content = read_file(self.store, PartitionRef("reports", "validation", day), path)
        media_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
        return File(content, media_type)


def segment_name(profile: dict[str, Any]) -> str:
    """A short name for a customer segment: its most distinguishing category and its commonest
    value tier, e.g. "home decor, mostly high value"."""
    categories = profile.get("top_categories") or []
    what = str(categories[0]["category"]) if categories else "mixed tastes"
    tiers = {tier: count for tier, count in (profile.get("tiers") or {}).items() if count}
    if not tiers:
        return what
    tier = max(sorted(tiers), key=lambda t: tiers[t])
    return f"{what}, mostly {tier} value"


def _check_entity(entity: str) -> None:
    if entity not in ENTITIES:
        raise ValueError(f"unknown entity {entity!r}; expected one of {', '.join(ENTITIES)}")
