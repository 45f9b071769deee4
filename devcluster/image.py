"""The registrar's Docker image, built on this machine with no registry: `ensure_image()` and
`python -m devcluster.image build`.

Why it is built this way:
- No registry is reachable, so the base image is made from Debian's own packages: `mmdebstrap`
  from the machine's configured Debian mirror (the `essential` variant plus python3,
  ca-certificates and passwd: no apt, no compiler), then `docker import`. Its tarball is cached in
  the test world's state directory under a key of everything that shapes it (sources, packages,
  options), so it is rebuilt only when one of those changes (or with `--rebuild-base`, to pick up
  Debian's security updates).
- Nothing is fetched during `docker build --network none`: the wheels of `requirements.lock`
  (and the project's own) are built on the host into the context, and pip, run inside the build
  from Debian's pip wheel, checks every one against the lock's hashes.
- The Dockerfile keeps its `BASE` argument; with a registry `--base python:3.11-slim` builds the
  same image on the official base.
- `python -m devcluster down` deletes the slaves' data roots and with them every image. The built
  image is therefore also kept as a `docker save` tarball under the same key (hash of the
  Dockerfile, the lock, `service/`, `pyproject.toml` and the base), and a fresh world gets it back
  with `docker load` in seconds instead of a rebuild.
- Several test processes may ask at once: one file lock serialises them, the others find the image.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from devcluster.topology import SLAVES, STATE_DIR

ROOT = Path(__file__).resolve().parent.parent
IMAGE_DIR = STATE_DIR / "image"
NAME = "marathon-consul-registrar"
BASE_REPO = "mcr-base"
KEY_LABEL = "org.marathon-consul-registrar.build-key"
VERSION_LABEL = "org.opencontainers.image.version"
# What the registrar needs from Debian, and nothing else: the interpreter (full stdlib: asyncio,
# ssl), the CA bundle for TLS to Consul/Marathon/Docker, and useradd for the image's user.
BASE_PACKAGES = ("python3", "ca-certificates", "passwd")
# Documentation, man pages and translations are of no use in a container and are a fifth of its size.
DPKG_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*",
                 "/usr/share/lintian/*")
DPKG_INCLUDES = ("/usr/share/doc/*/copyright",)  # the licences stay
# The host's Debian packages the build uses: Debian package -> a path it installs.
HOST_PACKAGES = {"mmdebstrap": Path("/usr/bin/mmdebstrap"), "python3-pip-whl": Path("/usr/share/python-wheels")}
PIP_WHEELS = Path("/usr/share/python-wheels")
# The registrar's own inputs: what changes the image's content. README.md is left out on purpose:
# it only reaches the wheel's metadata, and a documentation edit should not cost a rebuild.
SOURCE_INPUTS = ("Dockerfile", ".dockerignore", "pyproject.toml", "service")

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def _digest(parts: Sequence[tuple[str, bytes]]) -> str:
    h = hashlib.sha256()
    for name, data in parts:
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()


def project_version(root: Path = ROOT) -> str:
    with open(root / "pyproject.toml", "rb") as f:
        return str(tomllib.load(f)["project"]["version"])


# ---- the Debian base ------------------------------------------------------------------------------


def _os_release(path: Path = Path("/etc/os-release")) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k: v.strip().strip('"') for k, v in pairs}


def debian_sources(codename: str, apt_dir: Path = Path("/etc/apt")) -> list[str]:
    """The machine's own Debian mirror lines for `codename` (main, -updates, -security), one-line
    format with their keyring; other repositories configured there (vendors' apt repos) are left out.

    Using the configured mirror, not a hard-coded one, is what makes the build work behind a
    machine's proxy or local mirror. A Debian archive is recognised by a `debian` or
    `debian-security` path segment (deb.debian.org, snapshot.debian.org, local mirrors) and, when a
    keyring is named, Debian's own: a vendor repository that calls its suite "bookworm" is not Debian.
    """
    wanted = {codename, f"{codename}-updates", f"{codename}-security"}
    entries: list[tuple[str, str, str]] = []  # (uri, suite, signed-by)
    files = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*"))]
    for f in files:
        if not f.is_file():
            continue
        text = f.read_text()
        if f.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    if line.startswith("#") or ":" not in line or line[0].isspace():
                        continue
                    k, v = line.split(":", 1)
                    fields[k.strip().lower()] = v.strip()
                if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes") == "no":
                    continue
                if "main" not in fields.get("components", "").split():
                    continue
                entries += [(uri, suite, fields.get("signed-by", ""))
                            for uri in fields.get("uris", "").split() for suite in fields.get("suites", "").split()]
        elif f.name == "sources.list" or f.suffix == ".list":
            for line in text.splitlines():
                m = re.match(r"\s*deb\s+(?:\[([^]]*)\]\s+)?(\S+)\s+(\S+)\s+(.*)", line)
                if not m or "main" not in m.group(4).split():
                    continue
                opts = dict(o.split("=", 1) for o in (m.group(1) or "").split() if "=" in o)
                entries.append((m.group(2), m.group(3), opts.get("signed-by", "")))
    lines = []
    for uri, suite, signed_by in entries:
        debian = bool({"debian", "debian-security"} & set(uri.split("/"))) and \
            (not signed_by or "debian-archive" in signed_by)
        if debian and suite in wanted:
            keyring = f"[signed-by={signed_by}] " if signed_by.startswith("/") else ""
            line = f"deb {keyring}{uri} {suite} main"
            if line not in lines:
                lines.append(line)
    if not any(line.endswith(f" {codename} main") for line in lines):
        raise SystemExit(f"devcluster.image: no Debian '{codename} main' source in {apt_dir}; "
                         "the base image is made from the machine's configured Debian mirror")
    return lines


@dataclass(frozen=True)
class BaseRecipe:
    """Everything that shapes the base tarball; its hash names the cache entry and the tag."""

    suite: str
    arch: str
    sources: tuple[str, ...]
    variant: str = "essential"
    packages: tuple[str, ...] = BASE_PACKAGES
    dpkg_excludes: tuple[str, ...] = DPKG_EXCLUDES
    dpkg_includes: tuple[str, ...] = DPKG_INCLUDES
    # `docker import` gives an image no configuration at all; Debian's own images set PATH, and a
    # Dockerfile's `ENV PATH=...:$PATH` must find it there, whichever builder expands it.
    import_changes: tuple[str, ...] = ("ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)

    @classmethod
    def of_this_machine(cls) -> BaseRecipe:
        codename = _os_release().get("VERSION_CODENAME", "bookworm")
        arch = subprocess.run(["dpkg", "--print-architecture"], check=True, capture_output=True,
                              text=True).stdout.strip()
        return cls(suite=codename, arch=arch, sources=tuple(debian_sources(codename)))

    @property
    def tag(self) -> str:
        key = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]
        return f"{BASE_REPO}:{self.suite}-{key}"

    def mmdebstrap_argv(self, out: Path) -> list[str]:
        return ["mmdebstrap", "--quiet", f"--variant={self.variant}", f"--architectures={self.arch}",
                f"--include={','.join(self.packages)}",
                # merged /usr by symlinks, as Debian 12 has it, without the usrmerge package (and its perl)
                "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
                *(f"--dpkgopt=path-exclude={p}" for p in self.dpkg_excludes),
                *(f"--dpkgopt=path-include={p}" for p in self.dpkg_includes),
                self.suite, str(out), *self.sources]


def ensure_host_packages(packages: Sequence[str], log: Log = _quiet) -> None:
    """Install those of the Debian packages the build runs that are missing (quiet when all are there)."""
    need = [pkg for pkg in packages if not HOST_PACKAGES[pkg].exists()]
    if not need:
        return
    log(f"apt-get install {' '.join(need)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *need], check=True, env=env,
                   stdout=subprocess.DEVNULL)


def build_base_tarball(recipe: BaseRecipe, out: Path, log: Log = _quiet) -> None:
    """mmdebstrap the base into `out` (written under a temporary name, renamed when complete)."""
    ensure_host_packages(["mmdebstrap"], log)
    tmp = out.with_suffix(".tmp.tar")  # mmdebstrap picks the output format from the extension
    log(f"mmdebstrap {recipe.suite} {recipe.variant} + {', '.join(recipe.packages)} -> {out}")
    transcript = out.with_suffix(".log")
    with open(transcript, "wb") as f:
        proc = subprocess.run(recipe.mmdebstrap_argv(tmp), stdout=f, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise SystemExit(f"devcluster.image: mmdebstrap failed ({proc.returncode}):\n"
                         + transcript.read_text(errors="replace")[-3000:])
    tmp.rename(out)


def ensure_base(engine: str, *, rebuild: bool = False, log: Log = _quiet) -> str:
    """The Debian base on `engine`, from the cached tarball or a fresh mmdebstrap; returns its tag."""
    recipe = BaseRecipe.of_this_machine()
    tag = recipe.tag
    tarball = IMAGE_DIR / f"{tag.replace(':', '-')}.tar"
    if rebuild:
        tarball.unlink(missing_ok=True)
    elif _image_id(engine, tag):
        return tag
    if not tarball.exists():
        for old in IMAGE_DIR.glob(f"{BASE_REPO}-*"):
            old.unlink()
        build_base_tarball(recipe, tarball, log)
    log(f"docker import {tarball.name} as {tag} on {engine}")
    _docker(engine, "import", *(f"--change={c}" for c in recipe.import_changes), str(tarball), tag)
    return tag


# ---- the registrar image --------------------------------------------------------------------------


def _docker(engine: str, *args: str, stdin: int | None = None, stdout: int | None = subprocess.DEVNULL) -> str:
    # The classic builder is in every docker CLI; BuildKit needs the buildx plugin, which Debian's
    # docker.io does not ship. The Dockerfile needs nothing BuildKit-only.
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    proc = subprocess.run(["docker", "-H", engine, *args], stdin=stdin, stdout=stdout, stderr=subprocess.PIPE,
                          text=True, check=False, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"docker -H {engine} {' '.join(args)}: {proc.stderr.strip()[-3000:]}")
    return proc.stdout or ""


def _image_id(engine: str, ref: str) -> str | None:
    proc = subprocess.run(["docker", "-H", engine, "image", "inspect", "--format", "{{.Id}}", ref],
                          capture_output=True, text=True, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def image_labels(engine: str, ref: str) -> dict[str, str]:
    """The image's labels on `engine` ({} when it is not there)."""
    proc = subprocess.run(["docker", "-H", engine, "image", "inspect", "--format", "{{json .Config.Labels}}", ref],
                          capture_output=True, text=True, check=False)
    return (json.loads(proc.stdout) or {}) if proc.returncode == 0 else {}


def _source_files(root: Path) -> Iterator[Path]:
    for name in SOURCE_INPUTS:
        path = root / name
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        else:
            yield path


def pip_wheel() -> Path:
    """Debian's pip wheel (python3-pip-whl): the installer the build runs, never installed."""
    found = sorted(PIP_WHEELS.glob("pip-*-py3-none-any.whl"))
    if not found:
        raise SystemExit(f"devcluster.image: no pip wheel in {PIP_WHEELS} (apt-get install python3-pip-whl)")
    return found[-1]


def image_key(root: Path, lock: Path, base: str) -> str:
    """Hash of what the image is made of: Dockerfile, lock, service/, pyproject, base, installer."""
    parts = [(str(p.relative_to(root)), p.read_bytes()) for p in _source_files(root)]
    parts += [("requirements.lock", lock.read_bytes()), ("base", base.encode()), ("pip", pip_wheel().name.encode())]
    return _digest(parts)


def _pip(*args: str) -> None:
    """Run the host's pip (with the machine's pip configuration: its index, its proxy); its chatter
    is shown only when it fails."""
    proc = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"devcluster.image: pip {' '.join(args)} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")


