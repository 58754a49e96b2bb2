"""The documentation a newcomer reads: a short README, pages under docs/, and nothing in them that is stale.

* README.md stays short (at most 250 lines) and links every page of ``docs/``;
* every relative link and image in README.md and docs/*.md points to a file that exists (and to a heading
  that exists, for ``#anchor`` links), and every figure in docs/figures/ is shown somewhere;
* every ``clip-adapter ...`` command in a fenced ``bash`` block names a real subcommand (nested ones such
  as ``toy dataset`` or ``video base-to-novel`` included) and only options that subcommand accepts — checked
  against the CLI's own argparse parser, built in-process once;
* every ``python benchmarks/*.py`` / ``bash scripts/*.sh`` in those blocks exists.
"""

from __future__ import annotations

import argparse
import re
import shlex
import unicodedata
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_LINES = 250


def doc_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


# --- markdown parsing ------------------------------------------------------------------------------------

FENCE = re.compile(r"^(```+|~~~+)\s*([\w+-]*)")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")


def split_fences(text: str) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """(prose lines, [(language, block lines)]): fenced blocks taken out of the prose."""
    prose: list[str] = []
    blocks: list[tuple[str, list[str]]] = []
    current: list[str] | None = None
    marker = ""
    for line in text.split("\n"):
        m = FENCE.match(line.strip())
        if current is None and m:
            marker, current = m.group(1), []
            blocks.append((m.group(2).lower(), current))
        elif current is not None and line.strip().startswith(marker) and not line.strip().strip(marker[0]):
            current = None
        elif current is not None:
            current.append(line)
        else:
            prose.append(line)
    return prose, blocks


def links(path: Path) -> list[str]:
    """Link targets of a markdown file, outside code (fenced blocks and inline code spans)."""
    prose, _ = split_fences(path.read_text(encoding="utf-8"))
    found = []
    for line in prose:
        found += LINK.findall(INLINE_CODE.sub("", line))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = text.replace("`", "").replace("*", "").strip().lower()
    text = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return text.replace(" ", "-")


@lru_cache(maxsize=None)
def anchors(path: Path) -> frozenset[str]:
    prose, _ = split_fences(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    out = set()
    for line in prose:
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return frozenset(out)


def is_external(target: str) -> bool:
    return bool(re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I))  # http:, https:, mailto:, …


# --- (a) and (d): a short README that leads to every page ------------------------------------------------


def test_readme_is_short() -> None:
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines (at most {MAX_README_LINES}): move detail into docs/"


def test_readme_keeps_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    assert "## The two commands" in text
    _, blocks = split_fences(text.split("## The two commands", 1)[1])
    first = "\n".join(blocks[0][1])
    assert "bash scripts/demo.sh" in first and "bash scripts/test.sh" in first


def test_every_docs_page_is_linked_from_the_readme() -> None:
    pages = sorted(DOCS.glob("*.md"))
    assert pages, "docs/ has no pages"
    linked = {(README.parent / t.split("#", 1)[0]).resolve() for t in links(README) if not is_external(t)}
    unlinked = [rel(p) for p in pages if p.resolve() not in linked]
    assert not unlinked, f"docs pages not linked from README.md: {unlinked}"


# --- (b) links and figures ------------------------------------------------------------------------------


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    broken = []
    for target in links(path):
        if is_external(target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path.resolve()
        if not dest.is_relative_to(root.resolve()):
            broken.append(f"{target} (outside the repository)")
        elif not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.name})")
    return broken


@pytest.mark.parametrize("path", doc_files(), ids=rel)
def test_relative_links_resolve(path: Path) -> None:
    broken = broken_links(path)
    assert not broken, f"{rel(path)}: broken links: {broken}"


def test_link_checker_catches_mistakes(tmp_path: Path) -> None:
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "a.png").write_bytes(b"")
    (tmp_path / "other.md").write_text("# Other page\n\n## `auto` on it\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n![a](figures/a.png) [ok](other.md#auto-on-it) [self](#page) [web](https://example.org/x)\n"
        "`[not a link](nowhere.md)`\n\n```bash\n[nor](this.md)\n```\n"
    )
    assert broken_links(page, tmp_path) == []
    page.write_text("[gone](figures/b.png) [anchor](other.md#nope) [up](../outside.md)\n")
    assert [b.split(" ")[0] for b in broken_links(page, tmp_path)] == [
        "figures/b.png",
        "other.md#nope",
        "../outside.md",
    ]


def test_every_figure_is_shown() -> None:
    shown = set()
    for path in doc_files():
        shown |= {(path.parent / t).resolve() for t in links(path) if not is_external(t)}
    figures = [p for p in sorted((DOCS / "figures").iterdir()) if p.suffix.lower() in {".png", ".svg", ".jpg", ".gif"}]
    unshown = [rel(p) for p in figures if p.resolve() not in shown]
    assert not unshown, f"figures no page shows: {unshown}"


