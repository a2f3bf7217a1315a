"""The evaluation protocol end to end on an invoice file: time against the 20-minute budget, and
the model's recall@K against the best baseline's (goal: at least 1.25x).

    .venv/bin/python bench/bench_evaluate.py [--input ../shared/data/online_retail_dev.csv.gz]
        [--cutoff 2011-09-09] [--horizon-days 90] [--k 10]

Runs the same code as ``python -m include.preference evaluate`` (import, validation, features,
training examples, training, scoring, baselines) once, then prints the seconds per stage, the total
as a share of 20 minutes, and recall@K of the model over the best baseline.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
from pathlib import Path

from include.preference.evaluation.protocol import Protocol, evaluate

BUDGET_SECONDS = 20 * 60
TARGET_RATIO = 1.25


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_input = Path(__file__).resolve().parents[2] / "shared" / "data" / "online_retail_dev.csv.gz"
    parser.add_argument("--input", type=Path, default=default_input)
    parser.add_argument("--cutoff", type=dt.date.fromisoformat, default=dt.date(2011, 9, 9))
    parser.add_argument("--horizon-days", type=int, default=90)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()

    protocol = Protocol("online_retail", str(args.input), args.cutoff, args.horizon_days, args.k)
    with tempfile.TemporaryDirectory(prefix="bench-evaluate-") as work:
        report = evaluate(protocol, Path(work))
    seconds = report["seconds"]
    best = max(report["baselines"], key=lambda name: report["baselines"][name]["recall_at_k"])
    model, baseline = report["model"]["recall_at_k"], report["baselines"][best]["recall_at_k"]
    print(f"input: {args.input} ({report['data']['days']} days, {report['n_eval_customers']} evaluated customers)")
    for stage, value in seconds.items():
        print(f"  {stage:<20} {value:8.1f} s")
    print(f"total {seconds['total']:.0f} s = {seconds['total'] / BUDGET_SECONDS:.2f} x the 20-minute budget")
    print(
        f"recall@{args.k}: model {model:.4f}, best baseline {best} {baseline:.4f}: "
        f"ratio {model / baseline:.2f} (goal {TARGET_RATIO})"
    )


if __name__ == "__main__":
    main()
