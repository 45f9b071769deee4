"""The registrar's image as the test world builds it (devcluster/image.py): on both slaves, what
deploy/marathon.json and Marathon rely on (entry point, SIGTERM, non-root), nothing to build with
left inside, exactly the locked dependencies, and small.

Everything runs with `--network none`: the image must not need the network to start.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from typing import Any

import pytest
from packaging.markers import Marker

from devcluster.image import KEY_LABEL, NAME, ROOT, VERSION_LABEL, ensure_image, project_version
from devcluster.topology import SLAVES

pytestmark = pytest.mark.world

ENGINES = [s.docker_local_url for s in SLAVES]
SIZE_LIMIT = 150_000_000  # bytes, as `docker images` counts MB


@pytest.fixture(scope="module")
def image(world: None) -> str:
    return ensure_image(ENGINES)


def docker(engine: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", "-H", engine, *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


def inspect(engine: str, ref: str) -> dict[str, Any]:
    result = docker(engine, "image", "inspect", ref)
    assert result.returncode == 0, result.stderr
    found: dict[str, Any] = json.loads(result.stdout)[0]
    return found


def run(engine: str, image: str, *args: str, entrypoint: str | None = None) -> subprocess.CompletedProcess[str]:
    extra = ["--entrypoint", entrypoint] if entrypoint else []
    return docker(engine, "run", "--rm", "--network", "none", *extra, image, *args)


def test_the_same_image_is_on_both_slaves_tagged_with_the_version(image: str) -> None:
    version = project_version()
    assert image == f"{NAME}:{version}"
    ids = {inspect(e, image)["Id"] for e in ENGINES} | {inspect(e, f"{NAME}:latest")["Id"] for e in ENGINES}
    assert len(ids) == 1, ids
    labels = inspect(ENGINES[0], image)["Config"]["Labels"]
    assert labels[VERSION_LABEL] == version and labels[KEY_LABEL]


def test_a_second_call_finds_the_image_current_and_builds_nothing(image: str) -> None:
    before = {e: inspect(e, image)["Id"] for e in ENGINES}
    started = time.monotonic()
    assert ensure_image(ENGINES) == image
    assert time.monotonic() - started < 10
    assert {e: inspect(e, image)["Id"] for e in ENGINES} == before


def test_marathon_runs_it_as_non_root_and_stops_it_with_sigterm(image: str) -> None:
    config = inspect(ENGINES[0], image)["Config"]
    assert config["Entrypoint"] == ["marathon-consul-registrar"] and config["Cmd"] == ["serve"]
    assert config["StopSignal"] == "SIGTERM"
    assert config["User"] and config["User"].split(":")[0] not in ("0", "root")
    for engine in ENGINES:
        ids = run(engine, image, "-c", "id -u; id -g", entrypoint="sh")
        assert ids.returncode == 0, ids.stderr
        assert [int(n) for n in ids.stdout.split()] == [10001, 10001]


def test_the_entry_point_answers_help_without_network(image: str) -> None:
    for engine in ENGINES:
        result = run(engine, image, "--help")
        assert result.returncode == 0, result.stderr
        assert "serve" in result.stdout and "sync" in result.stdout


CHECK_CONTENTS = """
import importlib.metadata, importlib.util, json, os, re, shutil
print(json.dumps({
    "tools": sorted(t for t in ("gcc", "cc", "c++", "make", "pip", "pip3", "apt-get", "mmdebstrap")
                    if shutil.which(t)),
    "modules": sorted(m for m in ("pip", "setuptools", "wheel") if importlib.util.find_spec(m)),
    "build_dir": os.path.exists("/build"),
    "dists": sorted(f"{re.sub(r'[-_.]+', '-', d.metadata['Name']).lower()}=={d.version}"
                    for d in importlib.metadata.distributions()),
}))
"""


def test_nothing_to_build_or_install_with_is_left_and_only_the_lock_is_installed(image: str) -> None:
    result = run(ENGINES[0], image, "-c", CHECK_CONTENTS, entrypoint="python3")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["tools"] == [] and found["modules"] == [] and not found["build_dir"], found
    assert set(found["dists"]) == locked_pins() | {f"marathon-consul-registrar=={project_version()}"}


def locked_pins() -> set[str]:
    """`name==version` of every lock entry that applies here (an entry whose environment marker is
    false, such as a backport for older Pythons, is not installed)."""
    pins = set()
    pattern = r"^([A-Za-z0-9._-]+)==([^\s\\;]+)[ \t]*(?:;([^\\#\n]*))?"
    for name, version, marker in re.findall(pattern, (ROOT / "requirements.lock").read_text(), re.MULTILINE):
        if not marker.strip() or Marker(marker.strip()).evaluate():
            pins.add(f"{re.sub(r'[-_.]+', '-', name).lower()}=={version}")
    return pins


def test_the_image_is_at_most_150_mb(image: str) -> None:
    size = inspect(ENGINES[0], image)["Size"]
    assert size <= SIZE_LIMIT, f"{size / 1e6:.1f} MB"
