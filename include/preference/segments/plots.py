"""Segment plots (PNG): the t-SNE map by cluster, cluster sizes over time, migration, RFM tiers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from include.preference.evaluation.plots import figure, save_figure


def tsne_map(map2d: np.ndarray, labels: np.ndarray, path: Path, title: str) -> Path:
    plt = figure()
    fig, ax = plt.subplots(figsize=(7, 6))
    noise = labels < 0
    ax.scatter(map2d[noise, 0], map2d[noise, 1], s=6, c="lightgrey", label="noise")
    for cluster in sorted(set(labels[~noise].tolist())):
        members = labels == cluster
        ax.scatter(map2d[members, 0], map2d[members, 1], s=8, label=f"cluster {cluster}")
    ax.set(title=title, xticks=[], yticks=[])
    ax.legend(markerscale=2, fontsize="small", loc="best")
    return save_figure(fig, path, plt)


def sizes_over_time(history: Mapping[str, Mapping[str, int]], path: Path, title: str) -> Path:
    """``history``: date -> cluster id -> members, one line per cluster."""
    plt = figure()
    days = sorted(history)
    clusters = sorted({c for day in days for c in history[day]}, key=lambda c: (len(c), c))
    fig, ax = plt.subplots(figsize=(8, 4))
    for cluster in clusters:
        ax.plot(days, [history[d].get(cluster, 0) for d in days], marker="o", label=f"cluster {cluster}")
    ax.set(title=title, xlabel="date", ylabel="members")
    ax.tick_params(axis="x", rotation=45)
    ax.legend(fontsize="small", ncol=2)
    return save_figure(fig, path, plt)


def migration_heatmap(
    labels_from: Sequence[str], labels_to: Sequence[str], counts: np.ndarray, path: Path, title: str
) -> Path:
    plt = figure()
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * len(labels_to), 1.2 + 0.5 * len(labels_from)))
    image = ax.imshow(np.log1p(counts), cmap="viridis")
    ax.set_xticks(range(len(labels_to)), labels_to, rotation=45)
    ax.set_yticks(range(len(labels_from)), labels_from)
    for (i, j), value in np.ndenumerate(counts):
        # Dark numbers on the light end of the scale, white on the dark end: readable on every cell.
        red, green, blue, _ = image.cmap(image.norm(np.log1p(value)))
        ink = "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "white"
        ax.text(j, i, str(int(value)), ha="center", va="center", color=ink, fontsize="small")
    ax.set(title=title, xlabel="today", ylabel="previous day")
    fig.colorbar(image, ax=ax, label="log(1 + members)")
    return save_figure(fig, path, plt)


def tier_sizes(counts: Mapping[str, int], path: Path, title: str) -> Path:
    plt = figure()
    fig, ax = plt.subplots(figsize=(5, 4))
    names = list(counts)
    ax.bar(names, [counts[n] for n in names], color=["#c0504d", "#f3a533", "#4f81bd"][: len(names)])
    ax.set(title=title, ylabel="customers")
    return save_figure(fig, path, plt)
