"""Plots of a training run (PNG files): ROC and PR curves, calibration, training curve."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def figure() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def evaluation_plots(
    labels: np.ndarray, scores: np.ndarray, history: Sequence[Mapping[str, float]], out_dir: Path
) -> list[Path]:
    """Write roc.png, pr.png, calibration.png and training_curve.png; return their paths."""
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    plt = figure()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []

    fpr, tpr, _ = roc_curve(labels, scores)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(fpr, tpr, label=f"model (AUC {auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="random")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC on the holdout")
    ax.legend(loc="lower right")
    paths.append(save_figure(fig, out_dir / "roc.png", plt))

    precision, recall, _ = precision_recall_curve(labels, scores)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(recall, precision)
    ax.axhline(float(np.mean(labels)), linestyle="--", color="grey", label="positive rate")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall on the holdout")
    ax.legend()
    paths.append(save_figure(fig, out_dir / "pr.png", plt))

    observed, predicted = calibration_curve(labels, scores, n_bins=10, strategy="quantile")
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(predicted, observed, marker="o", label="model")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect")
    ax.set(xlabel="mean predicted propensity", ylabel="observed purchase rate", title="Calibration")
    ax.legend()
    paths.append(save_figure(fig, out_dir / "calibration.png", plt))

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([h["epoch"] for h in history], [h["loss"] for h in history], marker="o")
    ax.set(xlabel="epoch", ylabel="training loss (binary cross-entropy)", title="Training curve")
    paths.append(save_figure(fig, out_dir / "training_curve.png", plt))
    return paths


def save_figure(fig: Any, path: Path, plt: Any) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
