"""Spark's S3 connector: the pinned jars, fetched from Maven Central and checked.

pyspark bundles Hadoop's client (``hadoop-client-api-3.5.0.jar``) but not its S3A filesystem.
S3A is ``org.apache.hadoop:hadoop-aws`` of the same Hadoop version plus what that release declares
at compile scope: the shaded AWS SDK v2 ``bundle`` (its version from ``hadoop-project-3.5.0.pom``,
``aws-java-sdk-v2.version``) and the S3 analytics accelerator.

``python -m include.preference.jars fetch`` (run by ``make install`` and the Docker build) puts them
in ``.local/jars`` (``PREFERENCE_SPARK_JARS_DIR``). A download goes through the local Maven
repository (``~/.m2/repository``, the layout every JVM build tool shares), so a machine that already
has a jar, or fetched it for another checkout, does not download its 650 MB again. Every file is
checked against the SHA-256 pinned here before it is used; a mismatch is an error, never a warning.
``PREFERENCE_MAVEN_REPOSITORY`` names a mirror of Maven Central.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from include.preference.config import PROJECT_ROOT

log = logging.getLogger(__name__)

MAVEN_CENTRAL = "https://repo1.maven.org/maven2"
DEFAULT_JARS_DIR = PROJECT_ROOT / ".local" / "jars"
_CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class MavenJar:
    """One artifact of Maven Central, pinned by version and content."""

    group: str
    artifact: str
    version: str
    sha256: str

    @property
    def file_name(self) -> str:
        return f"{self.artifact}-{self.version}.jar"

    @property
    def path(self) -> str:
        """The artifact's path in a Maven repository."""
        return f"{self.group.replace('.', '/')}/{self.artifact}/{self.version}/{self.file_name}"


# hadoop-aws of pyspark 4.2.0's Hadoop and its compile-scope dependencies (hadoop-project 3.5.0).
S3A_JARS = (
    MavenJar(
        "org.apache.hadoop",
        "hadoop-aws",
        "3.5.0",
        "66bd9eefb938b1a1657487324b63c13df2d8b17164a1dd24e0ef37b905bc5baa",  # pragma: allowlist secret (a checksum)
    ),
    MavenJar(
        "software.amazon.awssdk",
        "bundle",
        "2.35.4",
        "db4b55f24ad1b4e70f17eb1717a4de76a8dadc5a27d764be7c44ff67b2c1c677",  # pragma: allowlist secret (a checksum)
    ),
    MavenJar(
        "software.amazon.s3.analyticsaccelerator",
        "analyticsaccelerator-s3",
        "1.3.1",
        "4959a9747cbb479c73c3ffbcd479bee5b014f8b2880994585a8693fb9d24675e",  # pragma: allowlist secret (a checksum)
    ),
)


class JarError(RuntimeError):
    """A jar is missing, or its content is not the pinned one."""


def jars_dir() -> Path:
    """Where Spark's extra jars live on this host (``PREFERENCE_SPARK_JARS_DIR``)."""
    configured = os.environ.get("PREFERENCE_SPARK_JARS_DIR", "")
    return Path(configured) if configured else DEFAULT_JARS_DIR


def _maven_cache() -> Path:
    return Path(os.environ.get("PREFERENCE_MAVEN_CACHE", "") or Path.home() / ".m2" / "repository")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _verified(path: Path, jar: MavenJar) -> bool:
    return path.is_file() and sha256_of(path) == jar.sha256


def _download(jar: MavenJar, target: Path, repository: str) -> None:
    url = f"{repository.rstrip('/')}/{jar.path}"
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    log.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as out:  # noqa: S310 - https URL
            shutil.copyfileobj(response, out, _CHUNK)
        found = sha256_of(partial)
        if found != jar.sha256:
            raise JarError(f"{url} has SHA-256 {found}, not the pinned {jar.sha256}; refusing to use it")
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


def fetch(directory: Path | None = None, repository: str | None = None) -> list[Path]:
    """Make sure every pinned jar is in ``directory`` with its pinned content; returns their paths."""
    directory = directory or jars_dir()
    repository = repository or os.environ.get("PREFERENCE_MAVEN_REPOSITORY") or MAVEN_CENTRAL
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for jar in S3A_JARS:
        target = directory / jar.file_name
        if not _verified(target, jar):
            cached = _maven_cache() / jar.path
            if not _verified(cached, jar):
                _download(jar, cached, repository)
            partial = target.with_name(f".{target.name}.{os.getpid()}.part")
            try:
                os.link(cached, partial)
            except OSError:
                shutil.copyfile(cached, partial)
            partial.replace(target)
        paths.append(target)
    return paths


def classpath(directory: Path | None = None) -> list[Path]:
    """The S3A jars for a JVM's class path.

    Only presence is checked here (the content was checked when :func:`fetch` placed them): this
    runs at every Spark session's start.

    Raises:
        JarError: a jar is missing, with the command that fetches it.
    """
    directory = directory or jars_dir()
    paths = [directory / jar.file_name for jar in S3A_JARS]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise JarError(
            f"Spark's S3 connector is not installed: {', '.join(missing)} missing from {directory}. "
            "Run make install (or python -m include.preference.jars fetch)."
        )
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m include.preference.jars", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    get = sub.add_parser("fetch", help="download and check the pinned jars (make install does)")
    get.add_argument("directory", nargs="?", type=Path, default=None)
    sub.add_parser("classpath", help="print the jars' class path")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "fetch":
        for path in fetch(args.directory):
            print(path)
        return 0
    print(":".join(str(p) for p in classpath()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