def lock_wheels(lock: Path, log: Log = _quiet) -> Path:
    """The wheels of `lock`, built (or downloaded) once per lock content and kept."""
    key = hashlib.sha256(lock.read_bytes()).hexdigest()[:16]
    done = IMAGE_DIR / f"wheels-{key}"
    if done.is_dir():
        return done
    for old in IMAGE_DIR.glob("wheels-*"):
        shutil.rmtree(old)
    tmp = Path(tempfile.mkdtemp(prefix="wheels-", dir=IMAGE_DIR))
    log(f"pip wheel --require-hashes -r {lock}")
    _pip("wheel", "--require-hashes", "--no-deps", "-r", str(lock), "-w", str(tmp))
    tmp.rename(done)
    return done


def project_wheel(root: Path, out: Path, log: Log = _quiet) -> Path:
    """The project's wheel, built from a copy of pyproject and service/: a build in the checkout
    would leave setuptools' build/ and *.egg-info there (and would race another worktree's build)."""
    with tempfile.TemporaryDirectory(dir=IMAGE_DIR) as src:
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(root / name, src)
        shutil.copytree(root / "service", Path(src) / "service", ignore=shutil.ignore_patterns("__pycache__"))
        log("pip wheel --no-deps . (service/ only)")
        _pip("wheel", "--no-deps", "-w", str(out), src)
    [wheel] = out.glob("marathon_consul_registrar-*.whl")
    return wheel


