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


class Outputs:
    """Read-side of the lake for the plugin: customers, segments, value tiers, the champion."""

    def __init__(self, store: ObjectStore, mlflow_ui: str | None = None) -> None:
        self.store = store
        self.mlflow_ui = mlflow_ui.rstrip("/") if mlflow_ui else None
        self._profiles: ProfileIndex | None = None
        self._profiles_lock = threading.Lock()

    # -- dates -------------------------------------------------------------------------------------
    def dates(self, layer: str, table: str) -> list[dt.date]:
        return list_partitions(self.store, layer, table)

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
        import pyarrow.compute as pc

        found = self.latest(layer, table, day)
        if found is None:
            return None, []
        frame = read_table(self.store, PartitionRef(layer, table, found))
        return found, frame.filter(pc.equal(frame.column("customer_id"), customer_id)).to_pylist()

    def customer(self, customer_id: str, day: dt.date | None = None) -> dict[str, Any] | None:
        """Value tier, segment and top-K recommendations of one customer as of ``day`` (latest when
        None): None when no published output knows the customer."""
        if not CUSTOMER_ID.match(customer_id):
            raise ValueError("customer id must be 1-64 letters, digits, '_', '.', ':' or '-'")
        found: dict[str, Any] = {"customer_id": customer_id, "value_tier": None, "segment": None}
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
        """The latest published customer profiles on or before ``day``, kept in memory until a
        newer (or republished) partition is asked for."""
        import numpy as np

        found = self.latest("scores", "customer_profiles", day)
        manifest = read_manifest(self.store, PartitionRef("scores", "customer_profiles", found)) if found else None
        if found is None or manifest is None:
            return None
        key = (found, manifest.version)
        with self._profiles_lock:
            if self._profiles is not None and self._profiles.key == key:
                return self._profiles
            table = read_table(self.store, PartitionRef("scores", "customer_profiles", found))
            ids = np.asarray(table.column("customer_id").to_pylist(), dtype=object)
            values = table.column("profile").combine_chunks()
            flat = values.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
            index = ProfileIndex(
                key=key,
                model_version=str(manifest.extra.get("model_version")),
                position={c: i for i, c in enumerate(ids)},
                ids=ids,
                vectors=flat.reshape(len(ids), -1) if len(ids) else np.zeros((0, 0), np.float32),
                errors=table.column("reconstruction_error").to_numpy(zero_copy_only=False).astype(np.float64),
            )
            self._profiles = index
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
        if found is None:
            return {}
        columns = ["product_id", "title", "category_path"]
        rows = read_table(self.store, PartitionRef("validated", "products", found), columns).to_pylist()
        return {row["product_id"]: row for row in rows}

    # -- dashboard ---------------------------------------------------------------------------------
    def segment_history(self, entity: str) -> list[dict[str, Any]]:
        """Per published day: each cluster's count, share and mean distance."""
        _check_entity(entity)
        history = []
        for day in self.dates("segments", entity):
            summary = self._json("segments", entity, day, "summary.json")
            history.append({"date": day.isoformat(), "clusters": summary})
        return history

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
        manifest = read_manifest(self.store, PartitionRef("segments", "customers", found)) if found else None
        if found is None or manifest is None:
            return None
        if not any(entry.path == f"{manifest.version}/profiles.json" for entry in manifest.files):
            return None  # published before segments had profiles
        profiles = self._json("segments", "customers", found, "profiles.json")
        catalogue = self.catalogue(found)
        for profile in profiles.values():
            for product in profile["top_products"]:
                product["title"] = catalogue.get(product["product_id"], {}).get("title")
        return {"date": found.isoformat(), "segments": profiles}

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
        reports = [self._json("reports", "training", d, "summary.json") for d in days]
        if not reports:
            return None
        current = reports[-1].get("champion_version")
        chosen = next((r for r in reversed(reports) if current is not None and r.get("version") == current), None)
        chosen = chosen or reports[-1]
        return {
            "champion_version": current,
            "trained_on": chosen["date"],
            "version": chosen["version"],
            "holdout": chosen["holdout"],
            "k": chosen.get("k"),  # the ranking metrics' K (reports before it was recorded: None)
            # Reports written before the threshold metrics have none.
            "threshold_metrics": chosen.get("threshold_metrics"),
            "baselines": chosen["baselines"],
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


def _check_entity(entity: str) -> None:
    if entity not in ENTITIES:
        raise ValueError(f"unknown entity {entity!r}; expected one of {', '.join(ENTITIES)}")
