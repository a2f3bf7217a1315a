"""The pages need no CDN: every script and stylesheet Great Expectations' Data Docs templates load is
served from a pinned, checked copy, and Swagger UI too."""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
from pathlib import Path

import great_expectations
import pytest

from include.preference import webassets
from include.preference.errors import ConfigError

pytestmark = pytest.mark.unit

GX_TEMPLATES = Path(great_expectations.__file__).parent / "render" / "view" / "templates"


def gx_template_text() -> str:
    return "\n".join(path.read_text() for path in sorted(GX_TEMPLATES.glob("*.j2")))


def test_every_cdn_asset_of_the_installed_data_docs_templates_has_a_served_copy():
    loaded = set(webassets.external_assets(gx_template_text()))
    assert len(loaded) >= 15  # Bootstrap, bootstrap-table, jQuery, Popper, the date picker, Font Awesome, Vega
    unmapped = sorted(loaded - set(webassets.DATA_DOCS_ASSETS))
    assert not unmapped, f"Data Docs would load these from the internet: {unmapped}"


def test_rewritten_pages_load_nothing_from_outside_and_keep_their_links():
    text = gx_template_text()
    offline = webassets.offline_html(text, "/preference")
    assert webassets.external_assets(offline) == []
    assert 'src="/preference/assets/jquery@3.7.1/dist/jquery.min.js"' in offline
    assert "integrity=" not in offline and 'crossorigin="anonymous"' not in offline
    # Links to pages are not assets: left as GX wrote them.
    assert offline.count('href="https://greatexpectations.io"') == text.count('href="https://greatexpectations.io"')


def test_every_served_path_is_a_file_its_package_unpacks():
    for path in [*webassets.DATA_DOCS_ASSETS.values(), *webassets.SWAGGER_FILES.values()]:
        package = next(p for p in webassets.PACKAGES if path.startswith(p.folder + "/"))
        assert package.uses(path[len(package.folder) + 1 :]), path


def test_only_the_used_files_of_fetched_packages_are_served(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFERENCE_WEB_ASSETS_DIR", str(tmp_path))
    used = tmp_path / "jquery@3.7.1" / "dist" / "jquery.min.js"
    used.parent.mkdir(parents=True)
    used.write_text("/* jquery */")
    (tmp_path / "jquery@3.7.1" / "package.json").write_text("{}")
    assert webassets.asset_file("jquery@3.7.1/dist/jquery.min.js") == used
    for refused in (
        "jquery@3.7.1/package.json",  # fetched folder, but not a file the pages use
        "jquery@3.7.1/dist/../package.json",
        "/etc/passwd",
        "../web/jquery@3.7.1/dist/jquery.min.js",
        "bootstrap@4.3.1/dist/css/bootstrap.min.css",  # used, but not fetched here
    ):
        assert webassets.asset_file(refused) is None, refused


def _tarball(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_fetch_unpacks_only_a_tarball_that_matches_its_pin_and_only_the_files_used(tmp_path):
    data = _tarball(
        {
            "package/dist/app.js": b"app",
            "package/dist/other.js": b"other",
            "package/../../escape.js": b"outside",
            "package/package.json": b"{}",
        }
    )
    registry = tmp_path / "registry"
    (registry / "app" / "-").mkdir(parents=True)
    (registry / "app" / "-" / "app-1.0.0.tgz").write_bytes(data)
    pin = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    package = webassets.NpmPackage("app", "1.0.0", pin, ("dist/app.js",))
    [folder] = webassets.fetch(tmp_path / "web", registry.as_uri(), (package,))
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        ".integrity",
        "dist/app.js",
    ]
    assert not (tmp_path / "escape.js").exists()
    tampered = webassets.NpmPackage("app", "1.0.0", "sha512-" + base64.b64encode(b"x" * 64).decode(), ("dist/app.js",))
    with pytest.raises(ConfigError, match="does not match the pinned"):
        webassets.fetch(tmp_path / "other", registry.as_uri(), (tampered,))
    assert not (tmp_path / "other" / "app@1.0.0" / "dist" / "app.js").exists()


def test_the_gx_logo_comes_from_the_installed_package_not_its_public_bucket():
    assert webassets.GX_IMAGES_URL in gx_template_text()  # where GX's navigation bar takes its logo
    logo = f"{webassets.GX_IMAGES_URL}logo-long.png?d=20250402T000000Z"
    page = f'<a href="#"><img class="NO-CACHE" src="{logo}" alt="GX"></a>'
    assert webassets.external_assets(page) == [logo]
    offline = webassets.offline_html(page, "/preference")
    assert webassets.external_assets(offline) == []
    assert 'src="/preference/assets/great_expectations/images/logo-long.png"' in offline
    served = webassets.asset_file("great_expectations/images/logo-long.png")
    assert served is not None and served.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert webassets.asset_file("great_expectations/images/../../__init__.py") is None
    assert webassets.asset_file("great_expectations/images/missing.png") is None