def build_context(root: Path, lock: Path, ctx: Path, log: Log = _quiet) -> None:
    """Lay out the build context the Dockerfile expects (see its header)."""
    (ctx / "wheels").mkdir(parents=True)
    (ctx / "pip").mkdir()
    for name in ("Dockerfile", ".dockerignore"):
        shutil.copy2(root / name, ctx / name)
    shutil.copy2(lock, ctx / "requirements.lock")
    shutil.copy2(pip_wheel(), ctx / "pip")
    for wheel in lock_wheels(lock, log).glob("*.whl"):
        shutil.copy2(wheel, ctx / "wheels")
    project_wheel(root, ctx / "wheels", log)


def build(engine: str, *, root: Path, lock: Path, base: str, key: str, version: str, log: Log = _quiet) -> None:
    """`docker build --network none` on `engine`, tagged `:<version>` and `:latest`."""
    with tempfile.TemporaryDirectory(prefix="context-", dir=IMAGE_DIR) as tmp:
        ctx = Path(tmp)
        build_context(root, lock, ctx, log)
        log(f"docker build --network none --build-arg BASE={base} on {engine}")
        _docker(engine, "build", "--network", "none", "--build-arg", f"BASE={base}",
                "--build-arg", f"VERSION={version}", "--label", f"{KEY_LABEL}={key}",
                "-t", f"{NAME}:{version}", "-t", f"{NAME}:latest", str(ctx))


