"""The generic importer: CSV/Parquet drops described by a mapping file."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from include.preference.errors import SourceFormatError
from include.preference.schema import TABLES
from include.preference.sources.mapped import land_tables, load_mapping
from tests.support.drops import ORDERS_MAPPING

pytestmark = pytest.mark.unit

DAY = dt.date(2024, 2, 3)
ORDERS_CSV = """OrderRef,Line,CreatedAt,Buyer,Sku,Qty,Price,Cancelled
A-1,1,2024-02-02T09:00:00Z,u1,sku-1,1,9.99,no
A-2,1,2024-02-03T10:00:00Z,u1,sku-2,2,5.00,no
A-2,2,2024-02-03T10:00:00Z,u1,sku-1,1,9.49,no
A-3,1,2024-02-03T18:30:00+01:00,u2,sku-3,1,20.00,yes
A-4,1,2024-02-05T08:00:00Z,u3,sku-2,1,5.00,no
"""
MAPPING = ORDERS_MAPPING


def drop(tmp_path: Path, mapping: str = MAPPING, orders: str = ORDERS_CSV) -> Path:
    (tmp_path / "orders.csv").write_text(orders)
    path = tmp_path / "mapping.yaml"
    path.write_text(mapping)
    return path


def test_a_day_of_orders_lands_with_derived_events_and_snapshots(tmp_path):
    tables, facts = land_tables(drop(tmp_path), DAY)
    assert set(tables) == set(TABLES)
    assert list(tables["orders"]["order_id"]) == ["A-2", "A-2", "A-3"]
    assert list(tables["events"]["event_type"]) == ["purchase", "purchase"]  # the cancelled line is no purchase
    assert sorted(tables["products"]["product_id"]) == ["sku-1", "sku-2", "sku-3"]  # seen up to the day
    assert tables["products"].set_index("product_id").loc["sku-1", "price"] == "9.49"
    assert sorted(tables["customers"]["customer_id"]) == ["u1", "u2"]
    assert tables["reviews"].empty and list(tables["reviews"].columns)[:6] == list(TABLES["reviews"].column_names)
    assert facts["closed_day"] is False and facts["lines_landed"] == 3


def test_a_day_without_lines_inside_the_drop_is_closed(tmp_path):
    tables, facts = land_tables(drop(tmp_path), dt.date(2024, 2, 4))
    assert facts["closed_day"] is True and tables["orders"].empty


def test_parquet_events_with_constants(tmp_path):
    events = pd.DataFrame(
        {
            "id": ["e1", "e2"],
            "ts": ["2024-02-03 10:00:00", "2024-02-03 11:00:00"],
            "who": ["u1", "u2"],
            "sess": ["s1", "s2"],
            "sku": ["p1", "p2"],
            "amount": [3.5, 4.0],
        }
    )
    events.to_parquet(tmp_path / "events.parquet")
    mapping = tmp_path / "m.yaml"
    mapping.write_text("""
tables:
  events:
    file: events.parquet
    format: parquet
    columns: {event_id: id, event_time: ts, customer_id: who, session_id: sess, product_id: sku, price: amount}
    constants: {event_type: purchase, quantity: "1"}
