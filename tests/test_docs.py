"""The user documentation (README.md, docs/*.md) stays true to the repository: every relative link reaches an
existing file (and heading, for `#anchor` links, by GitHub's slug rules), and every module, script, console
command and `--config` name it tells the reader to run exists."""
import importlib.util
import re
import tomllib
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)[ \t#]*$", re.M)
MODULE = re.compile(r"\bpython(?:3(?:\.\d+)?)?\s+-m\s+([A-Za-z_][\w.]*)")
SCRIPT = re.compile(r"\b(?:python(?:3(?:\.\d+)?)?|bash)\s+((?:[\w.-]+/)*[\w.-]+\.(?:py|sh))\b")
COMMAND = re.compile(r"(?<![\w-])vdsr-[a-z][a-z-]*[a-z]")
CONFIG = re.compile(r"--config[ =]([\w./-]+)")


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: its rendered text lower-cased, every character other than
    a letter, digit, space, hyphen or underscore dropped, and spaces made hyphens."""
    text = CODE_SPAN.sub(r"\2", heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link's text stays, its target goes
    text = re.sub(r"[*_]{1,3}(\S(?:.*?\S)?)[*_]{1,3}", r"\1", text)  # emphasis markers
    kept = "".join(c for c in text.lower() if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every heading anchor of a Markdown text; a repeated slug gets -1, -2, … as on GitHub."""
    seen: dict[str, int] = {}
    result = set()
    for heading in HEADING.findall(FENCE.sub("", markdown)):
        slug = github_slug(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def broken_links(document: Path) -> list[str]:
    """The relative links of `document` whose file or heading does not exist, as 'target: why'."""
    prose = CODE_SPAN.sub("", FENCE.sub("", document.read_text(encoding="utf-8")))
    problems = []
    for target in LINK.findall(prose):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        path = (document.parent / path_part).resolve() if path_part else document
        if not path.exists():
            problems.append(f"{target}: no file {path}")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path.read_text(encoding="utf-8")):
            problems.append(f"{target}: no heading #{anchor} in {path.name}")
    return problems


def all_text() -> str:
    return "\n".join(d.read_text(encoding="utf-8") for d in DOCUMENTS)


def test_documents_exist():
    assert (ROOT / "README.md").exists()
    names = {d.name for d in DOCUMENTS}
    for topic in ("evaluation", "training", "video", "accelerators", "performance", "weights", "development"):
        assert f"{topic}.md" in names


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda d: d.relative_to(ROOT).as_posix())
def test_relative_links_resolve(document):
    assert broken_links(document) == []


def test_readme_links_every_topic_document():
    readme = CODE_SPAN.sub("", FENCE.sub("", (ROOT / "README.md").read_text(encoding="utf-8")))
    linked = {t.partition("#")[0] for t in LINK.findall(readme)}
    for document in DOCUMENTS[1:]:
        assert f"docs/{document.name}" in linked


def test_github_slugs():
    assert github_slug("Data at scale") == "data-at-scale"
    assert github_slug("`pool` mode") == "pool-mode"
    assert github_slug("Pretrained weights: convert, evaluate, upscale") == "pretrained-weights-convert-evaluate-upscale"
    assert github_slug("Accelerators: Colab TPU, GPUs, several hosts") == "accelerators-colab-tpu-gpus-several-hosts"
    assert github_slug("A run that waits for a peer still stops") == "a-run-that-waits-for-a-peer-still-stops"
    assert github_slug("Video **and** [animations](x.md)") == "video-and-animations"
    assert github_slug("x234_long — 11.6×") == "x234_long--116"
    assert anchors("# A\n```\n# not a heading\n```\n## A\n### B\n") == {"a", "a-1", "b"}


def test_a_broken_link_or_anchor_is_found(tmp_path):
    (tmp_path / "other.md").write_text("# Real heading\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#real-heading) [gone](missing.md) [bad anchor](other.md#nowhere) [web](https://x.org/a)\n"
        "`[code](not-a-link.md)`\n```\n[fenced](also-not.md)\n```\n[self](#page)\n# Page\n",
        encoding="utf-8",
    )
    problems = broken_links(page)
    assert len(problems) == 2
    assert problems[0].startswith("missing.md: no file")
    assert problems[1] == "other.md#nowhere: no heading #nowhere in other.md"


def test_python_modules_exist(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))  # benchmarks.* is run from the repository root
    modules = set(MODULE.findall(all_text()))
    assert {"vdsr_jax.train", "vdsr_jax.upscale_files", "pytest"} <= modules
    missing = sorted(m for m in modules if importlib.util.find_spec(m) is None)
    assert missing == []


def test_scripts_exist():
    scripts = set(SCRIPT.findall(all_text()))
    assert "benchmarks/gpu_run.sh" in scripts
    assert sorted(s for s in scripts if not (ROOT / s).is_file()) == []


def test_console_commands_are_declared():
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"])
    named = set(COMMAND.findall(all_text()))
    assert {"vdsr-train", "vdsr-evaluate", "vdsr-upscale", "vdsr-convert"} <= named
    assert sorted(named - declared) == []


def test_config_names_exist():
    installed = {p.stem for p in (ROOT / "vdsr_jax" / "configs").glob("*.py") if p.stem != "__init__"}
    used = set()
    for value in CONFIG.findall(all_text()):
        if value.isupper():  # a placeholder such as --config NAME
            continue
        # a path ending in configs/<name>.py resolves to the installed config of that name
        match = re.fullmatch(r"(?:.*/)?configs/(\w+)\.py|(\w+)", value)
        assert match, f"--config {value}: neither an installed name nor configs/<name>.py"
        used.add(match.group(1) or match.group(2))
    assert {"demo", "x234", "div2k"} <= used
    assert sorted(used - installed) == []
