"""The promotion canary: load a registered model in a fresh Python process and score a small batch.

A model that loads in the training process can still fail where it will serve: a custom object
that only the training process had registered, an artifact that did not reach the store whole, a
dependency the model needs and the serving side lacks. Before ``champion`` moves, the gate runs

    python -m include.preference.canary models:/<name>/<version>

which loads the model the way scoring does (:func:`include.preference.model.load_model`, from the
MLflow server in ``MLFLOW_TRACKING_URI``), builds a batch of ``ROWS`` rows for the model's own
inputs from the feature spec, and checks one finite output per row. Exit status 0 and a JSON line
on success; otherwise a non-zero status and the reason on stderr (see :func:`run_canary`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import numpy as np

from include.preference.features import spec

ROWS = 8
TIMEOUT_SECONDS = 600


def canary_batch(names: list[str], rows: int = ROWS) -> dict[str, np.ndarray]:
    """``rows`` plausible rows for the named feature inputs (small counts, one category value)."""
    batch = {}
    for name in names:
        feature = spec.BY_NAME[name]
        if feature.kind == "numeric":
            batch[name] = np.arange(rows, dtype=np.float32) % 3
        else:
            batch[name] = np.array([spec.UNKNOWN] * rows, dtype=object)
    return batch


def score_canary(uri: str) -> dict[str, Any]:
    """Load ``uri`` here and score a canary batch; raises when the model cannot load or its output is wrong."""
    from include.preference.model import load_model

    model = load_model(uri)
    names = list(model.input) if isinstance(model.input, dict) else [t.name for t in model.inputs]
    out = np.asarray(model.predict(canary_batch(names), verbose=0))
    if out.shape[0] != ROWS or not np.isfinite(out).all():
        raise ValueError(f"canary output of shape {out.shape} is not {ROWS} finite rows")
    return {"uri": uri, "rows": ROWS, "inputs": len(names)}


def run_canary(uri: str, tracking_uri: str | None = None, timeout: float = TIMEOUT_SECONDS) -> str | None:
    """Run the canary for ``uri`` in a fresh process (against the MLflow server ``tracking_uri``,
    else the environment's): None when it passed, else why it failed."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    try:
        done = subprocess.run(  # noqa: S603 - this interpreter, this module, a model URI
            [sys.executable, "-m", "include.preference.canary", uri],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"the canary did not finish in {timeout:.0f} s"
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        return lines[-1][:500] if lines else f"the canary exited with {done.returncode}"
    return None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m include.preference.canary MODEL_URI", file=sys.stderr)
        return 2
    try:
        print(json.dumps(score_canary(args[0])))
    except Exception as error:  # noqa: BLE001 - reported as the canary's verdict
        print(f"canary failed for {args[0]}: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
