"""What the image build treats as its inputs (devcluster/image.py): which apt sources the Debian
base comes from, and which edits make the registrar's image stale. Getting either wrong means a
base from the wrong repository or a test world running yesterday's registrar."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from devcluster.image import ROOT, debian_sources, image_key


def test_the_base_comes_from_the_configured_debian_mirror_only(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main contrib\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n\n"
        "Types: deb-src\nURIs: http://mirror.example/debian\nSuites: bookworm\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: trixie\nComponents: main\n")
    # vendors' repositories on the same machine are not Debian
    (tmp_path / "sources.list.d" / "vendor.list").write_text(
        "deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n"
        "deb [signed-by=/usr/share/keyrings/x.gpg] https://deb.nodesource.com/node_20.x nodistro main\n"
        "deb https://repo.vendor.example/apt bookworm main\n"
        "deb [signed-by=/usr/share/keyrings/vendor.gpg] https://vendor.example/debian bookworm main\n")
    (tmp_path / "sources.list").write_text("# deb http://old.example/debian bookworm main\n"
                                           "deb [arch=amd64] http://other.example/debian bookworm main non-free\n")
    assert debian_sources("bookworm", tmp_path) == [
        "deb http://other.example/debian bookworm main",
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian bookworm main",
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian "
        "bookworm-updates main",
        "deb http://mirror.example/debian-security bookworm-security main",
    ]


def test_no_debian_source_is_an_error_that_says_so(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text("deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n")
    with pytest.raises(SystemExit, match="no Debian 'bookworm main' source"):
        debian_sources("bookworm", tmp_path)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the files the key reads, to edit freely."""
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "service", tmp_path / "service", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "requirements.lock").write_text("aiohttp==3.9.5 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    (tmp_path / "tests").mkdir()
    return tmp_path


@pytest.mark.parametrize("edit", ["Dockerfile", ".dockerignore", "pyproject.toml", "requirements.lock",
                                  "service/metrics.py", "service/new_module.py"])
def test_an_edit_to_what_the_image_contains_changes_the_key(tree: Path, edit: str) -> None:
    before = image_key(tree, tree / "requirements.lock", "mcr-base:bookworm-1")
    with open(tree / edit, "a") as f:
        f.write("\n# edited\n")
    assert image_key(tree, tree / "requirements.lock", "mcr-base:bookworm-1") != before


def test_docs_tests_caches_and_the_base_decide_as_they_should(tree: Path) -> None:
    lock = tree / "requirements.lock"
    before = image_key(tree, lock, "mcr-base:bookworm-1")
    (tree / "README.md").write_text("only the wheel's long description\n")
    (tree / "tests" / "test_x.py").write_text("")
    (tree / "service" / "__pycache__").mkdir(exist_ok=True)
    (tree / "service" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    assert image_key(tree, lock, "mcr-base:bookworm-1") == before
    assert image_key(tree, lock, "python:3.11-slim") != before
