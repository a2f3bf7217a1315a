"""Strings from the data (product names, review text, ids) cannot reach a shell, SQL or a Spark
expression: the product's code has no call that parses a string as code.

Every file under ``include/``, ``dags/`` and ``plugins/`` is parsed and searched for:

* Spark SQL parsed from text: ``spark.sql(...)``, ``F.expr(...)``, ``selectExpr(...)``, and
  ``where``/``filter`` given a string (Spark parses it as SQL) instead of a Column;
* pandas expressions parsed from text: ``query``/``eval`` with a built string;
* a shell: ``shell=True``, ``os.system``, ``os.popen``;
* SQL built as text: ``execute`` given an f-string, ``%``-formatting, ``+`` or ``.format`` (queries
  take parameters, identifiers go through ``psycopg.sql.Identifier``).

ruff's bandit rules (``S``, in ``make lint``) cover shells and SQL strings too; this covers Spark.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
PRODUCT_CODE = ("include", "dags", "plugins")
SPARK_TEXT_SQL = {"sql", "expr", "selectExpr"}
STRING_CONDITION = {"where", "filter"}
PANDAS_TEXT = {"query", "eval"}


def _is_text(node: ast.AST) -> bool:
    """A string literal or a string built at run time (f-string, %, +, .format)."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mod, ast.Add)):
        return _is_text(node.left) or _is_text(node.right)
    # "...".format(...) builds text; psycopg's sql.SQL("...").format(sql.Identifier(...)) composes safely.
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "format"
        and isinstance(node.func.value, (ast.Constant, ast.JoinedStr))
    )


def _is_built(node: ast.AST) -> bool:
    return _is_text(node) and not isinstance(node, ast.Constant)


def sinks(source: str, filename: str = "<string>") -> list[str]:
    """Each call in ``source`` that parses a string as Spark SQL, pandas code, shell or SQL."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        where = f"{filename}:{node.lineno}"
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        receiver = node.func.value if isinstance(node.func, ast.Attribute) else None
        if name in SPARK_TEXT_SQL:
            found.append(f"{where}: {name}() parses Spark SQL from text")
        if name in STRING_CONDITION and node.args and _is_text(node.args[0]):
            found.append(f"{where}: {name}() given a string (parsed as Spark SQL)")
        if name in PANDAS_TEXT and node.args and _is_built(node.args[0]):
            found.append(f"{where}: {name}() of a built string")
        if any(k.arg == "shell" and isinstance(k.value, ast.Constant) and k.value.value for k in node.keywords):
            found.append(f"{where}: shell=True")
        if name in {"system", "popen"} and isinstance(receiver, ast.Name) and receiver.id == "os":
            found.append(f"{where}: os.{name}() runs a shell")
        if name in {"execute", "executemany"} and node.args and _is_built(node.args[0]):
            found.append(f"{where}: {name}() of SQL built as text")
    return found


def test_the_checker_finds_each_kind_of_sink():
    hostile = """
spark.sql(f"SELECT * FROM t WHERE title = '{title}'")
frame.where("title = 'x'")
frame.select(F.expr("upper(title)"))
frame.selectExpr("title")
table.query(f"title == '{title}'")
subprocess.run(command, shell=True)
os.system("echo " + title)
cursor.execute("SELECT * FROM t WHERE id = %s" % customer)
"""
    assert len(sinks(hostile)) == 8
    safe = """
frame.where(F.col("title") == title)
subprocess.run(["weed", "mini", "-dir", path], check=True)
conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
series.where(mask)
"""
    assert sinks(safe) == []


def test_product_code_parses_no_string_as_shell_sql_or_spark_expression():
    files = [path for folder in PRODUCT_CODE for path in sorted((ROOT / folder).rglob("*.py"))]
    assert len(files) > 30, f"expected the product's Python files under {PRODUCT_CODE}, found {len(files)}"
    found = [hit for path in files for hit in sinks(path.read_text(), str(path.relative_to(ROOT)))]
    assert found == [], "calls that parse a string as code:\n" + "\n".join(found)