def test_slug_matches_github() -> None:
    assert slug("`auto` on the toy world") == "auto-on-the-toy-world"
    assert slug('How far to trust an answer: calibration, conformal sets, "none of these"') == (
        "how-far-to-trust-an-answer-calibration-conformal-sets-none-of-these"
    )
    assert slug("Fine-tuning the encoders: NegCLIP, LABCLIP, NegationCLIP") == (
        "fine-tuning-the-encoders-negclip-labclip-negationclip"
    )


# --- (c) commands in bash blocks ------------------------------------------------------------------------


def shell_commands(path: Path) -> list[list[str]]:
    """The simple commands of a file's bash blocks, as tokens: continuations joined, comments dropped,
    split at ``&&``, ``||``, ``;`` and ``|``; ``[--opt value]`` (optional parts in usage) unbracketed."""
    _, blocks = split_fences(path.read_text(encoding="utf-8"))
    commands = []
    for lang, lines in blocks:
        if lang not in ("bash", "sh", "shell", "console"):
            continue
        for line in "\n".join(lines).replace("\\\n", " ").split("\n"):
            lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
            lexer.whitespace_split = True
            lexer.commenters = "#"
            current: list[str] = []
            for token in lexer:
                if token and set(token) <= set(";&|"):
                    commands.append(current)
                    current = []
                else:
                    current.append(token.strip("[]") if token.startswith("[") or token.endswith("]") else token)
            commands.append(current)
    return [c for c in commands if c]


@lru_cache(maxsize=1)
def cli_parser() -> argparse.ArgumentParser:
    from clip_adapter.cli import build_parser

    return build_parser()


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


def check_cli_command(tokens: list[str]) -> list[str]:
    """Problems with one ``clip-adapter ...`` command (its tokens after the program name)."""
    parser, words = cli_parser(), ["clip-adapter"]
    for i, token in enumerate(tokens):
        subs = subparsers(parser)
        if token.startswith("-"):
            if token in ("-h", "--help"):
                return []
            name = token.split("=", 1)[0]
            if name.startswith("--") and name not in options(parser):
                return [f"`{' '.join(words)}` has no option {name}"]
        elif subs and not any(t.startswith("-") for t in tokens[:i]):
            if token not in subs:
                return [f"`{' '.join(words)}` has no subcommand {token!r} (known: {', '.join(sorted(subs))})"]
            parser = subs[token]
            words.append(token)
    if subparsers(parser):
        return [f"`{' '.join(words)}` needs a subcommand"]
    return []


def cli_commands(path: Path) -> list[list[str]]:
    found = []
    for command in shell_commands(path):
        for i, token in enumerate(command):
            if token == "clip-adapter" or token.endswith("/clip-adapter"):
                found.append(command[i + 1 :])
                break
    return found


@pytest.mark.parametrize("path", doc_files(), ids=rel)
def test_cli_commands_in_docs_exist(path: Path) -> None:
    problems = []
    for tokens in cli_commands(path):
        problems += [f"{p}: clip-adapter {' '.join(tokens)}" for p in check_cli_command(tokens)]
    assert not problems, f"{rel(path)}:\n" + "\n".join(problems)


def test_docs_show_commands() -> None:
    """The command check has something to check: the README's own walk-through is in it."""
    readme = [" ".join(t[:1]) for t in cli_commands(README)]
    assert {"validate", "train", "eval", "predict", "serve"} <= set(readme)
    assert sum(len(cli_commands(p)) for p in doc_files()) > 50


def inline_cli_commands(path: Path) -> list[list[str]]:
    """``clip-adapter ...`` written as inline code in the prose (one line each)."""
    prose, _ = split_fences(path.read_text(encoding="utf-8"))
    found = []
    for line in prose:
        for _, code in INLINE_CODE.findall(line):
            code = code.strip()
            if code.startswith("clip-adapter "):
                found.append([w.strip("[]") for w in shlex.split(code)[1:]])
    return found


@pytest.mark.parametrize("path", doc_files(), ids=rel)
def test_inline_cli_commands_exist(path: Path) -> None:
    problems = []
    for tokens in inline_cli_commands(path):
        problems += [f"{p}: clip-adapter {' '.join(tokens)}" for p in check_cli_command(tokens)]
    assert not problems, f"{rel(path)}:\n" + "\n".join(problems)


def test_command_checker_catches_mistakes() -> None:
    assert check_cli_command(["train", "--data", "photos", "--shots", "16"]) == []
    assert check_cli_command(["toy", "dataset", "--task", "color", "--out", "x"]) == []
    assert check_cli_command(["trian", "--data", "photos"])
    assert check_cli_command(["train", "--no-such-option", "1"])
    assert check_cli_command(["toy", "no-such-subcommand"])
    assert check_cli_command(["toy"])


@pytest.mark.parametrize("path", doc_files(), ids=rel)
def test_scripts_in_docs_exist(path: Path) -> None:
    missing = []
    for command in shell_commands(path):
        for i, token in enumerate(command[:-1]):
            if token in ("python", "python3", "bash", "sh") and re.match(r"^(benchmarks|scripts)/", command[i + 1]):
                if not (ROOT / command[i + 1]).is_file():
                    missing.append(command[i + 1])
    assert not missing, f"{rel(path)}: no such script: {missing}"