@contextmanager
def _exclusive() -> Iterator[None]:
    IMAGE_DIR.mkdir(parents=True, exist_ok=True)
    with open(IMAGE_DIR / "lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_image(engines: Sequence[str] | None = None, *, base: str | None = None, lock: Path | None = None,
                 root: Path = ROOT, rebuild: bool = False, rebuild_base: bool = False, log: Log = _quiet) -> str:
    """Make `marathon-consul-registrar:<version>` (and `:latest`) current on every engine; return the tag.

    `engines` default to the test world's slaves; the image is built on the first and `docker load`ed
    into the others. `base` is an image the first engine has or can pull (e.g. python:3.11-slim);
    without it the Debian base is made here. An engine whose image carries the current key is left
    alone, so the second call costs a few `docker image inspect`s.
    """
    engines = list(engines or [s.docker_local_url for s in SLAVES])
    lock = lock or root / "requirements.lock"
    if not lock.is_file():
        raise SystemExit(f"devcluster.image: {lock} is missing (scripts/lock writes it)")
    version = project_version(root)
    tag = f"{NAME}:{version}"
    with _exclusive():
        ensure_host_packages(["python3-pip-whl"], log)  # its wheel's version is part of the key
        base_ref = base or BaseRecipe.of_this_machine().tag
        key = image_key(root, lock, base_ref)
        saved = IMAGE_DIR / f"{NAME}-{key[:16]}.tar"
        if rebuild:
            saved.unlink(missing_ok=True)
        missing = [e for e in engines if rebuild or image_labels(e, tag).get(KEY_LABEL) != key]
        if not missing:
            return tag
        replaced = {e: _image_id(e, tag) for e in missing}
        if not saved.exists():
            builder = engines[0]
            if base is None:
                base_ref = ensure_base(builder, rebuild=rebuild_base, log=log)
            build(builder, root=root, lock=lock, base=base_ref, key=key, version=version, log=log)
            for old in IMAGE_DIR.glob(f"{NAME}-*.tar"):
                old.unlink()
            tmp = saved.with_name(saved.name + ".tmp")
            _docker(builder, "save", "-o", str(tmp), tag, f"{NAME}:latest")
            tmp.rename(saved)
            missing = [e for e in missing if e != builder]
        for engine in missing:
            log(f"docker load {saved.name} on {engine}")
            with open(saved, "rb") as f:
                _docker(engine, "load", "-q", stdin=f.fileno())
        for engine, old_id in replaced.items():
            _remove_if_untagged(engine, old_id, log)
    return tag


