"""A fuzz pass over the mapping-file parser: whatever the file holds, ``load_mapping`` returns
checked mappings whose files lie in the mapping's folder, or refuses with the project's own error."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from include.preference.errors import SourceFormatError
from include.preference.schema import TABLES
from include.preference.sources.mapped import TABLE_KEYS, load_mapping

pytestmark = pytest.mark.unit

COLUMN_NAMES = sorted({c for spec in TABLES.values() for c in spec.column_names})
PATHS = (
    st.sampled_from(
        ["orders.csv", "data/events.csv", "../orders.csv", "/etc/passwd", "link.csv", "missing.csv", "", ".", "a\x00b"]
    )
    | st.text(max_size=300)
    | st.text(alphabet="ab", min_size=250, max_size=400)  # file names over the system's limit (255)
    | st.text(alphabet="a./", min_size=250, max_size=5000)  # long paths
)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20) | PATHS
WORDS = st.sampled_from([*TABLES, *TABLE_KEYS, *COLUMN_NAMES, "tables", "csv", "parquet", "xlsx"]) | st.text(max_size=8)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(WORDS, inner, max_size=5),
    max_leaves=25,
)
TABLE_SETTINGS = st.fixed_dictionaries(
    {},
    optional={
        "file": PATHS | VALUES,
        "format": st.sampled_from(["csv", "parquet", "CSV", "xlsx"]) | VALUES,
        "columns": st.dictionaries(st.sampled_from(COLUMN_NAMES) | WORDS, st.text(max_size=8) | VALUES, max_size=6)
        | VALUES,
        "constants": st.dictionaries(st.sampled_from(COLUMN_NAMES) | WORDS, SCALARS, max_size=3) | VALUES,
    },
)
DOCUMENTS = (
    st.fixed_dictionaries({"tables": st.dictionaries(st.sampled_from(list(TABLES)) | WORDS, TABLE_SETTINGS | VALUES)})
    | st.dictionaries(WORDS, VALUES, max_size=3)
    | VALUES
)


def _folder() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="mapping-fuzz-"))
    (folder / "data").mkdir()
    for name in ("orders.csv", "data/events.csv"):
        (folder / name).write_text("a,b\n1,2\n")
    (folder.parent / f"{folder.name}-outside.csv").write_text("a\n1\n")
    (folder / "link.csv").symlink_to(folder.parent / f"{folder.name}-outside.csv")
    return folder


FOLDER = _folder()
atexit.register(shutil.rmtree, FOLDER, True)
atexit.register(Path.unlink, FOLDER.parent / f"{FOLDER.name}-outside.csv", True)


def check(text: str | bytes) -> None:
    path = FOLDER / "mapping.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    try:
        mappings = load_mapping(path)
    except SourceFormatError as error:
        assert str(error)  # a message, never an empty refusal
        return
    assert mappings
    for name, mapping in mappings.items():
        assert name in TABLES and mapping.file.is_file()
        assert mapping.file.resolve().is_relative_to(FOLDER.resolve())


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(DOCUMENTS)
def test_any_yaml_document_is_a_checked_mapping_or_a_refusal(document):
    check(yaml.safe_dump(document, allow_unicode=True))


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.binary(max_size=300) | st.text(max_size=300))
def test_any_bytes_are_a_checked_mapping_or_a_refusal(raw):
    check(raw)
