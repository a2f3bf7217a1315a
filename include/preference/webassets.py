"""The pages' scripts, styles and fonts, served by the plugin itself: never fetched from a CDN.

Many deployments have no internet. Swagger UI (the API's ``docs`` page) and what Great
Expectations' Data Docs load from public CDNs (Bootstrap, bootstrap-table, jQuery, Popper, the
date picker, Font Awesome, Vega) come from pinned npm packages instead:

``python -m include.preference.webassets fetch`` (run by ``make install`` and the Docker build)
downloads each package's tarball from the npm registry (``PREFERENCE_NPM_REGISTRY`` names a
mirror), checks it against the sha512 pinned here (a mismatch is an error, never a warning) and
unpacks the files the pages use into ``.local/web/<package>@<version>/`` (``PREFERENCE_WEB_ASSETS_DIR``).

The plugin serves them under ``assets/`` and rewrites each Data Docs page it serves so that every
CDN address GX's templates name points there (:func:`offline_html`); the published pages stay as GX
wrote them.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import logging
import os
import re
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from include.preference.config import PROJECT_ROOT
from include.preference.errors import ConfigError

log = logging.getLogger(__name__)

NPM_REGISTRY = "https://registry.npmjs.org"
DEFAULT_ASSETS_DIR = PROJECT_ROOT / ".local" / "web"
MARKER = ".integrity"


@dataclass(frozen=True)
class NpmPackage:
    """One npm package version, pinned by its registry integrity (sha512), and the files used from it
    (paths inside the tarball's ``package/``; a path ending in ``/`` takes the whole folder)."""

    name: str
    version: str
    integrity: str
    files: tuple[str, ...]

    @property
    def folder(self) -> str:
        return f"{self.name}@{self.version}"

    def tarball_url(self, registry: str) -> str:
        return f"{registry.rstrip('/')}/{self.name}/-/{self.name.split('/')[-1]}-{self.version}.tgz"

    def uses(self, path: str) -> bool:
        """Whether ``path`` (inside the package) is one of the files used."""
        return any(path == f or (f.endswith("/") and path.startswith(f)) for f in self.files)


SWAGGER_UI = NpmPackage(
    "swagger-ui-dist",
    "5.35.0",
    # pragma: allowlist nextline secret (a checksum)
    "sha512-U06rpMtW9V3XPGOBeamTUSr0Z09jMX4IJuANpE/EZbAhw0G8CgwrzU4YmXkn/h0wCDNsXdGarTNNHC3sU8yVUQ==",
    ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"),
)
PACKAGES = (
    SWAGGER_UI,
    NpmPackage(
        "bootstrap",
        "4.3.1",
        # pragma: allowlist nextline secret (a checksum)
        "sha512-rXqOmH1VilAt2DyPzluTi2blhk17bO7ef+zLLPlWvG494pDxcM234pJ8wTc/6R40UWizAIIMgxjvxZg5kmsbag==",
        ("dist/css/bootstrap.min.css", "dist/js/bootstrap.min.js"),
    ),
    NpmPackage(
        "bootstrap-table",
        "1.19.1",
        # pragma: allowlist nextline secret (a checksum)
        "sha512-WvV+l1AI/C+zThaKmfHmi/IuayVNB0qdFyEhFx1jyZhO0oLtNJNANkCR3rvJf6Dkh72dsLElxpE/bzK9seEQLA==",
        (
            "dist/bootstrap-table.min.css",
            "dist/bootstrap-table.min.js",
            "dist/extensions/filter-control/bootstrap-table-filter-control.min.js",
        ),
    ),
    NpmPackage(
        "bootstrap-table",
        "1.19.0",
        # pragma: allowlist nextline secret (a checksum)
        "sha512-L+USHm3X9FKocx/6yngGu12yF6r6s1Ntuc+hoIK2a2QQJjHw5kcySLiE2HY/9sEaSGAOfPbfQOtBH3uKkcpqEA==",
        (
            "dist/extensions/filter-control/bootstrap-table-filter-control.css",
            "dist/extensions/filter-control/bootstrap-table-filter-control.min.css",
        ),
    ),
    NpmPackage(
        "jquery",
        "3.7.1",
        # pragma: allowlist nextline secret (a checksum)
        "sha512-m4avr8yL8kmFN8psrbFFFmB/If14iN5o9nw/NgnnM+kybDJpRsAynV2BsfpTYrTRysYUdADVD7CkUUizgkpLfg==",
        ("dist/jquery.min.js",),
    ),
    NpmPackage(
        "popper.js",
        "1.12.9",
        # pragma: allowlist nextline secret (a checksum)
        "sha512-s0EEi9xiSCdqz9lV4IiVH5yIZnDX/U1t0tCjB+0jXx9jW8lrR7kOpVupiUg175ogqVoudpDXHF1p6dKATCHMeg==",
        ("dist/umd/popper.min.js",),
    ),
    NpmPackage(
        "bootstrap-datepicker",
        "1.9.0",
        # pragma: allowlist nextline secret (a checksum)
        "sha512-9rYYbaVOheGYxjOr/+bJCmRPihfy+LkLSg4fIFMT9Od8WwWB/MB50w0JO1eBgKUMbb7PFHQD5uAfI3ArAxZRXA==",
        ("dist/css/bootstrap-datepicker.min.css", "dist/js/bootstrap-datepicker.min.js"),
    ),
    NpmPackage(
        "@forevolve/bootstrap-dark",
        "1.1.0",
        # pragma: allowlist nextline secret (a checksum)
        "sha512-A3ucpEpxPoTVO490lZZCfjPXxv832l7mm1IxX3bXyxvgwnPGXDLyh7dWrphXKO8YBAu3EswbBEu3VSW8NRMW3A==",
        ("dist/css/bootstrap-prefers-dark.css",),
    ),
    NpmPackage(
        "@fortawesome/fontawesome-free",
        "6.6.0",
        # pragma: allowlist nextline secret (a checksum)
        "sha512-60G28ke/sXdtS9KZCpZSHHkCbdsOGEhIUGlwq6yhY74UpTiToIh8np7A8yphhM4BWsvNFtIvLpi4co+h9Mr9Ow==",
        ("css/all.min.css", "webfonts/"),  # the stylesheet loads its fonts from ../webfonts/
    ),
    NpmPackage(
        "vega",
        "5.33.1",
        # pragma: allowlist nextline secret (a checksum)
        "sha512-1fArfVDUqVbb5z8n+/nVQb+VNBzx8svY6CrsyTK4Ujm4yrd9I1auoKxBAPXLCavY1LcrbHUskQbGUP8gXOzyQw==",
        ("build/vega.min.js",),
    ),
    NpmPackage(
        "vega-lite",
        "5.23.0",
        # pragma: allowlist nextline secret (a checksum)
        "sha512-l4J6+AWE3DIjvovEoHl2LdtCUkfm4zs8Xxx7INwZEAv+XVb6kR6vIN1gt3t2gN2gs/y4DYTs/RPoTeYAuEg6mA==",
        ("build/vega-lite.min.js",),
    ),
    NpmPackage(
        "vega-embed",
        "6.29.0",
        # pragma: allowlist nextline secret (a checksum)
        "sha512-PmlshTLtLFLgWtF/b23T1OwX53AugJ9RZ3qPE2c01VFAbgt3/GSNI/etzA/GzdrkceXFma+FDHNXUppKuM0U6Q==",
        ("build/vega-embed.min.js",),
    ),
)

# Every CDN address in Great Expectations' Data Docs templates, and the served file that replaces it
# (vega@5 and friends: the newest release of that major version, what the CDN serves).
DATA_DOCS_ASSETS = {
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": (
        "bootstrap@4.3.1/dist/css/bootstrap.min.css"
    ),
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": (
        "bootstrap@4.3.1/dist/js/bootstrap.min.js"
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": (
        "bootstrap-table@1.19.1/dist/bootstrap-table.min.css"
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": (
        "bootstrap-table@1.19.1/dist/bootstrap-table.min.js"
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js": (
        "bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js"
    ),
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css": (
        "bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css"
    ),
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css": (
        "bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css"
    ),
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery@3.7.1/dist/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": (
        "popper.js@1.12.9/dist/umd/popper.min.js"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css": (
        "bootstrap-datepicker@1.9.0/dist/css/bootstrap-datepicker.min.css"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js": (
        "bootstrap-datepicker@1.9.0/dist/js/bootstrap-datepicker.min.js"
    ),
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css": (
        "@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": (
        "@fortawesome/fontawesome-free@6.6.0/css/all.min.css"
    ),
    "https://cdn.jsdelivr.net/npm/vega@5": "vega@5.33.1/build/vega.min.js",
    "https://cdn.jsdelivr.net/npm/vega-lite@5": "vega-lite@5.23.0/build/vega-lite.min.js",
    "https://cdn.jsdelivr.net/npm/vega-embed@6": "vega-embed@6.29.0/build/vega-embed.min.js",
}
SWAGGER_FILES = {name: f"{SWAGGER_UI.folder}/{name}" for name in SWAGGER_UI.files}
# GX's navigation bar takes its logo from GX's public bucket; the installed package holds the same
# images (great_expectations/render/view/static/images), served as assets/great_expectations/images/.
GX_IMAGES_URL = "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/"
GX_IMAGES = "great_expectations/images/"

