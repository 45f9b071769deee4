"""The design text stays true where it is cheap to check: every `docs/architecture.md §N` the code
cites is a section of it, and every repository path the README and docs/*.md cite exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARCHITECTURE = ROOT / "docs" / "architecture.md"
CODE_DIRS = ("service", "devcluster", "bench", "tests", "scripts", "deploy", ".ci")
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted(ROOT.glob("*/README.md")),
        *sorted(ROOT.glob("*/*/README.md"))]
# a backticked path: a known top-level directory or a module path with a file suffix
PATH = re.compile(r"`((?:service|devcluster|bench|tests|scripts|deploy|docs|\.ci)/[\w./-]*|"
                  r"[\w-]+(?:/[\w-]+)*\.(?:py|md|sh|json|yml|yaml|lock|toml))(?:::[\w\[\]-]+)?`")
# where a path relative to something other than the root is anchored (docs name modules as
# `marathon/parse.py`, short for service/marathon/parse.py)
ANCHORS = ("", "service/", "devcluster/", "deploy/", "docs/")
# outside the repository: the reference facts (marathon.md, weave.md, ...); made by runs: bench results
OUTSIDE = ("reference/", "bench/results/")


def sections() -> set[str]:
    return set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", ARCHITECTURE.read_text(), re.M))


def test_every_architecture_section_cited_in_code_exists() -> None:
    have = sections()
    assert {"1", "5", "9"} <= have, have
    cited: dict[str, set[str]] = {}
    for d in CODE_DIRS:
        for path in (ROOT / d).rglob("*"):
            if not path.is_file() or path.suffix not in {".py", ".sh", ".md", ""} or "__pycache__" in path.parts:
                continue
            text = path.read_text(errors="replace")
            for n in re.findall(r"architecture\.md,? §\s?(\d+(?:\.\d+)?)", text):
                cited.setdefault(n, set()).add(str(path.relative_to(ROOT)))
    missing = {n: sorted(files) for n, files in cited.items() if n not in have}
    assert cited, "no citation found: the pattern is wrong"
    assert not missing, missing


def test_every_repository_path_cited_in_the_docs_exists() -> None:
    missing: list[str] = []
    checked = 0
    for doc in DOCS:
        for ref in PATH.findall(doc.read_text()):
            if ref.startswith(OUTSIDE) or any(c in ref for c in "{}*<>"):
                continue
            ref = ref.rstrip("/.")
            here = doc.parent.relative_to(ROOT).as_posix()
            anchors = (*ANCHORS, f"{here}/" if here != "." else "")
            checked += 1
            # a bare file name (the text says where it is)
            if "/" not in ref and any(any((ROOT / d).rglob(ref)) for d in CODE_DIRS):
                continue
            if not any((ROOT / f"{a}{ref}").exists() for a in anchors):
                missing.append(f"{doc.relative_to(ROOT)}: {ref}")
    assert checked > 50, checked
    assert not missing, "\n".join(missing)


def test_where_things_are_lists_every_module_of_service() -> None:
    """docs/architecture.md §9 names every module of service/ under its package: a module added
    without a line there fails here."""
    text = ARCHITECTURE.read_text()
    start = text.index("## 9. Where things are")
    block = text[start:text.index("\n## ", start + 1)]
    listed: set[str] = set()
    package = ""
    for line in block.splitlines():
        names = re.split(r"\s{2,}", line.strip())[0]  # the left column, before the description
        if not names or names.startswith(("`", "service/")):
            continue
        indent = len(line) - len(line.lstrip())
        if names.endswith("/"):
            package = names if indent == 2 else f"{package.split('/')[0]}/{names}"
            continue
        prefix = package if indent > 2 else ""
        listed |= {f"{prefix}{n.strip()}" for n in names.split(",") if n.strip().endswith(".py")}
    modules = {p.relative_to(ROOT / "service").as_posix() for p in (ROOT / "service").rglob("*.py")
               if p.name not in {"__init__.py", "__main__.py"}}
    assert modules - listed == set(), "not in §9: " + ", ".join(sorted(modules - listed))
    assert listed - modules == set(), "in §9 but not in service/: " + ", ".join(sorted(listed - modules))
