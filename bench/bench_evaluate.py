"""The evaluation protocol end to end on an invoice file: time against the 20-minute budget per
cutoff, and the model's pooled recall@K against the best baseline's over a rolling origin (goal: at
least 1.25x).

    .venv/bin/python bench/bench_evaluate.py [--input ../shared/data/online_retail_dev.csv.gz]
        [--cutoff 2011-09-09] [--folds 3] [--horizon-days 90] [--k 10] [--scale N [--guest-share S]]

Runs the same code as ``python -m include.preference evaluate`` (import, validation, features,
training examples, training, scoring, baselines) at ``--folds`` cutoffs 30 days apart ending at
``--cutoff``, then prints the seconds per stage, the time per cutoff as a share of 20 minutes, and
the model's pooled recall@K over the best baseline's with its paired bootstrap 95% interval.

``--scale N`` times the protocol at a larger size when only a sample of the file is at hand: the
input is written N times over, each copy with its own customer ids and invoice numbers (same
products, same days), plus lines without a customer id making up ``--guest-share`` of the file (the
full Online Retail file: 135,080 of its 541,909 lines). With the 20% customer sample, ``--scale 5``
gives a file of the full file's size and customer count. Recall on a scaled file is not a quality
figure (the copies repeat the same customers); its time is the figure.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

import harness
import numpy as np
import pandas as pd
from lake import running_lake

from include.preference.evaluation.protocol import Protocol, evaluate

BUDGET_SECONDS = 20 * 60
TARGET_RATIO = 1.25


def scaled_copy(source: Path, copies: int, guest_share: float, target: Path, seed: int = 5) -> dict[str, int]:
    """``copies`` copies of an Online Retail file with distinct customers and invoices, plus guest
    lines (no customer id) as ``guest_share`` of the result; written as CSV.gz to ``target``."""
    frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    known = frame[frame["CustomerID"].str.strip() != ""]
    number = pd.to_numeric(known["CustomerID"], errors="coerce")
    offset = int(number.max()) + 1  # each copy's ids lie above every id of the one before
    parts = [frame]
    for copy in range(1, copies):
        part = known.copy()
        part["CustomerID"] = (number + offset * copy).map(lambda v: f"{v:.1f}")
        # Invoices stay distinct (and cancellations keep their leading C): a suffix per copy.
        part["InvoiceNo"] = part["InvoiceNo"] + f"-{copy}"
        parts.append(part)
    scaled = pd.concat(parts, ignore_index=True)
    guests = int(round(len(scaled) * guest_share / (1.0 - guest_share))) if guest_share > 0 else 0
    if guests:
        rows = np.random.default_rng(seed).choice(len(known), size=guests, replace=True)
        extra = known.iloc[rows].copy()
        extra["CustomerID"] = ""
        extra["InvoiceNo"] = extra["InvoiceNo"] + "-g"
        scaled = pd.concat([scaled, extra], ignore_index=True)
    scaled = scaled.sort_values("InvoiceDate", kind="mergesort")
    scaled.to_csv(target, index=False, compression="gzip")
    customers = scaled["CustomerID"].str.strip()
    return {"lines": len(scaled), "customers": int(customers[customers != ""].nunique())}


def main() -> None:
    parser = harness.parser(__doc__)
    default_input = Path(__file__).resolve().parents[2] / "shared" / "data" / "online_retail_dev.csv.gz"
    parser.add_argument("--input", type=Path, default=default_input)
    parser.add_argument("--cutoff", type=dt.date.fromisoformat, default=dt.date(2011, 9, 9))
    parser.add_argument("--horizon-days", type=int, default=90)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--scale", type=int, default=1, help="copies of the input's customers (see above)")
    parser.add_argument("--guest-share", type=float, default=135_080 / 541_909)
    parser.add_argument("--training-anchors", type=int, default=Protocol.training_anchors)
    parser.add_argument("--anchor-step-days", type=int, default=Protocol.anchor_step_days)
    parser.add_argument("--epochs", type=int, default=Protocol.epochs)
    parser.add_argument("--folds", type=int, default=Protocol.folds, help="cutoffs, 30 days apart (rolling origin)")
    # Quick: the file's first days, one anchor, one epoch: every stage runs, nothing is measured.
    args = harness.pick(
        parser.parse_args(),
        cutoff=dt.date(2010, 12, 8),
        horizon_days=3,
        training_anchors=1,
        anchor_step_days=3,
        epochs=1,
        folds=1,
    )

    with tempfile.TemporaryDirectory(prefix="bench-evaluate-") as work:
        source = args.input
        if args.scale > 1:
            source = Path(work) / "scaled.csv.gz"
            size = scaled_copy(args.input, args.scale, args.guest_share, source)
            print(f"scaled file: {size['lines']:,} lines, {size['customers']:,} customers ({args.scale} copies)")
        protocol = Protocol(
            "online_retail",
            str(source),
            args.cutoff,
            args.horizon_days,
            args.k,
            training_anchors=args.training_anchors,
            anchor_step_days=args.anchor_step_days,
            epochs=args.epochs,
            folds=args.folds,
        )
        with running_lake(Path(work) / "lake") as (_, store):
            report = evaluate(protocol, store, Path(work) / "run")
    # The whole report beside the figures: every fold, baseline and interval, for whoever reads them.
    from include.preference.evaluation.protocol import write_report

    write_report(report, harness.results_dir(args.quick) / "bench_evaluate.report.json")
    seconds = report["seconds"]
    pooled = report["pooled"]
    recalls = {name: values["recall_at_k"] for name, values in pooled["metrics"].items() if name != "model"}
    best = max(recalls, key=lambda name: recalls[name])
    model, baseline = pooled["metrics"]["model"]["recall_at_k"], recalls[best]
    interval = pooled["model_over_baseline_recall"][best]
    folds = len(pooled["cutoffs"])
    per_cutoff = (seconds["total"] - seconds["import_and_validate"]) / folds + seconds["import_and_validate"]
    print(f"input: {args.input} ({report['data']['days']} days, cutoffs {', '.join(pooled['cutoffs'])})")
    for stage, value in seconds.items():
        print(f"  {stage:<20} {value:8.1f} s")
    print(f"per cutoff {per_cutoff:.0f} s = {per_cutoff / BUDGET_SECONDS:.2f} x the 20-minute budget")
    for name, values in pooled["metrics"].items():
        print(f"  pooled recall@{args.k} {name:<18} {values['recall_at_k']:.4f}")
    print(
        f"pooled recall@{args.k}: model {model:.4f}, best baseline {best} {baseline:.4f}: "
        f"ratio {interval['ratio']:.2f} (95% {interval['low']:.2f}-{interval['high']:.2f}; goal {TARGET_RATIO})"
    )
    ratios = {
        f"model / {best} pooled recall@{args.k}": interval["ratio"],
        "its 95% interval's lower end": interval["low"],
        "time per cutoff / 20 minutes": per_cutoff / BUDGET_SECONDS,
    }
    size = f"{report['data']['days']} days, {folds} cutoffs, {int(pooled['units'])} customer-cutoffs"
    if args.scale > 1:
        size += f", the file {args.scale} times over"
    harness.record(
        "bench_evaluate",
        args,
        title=f"the evaluate protocol on {args.input.name} (import, validation, features, examples, training, "
        f"scoring, baselines) at a rolling origin: the model's pooled recall@{args.k} / the best baseline's "
        "(paired bootstrap 95% interval); time per cutoff / 20 minutes",
        result=f"{interval['ratio']:.2f}x (95% {interval['low']:.2f}-{interval['high']:.2f}; {model:.3f} vs {best} "
        f"{baseline:.3f}); {per_cutoff:.0f} s = {per_cutoff / BUDGET_SECONDS:.2f}x of 20 min per cutoff ({size})",
        ratios=ratios,
        goal=f"at least {TARGET_RATIO}x; under 20 minutes per cutoff",
        met=interval["ratio"] >= TARGET_RATIO and per_cutoff <= BUDGET_SECONDS,
        seconds=seconds,
        sizes={"days": report["data"]["days"], "units": pooled["units"], "folds": folds, "scale": args.scale},
    )


if __name__ == "__main__":
    main()