# A script or stylesheet tag's attributes that pin a CDN copy (the served copy is pinned by the sha512 above).
_PINNING = re.compile(r'\s+(?:integrity|crossorigin)="[^"]*"')
_TAG = re.compile(r"<(?:script|link|img)\b[^>]*>", re.I)
_GX_IMAGE = re.compile(r'"' + re.escape(GX_IMAGES_URL) + r'([A-Za-z0-9_.-]+)(?:\?[^"]*)?"')
_EXTERNAL = re.compile(r'\b(?:src|href)="(https?://[^"]+)"', re.I)


def assets_dir() -> Path:
    """Where the assets are unpacked: ``PREFERENCE_WEB_ASSETS_DIR`` or ``.local/web``."""
    return Path(os.environ.get("PREFERENCE_WEB_ASSETS_DIR") or DEFAULT_ASSETS_DIR)


def gx_images_dir() -> Path:
    """The images of the installed Great Expectations' Data Docs."""
    import great_expectations

    return Path(great_expectations.__file__).parent / "render" / "view" / "static" / "images"


def _package_of(relative: str) -> tuple[NpmPackage, str] | None:
    for package in PACKAGES:
        prefix = package.folder + "/"
        if relative.startswith(prefix):
            inside = relative[len(prefix) :]
            return (package, inside) if package.uses(inside) else None
    return None


