"""No Spark job reads or writes a local path: every Spark read and write in ``include/`` is one of
:class:`SparkLake`'s, and each of those passes its paths through ``s3a_only``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from include.preference.config import PROJECT_ROOT
from include.preference.storage.spark_lake import s3a_only

pytestmark = pytest.mark.unit

PACKAGE = PROJECT_ROOT / "include"
LAKE_MODULE = PACKAGE / "preference" / "storage" / "spark_lake.py"
# DataFrameReader/Writer formats and generic entry points, and SparkContext's file methods.
FORMATS = {"parquet", "csv", "json", "orc", "text", "load", "save", "saveAsTable", "insertInto", "avro"}
CONTEXT_IO = {
    "textFile",
    "wholeTextFiles",
    "binaryFiles",
    "binaryRecords",
    "saveAsTextFile",
    "pickleFile",
    "saveAsPickleFile",
    "addFile",
    "sequenceFile",
    "saveAsHadoopFile",
    "saveAsNewAPIHadoopFile",
}


def _chain(node: ast.AST) -> list[str]:
    """Attribute names along a call chain: ``x.read.option(...).parquet`` -> [read, option, parquet]."""
    names: list[str] = []
    while True:
        if isinstance(node, ast.Call):
            node = node.func
        elif isinstance(node, ast.Attribute):
            names.append(node.attr)
            node = node.value
        else:
            return names[::-1]


def spark_io_calls(path: Path) -> list[ast.Call]:
    """The Spark reads and writes in a module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        chain = _chain(node)
        io_chain = {"read", "write", "readStream", "writeStream"} & set(chain[:-1])
        if (node.func.attr in FORMATS and io_chain) or node.func.attr in CONTEXT_IO:
            found.append(node)
    return found


def _guarded(call: ast.Call) -> bool:
    """Every path argument is ``*s3a_only(...)``."""
    arguments = [*call.args, *(k.value for k in call.keywords if k.arg in (None, "path"))]
    return bool(arguments) and all(
        isinstance(a, ast.Starred)
        and isinstance(a.value, ast.Call)
        and isinstance(a.value.func, ast.Name)
        and a.value.func.id == "s3a_only"
        for a in arguments
    )


def test_spark_reads_and_writes_only_in_the_lake_module():
    outside = [
        f"{path.relative_to(PROJECT_ROOT)}:{call.lineno}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != LAKE_MODULE
        for call in spark_io_calls(path)
    ]
    assert outside == [], f"Spark I/O outside SparkLake (it must read and write S3 through it): {outside}"


def test_every_spark_read_and_write_of_the_lake_module_checks_its_paths():
    calls = spark_io_calls(LAKE_MODULE)
    assert len(calls) >= 4  # the module's reads and writes were found (the check itself works)
    unguarded = [call.lineno for call in calls if not _guarded(call)]
    assert unguarded == [], f"spark_lake.py lines {unguarded}: pass the paths through s3a_only"


def test_the_scan_finds_a_local_read_and_write(tmp_path):
    module = tmp_path / "job.py"
    module.write_text(
        "def job(spark, frame, root):\n"
        "    spark.read.option('basePath', str(root)).parquet(str(root / 'x'))\n"
        "    frame.write.mode('overwrite').parquet('/tmp/out')\n"
        "    spark.sparkContext.textFile('file:///etc/hosts')\n"
        "    frame.select('a').toPandas()\n"
    )
    calls = spark_io_calls(module)
    assert [c.lineno for c in calls] == [2, 3, 4]
    assert not any(_guarded(c) for c in calls)


@pytest.mark.parametrize("path", ["/tmp/lake/x", "file:///tmp/x", "s3://lake/x", "hdfs:///x", "relative/x"])
def test_s3a_only_refuses_every_other_filesystem(path):
    with pytest.raises(ValueError, match="S3 only"):
        s3a_only("s3a://lake/features/x/", path)


def test_s3a_only_passes_s3a_uris():
    assert s3a_only("s3a://lake/a", "s3a://lake/b/") == ["s3a://lake/a", "s3a://lake/b/"]