def _remove_if_untagged(engine: str, image_id: str | None, log: Log) -> None:
    """The image a rebuild replaced, once nothing names it any more: rebuilds must not pile up
    100 MB images on the slaves. One still tagged otherwise, or used by a container, stays."""
    if not image_id:
        return
    proc = subprocess.run(["docker", "-H", engine, "image", "inspect", "--format", "{{len .RepoTags}}", image_id],
                          capture_output=True, text=True, check=False)
    if proc.returncode == 0 and proc.stdout.strip() == "0":
        removed = subprocess.run(["docker", "-H", engine, "image", "rm", image_id], capture_output=True, check=False)
        if removed.returncode == 0:
            log(f"removed the replaced image {image_id[7:19]} on {engine}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devcluster.image", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build", help="make the image current on the engines (build, or load the cached one)")
    p.add_argument("--engine", action="append", dest="engines", metavar="URL",
                   help="Docker engine (repeatable); default: the test world's slaves, built on the first")
    p.add_argument("--base", help="base image instead of the Debian one made here, e.g. python:3.11-slim")
    p.add_argument("--lock", type=Path, help="runtime lock file (default: requirements.lock at the repo root)")
    p.add_argument("--rebuild", action="store_true", help="build even if the cached image is current")
    p.add_argument("--rebuild-base", action="store_true",
                   help="mmdebstrap the base again (to pick up Debian's updates), then rebuild the image")
    args = parser.parse_args(argv)
    started = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {msg}", file=sys.stderr, flush=True)

    tag = ensure_image(args.engines, base=args.base, lock=args.lock, rebuild=args.rebuild or args.rebuild_base,
                       rebuild_base=args.rebuild_base, log=log)
    engine = (args.engines or [SLAVES[0].docker_local_url])[0]
    size = json.loads(_docker(engine, "image", "inspect", "--format", "{{json .Size}}", tag, stdout=subprocess.PIPE))
    print(f"{tag}: {size / 1e6:.1f} MB, ready in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
