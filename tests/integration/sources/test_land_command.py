"""`python -m include.preference land --input/--mapping`: a file source landed from the command line
by the DAG's own task, against the real S3 server; mistakes refused with a message, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from include.preference.storage import PartitionRef, read_manifest, read_table

pytestmark = pytest.mark.integration

PROJECT_ROOT = Path(__file__).resolve().parents[3]
SAMPLE = PROJECT_ROOT.parent / "shared" / "data" / "online_retail_dev.csv.gz"


def land(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFERENCE_LOCAL_DIR": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "include.preference", "land", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_file_and_a_mapping_land_from_the_command_line(lake_env, tmp_path):
    lines = pd.read_csv(SAMPLE, dtype=str, keep_default_na=False)
    day = pd.to_datetime(lines["InvoiceDate"]).dt.date.value_counts().idxmax()
    done = land("--date", day.isoformat(), "--source", "online_retail", "--input", str(SAMPLE), home=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    on_day = lines[pd.to_datetime(lines["InvoiceDate"]).dt.date == day]
    manifest = read_manifest(lake_env, PartitionRef("raw", "orders", day))
    assert manifest is not None and manifest.row_count == len(on_day)

    drop = tmp_path / "drop"
    drop.mkdir()
    dropped = on_day.rename(columns={"InvoiceNo": "Ref", "StockCode": "Sku"}).head(50)
    dropped.assign(Line=range(1, 51)).to_csv(drop / "orders.csv", index=False)
    (drop / "mapping.yaml").write_text(
        "tables:\n  orders:\n    file: orders.csv\n"
        "    columns: {order_id: Ref, line_number: Line, order_time: InvoiceDate, customer_id: CustomerID,\n"
        "              product_id: Sku, quantity: Quantity, unit_price: UnitPrice}\n"
        "    constants: {is_cancellation: 'false'}\n"
    )
    # The same day again from the mapped drop: the raw partition is replaced, not added to.
    done = land("--date", day.isoformat(), "--mapping", str(drop / "mapping.yaml"), home=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    orders = read_table(lake_env, PartitionRef("raw", "orders", day)).to_pandas()
    assert len(orders) == 50 and set(orders["product_id"]) <= set(on_day["StockCode"])


def test_the_command_refuses_what_it_cannot_land_with_a_message(lake_env, tmp_path):
    absent = str(tmp_path / "no.csv")
    missing = land("--date", "2011-01-04", "--source", "online_retail", "--input", absent, home=tmp_path)
    assert missing.returncode != 0 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text("tables:\n  orders:\n    file: ../../../../etc/passwd\n")
    unsafe = land("--date", "2011-01-04", "--mapping", str(mapping), home=tmp_path)
    assert unsafe.returncode != 0 and "leads out of the mapping's folder" in unsafe.stderr
    assert "Traceback" not in unsafe.stderr
    synthetic = land("--date", "2011-01-04", "--input", str(SAMPLE), home=tmp_path)
    assert synthetic.returncode != 0 and "--input needs a file source" in synthetic.stderr


def test_a_file_whose_dates_cannot_tell_their_order_lands_with_the_run_s_date_order(lake_env, tmp_path):
    header = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"
    rows = [f"53636{i},8512{i},HEART,6,03/04/2011 08:2{i},2.55,17850.0,United Kingdom" for i in range(3)]
    path = tmp_path / "ambiguous.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PREFERENCE_DATE_ORDER"}
    refused = subprocess.run(
        [sys.executable, "-m", "include.preference", "land", "--date", "2011-04-03", "--source", "online_retail"]
        + ["--input", str(path)],
        cwd=PROJECT_ROOT,
        env={**env, "PREFERENCE_LOCAL_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode != 0 and "ambiguous_dates" in refused.stderr and "--date-order" in refused.stderr
    assert "Traceback" not in refused.stderr
    args = ("--date", "2011-04-03", "--source", "online_retail", "--input", str(path), "--date-order", "day_first")
    done = land(*args, home=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = read_manifest(lake_env, PartitionRef("raw", "orders", pd.Timestamp("2011-04-03").date()))
    assert manifest is not None and manifest.row_count == 3