def asset_file(relative: str) -> Path | None:
    """The unpacked file for ``relative`` (``<package>@<version>/<path>``) when it is one the pages
    use and was fetched; ``None`` for anything else (no other file of the folder is ever served)."""
    parts = PurePosixPath(relative).parts
    if not parts or any(part in ("", ".", "..") for part in parts) or relative.startswith("/"):
        return None
    if relative.startswith(GX_IMAGES) and len(parts) == 3:
        path = gx_images_dir() / parts[-1]
        return path if path.is_file() else None
    if _package_of(relative) is None:
        return None
    path = assets_dir() / relative
    return path if path.is_file() else None


def external_assets(html: str) -> list[str]:
    """The http(s) addresses ``html``'s script, link and img tags load (links to pages do not count)."""
    return [url for tag in _TAG.findall(html) for url in _EXTERNAL.findall(tag)]


def offline_html(html: str, base: str) -> str:
    """``html`` with every CDN script and stylesheet of the Data Docs, and GX's logo, pointing at
    ``{base}/assets/``, without the CDN copies' integrity pins."""

    def local(tag: re.Match[str]) -> str:
        text, count = _GX_IMAGE.subn(lambda image: f'"{base}/assets/{GX_IMAGES}{image.group(1)}"', tag.group(0))
        replaced = count > 0
        for url, path in DATA_DOCS_ASSETS.items():
            quoted = f'"{url}"'
            if quoted in text:
                text = text.replace(quoted, f'"{base}/assets/{path}"')
                replaced = True
        return _PINNING.sub("", text) if replaced else text

    return _TAG.sub(local, html)


def _verify(data: bytes, integrity: str, what: str) -> None:
    algorithm, _, expected = integrity.partition("-")
    if algorithm != "sha512":
        raise ConfigError(f"{what}: unsupported integrity {integrity[:20]!r}; expected sha512-...")
    found = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if found != expected:
        raise ConfigError(f"{what}: sha512 {found} does not match the pinned {expected}; not unpacked")


def fetch(
    directory: Path | None = None, registry: str | None = None, packages: tuple[NpmPackage, ...] = PACKAGES
) -> list[Path]:
    """Download, check and unpack every package not already unpacked; returns the package folders.

    Raises:
        ConfigError: a tarball that does not match its pinned sha512, or lacks a file the pages use.
    """
    directory = directory or assets_dir()
    registry = registry or os.environ.get("PREFERENCE_NPM_REGISTRY") or NPM_REGISTRY
    folders = []
    for package in packages:
        folder = directory / package.folder
        folders.append(folder)
        marker = folder / MARKER
        if marker.is_file() and marker.read_text().strip() == package.integrity:
            continue
        url = package.tarball_url(registry)
        log.info("fetching %s", url)
        with urllib.request.urlopen(url, timeout=120) as answer:  # noqa: S310 - the pinned registry or its mirror
            data = answer.read()
        _verify(data, package.integrity, url)
        unpacked = 0
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            for member in archive.getmembers():
                inside = member.name.split("/", 1)[1] if "/" in member.name else ""
                if not member.isfile() or not package.uses(inside) or ".." in PurePosixPath(inside).parts:
                    continue
                target = folder / inside
                target.parent.mkdir(parents=True, exist_ok=True)
                source = archive.extractfile(member)
                assert source is not None
                target.write_bytes(source.read())
                unpacked += 1
        missing = [f for f in package.files if not f.endswith("/") and not (folder / f).is_file()]
        if missing or not unpacked:
            raise ConfigError(f"{url} lacks {', '.join(missing) or 'every file the pages use'}")
        marker.write_text(package.integrity + "\n")
    return folders


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The pages' pinned web assets (Swagger UI, Data Docs' scripts).")
    parser.add_argument("command", choices=["fetch", "dir"])
    args = parser.parse_args(argv)
    if args.command == "fetch":
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        for folder in fetch():
            print(folder)
    else:
        print(assets_dir())
    return 0


if __name__ == "__main__":
    sys.exit(main())
