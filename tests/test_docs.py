"""Every citation of the docs resolves, and no code cites notes that live outside the repository.

A citation is `docs/<file>.md`, optionally followed by sections: `docs/theory.md §5`, `docs/theory.md §5 (a)`, or a
list such as `docs/sdm.md §4 (c), §4 (d)`. It resolves when the file exists under docs/ and each section names
exactly one heading there: `§5` the heading that starts `§5 ` (not its subsections), `§5 (a)` the heading that
starts `§5 (a)`. Citations are collected from the Python and Markdown files of the packages, the tests, the
benchmarks, the docs themselves and the top-level README.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
THIS = Path(__file__).resolve()
SOURCE_DIRS = ("sdm_verify", "analytic", "tests", "benchmarks")
SUFFIXES = (".py", ".md")

_SECTION = r"§\s*(\d+)(?:\s*\(([a-z])\))?"
_SECTION_NC = r"§\s*\d+(?:\s*\([a-z]\))?"
#: separators allowed between a file and its sections, or between sections: spaces, line breaks with a comment's
#: '#', and list words ("docs/sdm.md §4 (c), §4 (d)", "§7 (c) and §7 (d)")
_SEP = r"(?:[\s#]|,|;|\band\b|\bor\b)*"
CITATION = re.compile(rf"docs/(?P<file>[\w.-]+\.md)(?P<sections>(?:{_SEP}{_SECTION_NC})*)")
SECTION = re.compile(_SECTION)
HEADING = re.compile(r"^#{1,6}\s+§(\d+)(?:\s+\(([a-z])\))?(?=\s|$)")

#: names of the developers' reading notes (kept outside the repository), and paths to them
_NOTES = r"theory|sdm_spec|real_models|anchors|field_notes|DESIGN"
FORBIDDEN = [
    (re.compile(rf"(?<!docs/)\b(?:{_NOTES})\.md\b"), "a notes file without the docs/ prefix"),
    (re.compile(r"\bsdm_spec\b"), "the SDM spec notes (now docs/sdm.md)"),
    (re.compile(r"\b[Ss]pec\s+§\s*\d"), "an abbreviated citation of the SDM spec notes (now docs/sdm.md)"),
    (re.compile(r"§\s*\d+\.\d"), "a decimal section number, the notes' style (the docs number §N (x))"),
    (re.compile(r"/work/shared|\.\./shared/"), "a path outside the repository"),
]


def source_files(root: Path = ROOT, dirs=SOURCE_DIRS, extra=("README.md",)) -> list[Path]:
    """Python and Markdown files under `dirs` of `root`, plus the top-level files `extra` (this test excluded)."""
    out = []
    for d in dirs:
        base = root / d
        if base.is_dir():
            out += [p for p in sorted(base.rglob("*")) if p.suffix in SUFFIXES and p.is_file()
                    and "__pycache__" not in p.parts and p.resolve() != THIS]
    out += [root / name for name in extra if (root / name).is_file()]
    return out


def headings(md: Path) -> dict[tuple[int, str | None], list[str]]:
    """(number, letter or None) -> the heading lines that carry it, outside fenced code blocks."""
    found: dict[tuple[int, str | None], list[str]] = {}
    fenced = False
    for line in md.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        m = None if fenced else HEADING.match(line)
        if m:
            found.setdefault((int(m.group(1)), m.group(2)), []).append(line.strip())
    return found


def citations(path: Path) -> list[tuple[int, str, str, list[tuple[int, str | None]]]]:
    """(line, citation text, cited file, sections) for every docs citation in `path`."""
    text = path.read_text(encoding="utf-8")
    out = []
    for m in CITATION.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        secs = [(int(n), letter or None) for n, letter in SECTION.findall(m.group("sections"))]
        out.append((line, " ".join(m.group(0).split()), m.group("file"), secs))
    return out


def unresolved(files, docs: Path = DOCS, root: Path = ROOT) -> list[str]:
    """'path:line: citation: why' for each citation in `files` that does not resolve against `docs`."""
    cache: dict[str, dict | None] = {}
    problems = []
    for path in files:
        for line, cited, name, secs in citations(path):
            where = f"{path.relative_to(root)}:{line}: {cited}"
            if name not in cache:
                md = docs / name
                cache[name] = headings(md) if md.is_file() else None
            heads = cache[name]
            if heads is None:
                problems.append(f"{where}: no file docs/{name}")
                continue
            for num, letter in secs:
                label = f"§{num}" + (f" ({letter})" if letter else "")
                n = len(heads.get((num, letter), []))
                if n != 1:
                    problems.append(f"{where}: {label} names {n} headings in docs/{name} (need exactly 1)")
    return problems


def outside_citations(files, root: Path = ROOT) -> list[str]:
    """'path:line: what' for each citation of the notes outside the repository."""
    problems = []
    for path in files:
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for pattern, what in FORBIDDEN:  # the first pattern that matches a line is enough to report it
                m = pattern.search(line)
                if m:
                    problems.append(f"{path.relative_to(root)}:{i}: {m.group(0)!r} ({what})")
                    break
    return problems


# ------------------------------------------------------------------------------------------------ the repository
def test_docs_exist_with_numbered_sections():
    assert (DOCS / "README.md").is_file()
    for name in ("theory.md", "order-estimation.md", "sdm.md", "real-models.md"):
        heads = headings(DOCS / name)
        assert heads, f"docs/{name}: no numbered headings"
        dupes = {k: v for k, v in heads.items() if len(v) > 1}
        assert not dupes, f"docs/{name}: section numbers used twice: {dupes}"


def test_every_docs_citation_resolves():
    files = source_files(dirs=SOURCE_DIRS + ("docs",))
    problems = unresolved(files)
    assert not problems, "citations that do not resolve:\n" + "\n".join(problems)


def test_no_citation_of_notes_outside_the_repository():
    problems = outside_citations(source_files())
    assert not problems, (
        "cite docs/<file>.md §N instead of the developers' notes (see docs/README.md):\n" + "\n".join(problems))


# ------------------------------------------------------------------------------------------------ the resolver
@pytest.fixture
def tree(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "guide.md").write_text(
        "# Guide\n\n## §1 One\n\n### §1 (a) One, first part\n\n## §2 Two\n\n## §3 Three\n\n## §3 Three again\n\n"
        "```\n## §9 inside a fence, not a heading\n```\n", encoding="utf-8")
    return tmp_path


def test_resolver_accepts_good_citations(tree):
    src = tree / "good.py"
    src.write_text('"""See docs/guide.md §1 and docs/guide.md §1 (a), or docs/guide.md\n§2; docs/guide.md."""\n'
                   "# also docs/guide.md §2, §1 (a)\n", encoding="utf-8")
    found = citations(src)
    assert [(c[0], c[2], c[3]) for c in found] == [
        (1, "guide.md", [(1, None)]), (1, "guide.md", [(1, "a")]), (1, "guide.md", [(2, None)]),
        (2, "guide.md", []), (3, "guide.md", [(2, None), (1, "a")])]
    assert unresolved([src], docs=tree / "docs", root=tree) == []


@pytest.mark.parametrize("cited,why", [
    ("docs/guide.md §4", "names 0 headings"),           # no such section
    ("docs/guide.md §2 (b)", "names 0 headings"),       # no such subsection
    ("docs/guide.md §3", "names 2 headings"),           # ambiguous
    ("docs/guide.md §9", "names 0 headings"),           # only inside a code fence
    ("docs/missing.md §1", "no file docs/missing.md"),  # no such file
    ("docs/guide.md §1, §4", "§4 names 0 headings"),    # the second of a list
])
def test_resolver_rejects_bad_citations(tree, cited, why):
    src = tree / "bad.md"
    src.write_text(f"Read {cited} first.\n", encoding="utf-8")
    problems = unresolved([src], docs=tree / "docs", root=tree)
    assert len(problems) == 1 and why in problems[0], problems


@pytest.mark.parametrize("line,bad", [
    ("(theory.md §5 (a))", True),
    ("(docs/theory.md §5 (a))", False),
    ("spec: /work/shared/sdm_spec.md §2", True),
    ("x'' (sdm_spec §4)", True),
    ("(spec §3.3-3.4)", True),
    ("real_models.md saw ~6e-3", True),
    ("the SPEC forms of validate", False),
    ("# ------------- §3.3 initial schedule", True),
    ("# ------------- docs/sdm.md §4 (c): initial schedule", False),
])
def test_outside_citations_are_caught(tmp_path, line, bad):
    src = tmp_path / "mod.py"
    src.write_text(f"# {line}\n", encoding="utf-8")
    assert bool(outside_citations([src], root=tmp_path)) is bad