""")
    tables, _ = land_tables(mapping, DAY)
    assert list(tables["events"]["price"]) == ["3.5", "4.0"]
    assert list(tables["orders"]["order_id"]) == ["s1", "s2"]  # orders derived from purchase events


@pytest.mark.parametrize(
    "mapping, message",
    [
        ("tables: {}", "maps no tables"),
        ("tables:\n  basket: {file: orders.csv}", "unknown table 'basket'"),
        ("tables:\n  orders:\n    file: orders.csv\n    columns: {order_id: OrderRef, colour: Sku}", "no column"),
        (
            "tables:\n  orders:\n    file: orders.csv\n    columns: {order_id: OrderRef}",
            r"missing_columns \(7\) for orders",
        ),
        (MAPPING.replace("Buyer", "Customer"), r"missing_columns \(1\): Customer"),
        (
            "tables:\n  products:\n    file: p.csv\n    columns: {product_id: a, price: b, first_seen: c}",
            "must map events or orders",
        ),
        (": not yaml [", "cannot be read"),
        ("- orders.csv\n- events.csv", "expected a YAML mapping with a 'tables:' section, got a list"),
        ("tables:\n  orders: orders.csv", "orders: expected settings"),
        ("tables:\n  orders:\n    columns: {order_id: OrderRef}", "orders: no file"),
        (MAPPING.replace("orders.csv", "missing.csv"), "file 'missing.csv' does not exist"),
        (MAPPING.replace("orders.csv", "../../../../etc/passwd"), "leads out of the mapping's folder"),
        (MAPPING.replace("orders.csv", "/etc/passwd"), "is absolute"),
        (MAPPING.replace("    columns:", "    colums:"), r"unknown setting\(s\) colums"),
    ],
)
def test_bad_mappings_fail_naming_the_problem(tmp_path, mapping, message):
    with pytest.raises(SourceFormatError, match=message):
        land_tables(drop(tmp_path, mapping=mapping), DAY)


def test_mapping_paths_are_relative_to_the_mapping_file(tmp_path):
    mapping = load_mapping(drop(tmp_path))
    assert mapping["orders"].file == (tmp_path / "orders.csv").resolve()


def test_every_mistake_of_a_mapping_is_named_at_once(tmp_path):
    mapping = "tables:\n  orders:\n    file: ../x.csv\n    format: xlsx\n  basket: {}\n"
    with pytest.raises(SourceFormatError) as raised:
        load_mapping(drop(tmp_path, mapping=mapping))
    message = str(raised.value)
    assert "4 mistake(s)" in message, message
    for part in ("unknown table 'basket'", "format must be csv or parquet", "leads out of", "missing_columns (8)"):
        assert part in message


def test_a_symbolic_link_out_of_the_mapping_folder_is_refused(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "orders.csv").write_text(ORDERS_CSV)
    drop_dir = tmp_path / "drop"
    drop_dir.mkdir()
    (drop_dir / "orders.csv").symlink_to(outside / "orders.csv")
    path = drop_dir / "mapping.yaml"
    path.write_text(MAPPING)
    with pytest.raises(SourceFormatError, match="leads out of the mapping's folder"):
        load_mapping(path)
    # A link that stays inside the folder is followed.
    (drop_dir / "orders.csv").unlink()
    (drop_dir / "data").mkdir()
    (drop_dir / "data" / "orders.csv").write_text(ORDERS_CSV)
    (drop_dir / "orders.csv").symlink_to(drop_dir / "data" / "orders.csv")
    assert load_mapping(path)["orders"].file == (drop_dir / "data" / "orders.csv").resolve()


def test_exact_repeated_lines_of_a_drop_are_marked_and_the_first_kept(tmp_path):
    from include.preference.sources.files import DUPLICATE_OF

    repeated = ORDERS_CSV + ORDERS_CSV.splitlines()[2] + "\n"  # A-2 line 1 once more, at the end
    tables, _ = land_tables(drop(tmp_path, orders=repeated), DAY)
    orders = tables["orders"]
    assert len(orders) == 4 and orders[DUPLICATE_OF].iloc[:3].isna().all()
    assert orders[DUPLICATE_OF].iloc[3] == 3  # the copy names the first line (line 3 of the file)
    # Purchase events derived from the orders carry the mark too.
    assert tables["events"][DUPLICATE_OF].notna().sum() == 1


def test_a_wider_line_of_a_drop_is_marked_carried_to_derived_events_and_left_out_of_snapshots(tmp_path):
    from include.preference.sources.files import MALFORMED

    wide = ORDERS_CSV.replace(
        "A-2,2,2024-02-03T10:00:00Z,u1,sku-1,1,9.49,no", "A-2,2,2024-02-03T10:00:00Z,u9,sku-9,1,9.49,no,x"
    )
    tables, _ = land_tables(drop(tmp_path, orders=wide), DAY)
    orders = tables["orders"]
    assert orders[MALFORMED].notna().tolist() == [False, True, False]
    assert "9 fields, the header 8" in orders[MALFORMED].iloc[1]
    assert tables["events"][MALFORMED].notna().sum() == 1
    assert "sku-9" not in set(tables["products"]["product_id"]) and "u9" not in set(tables["customers"]["customer_id"])
