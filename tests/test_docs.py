"""Every ```python block of every docs/*.md page runs, so the user guide cannot rot.

Blocks of one page run in order in one namespace; each page gets a fresh namespace and a
fresh working directory. A block preceded by the HTML comment ``<!-- no-test -->`` is
skipped (only for code that cannot run here, such as Android or multi-GPU code).
"""

import pathlib
import re

import pytest

from tf_qnets.keras2.backend import keras

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
NO_TEST = "<!-- no-test -->"
_FENCE = re.compile(r"^```(\S*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def python_blocks(text):
    """``[(line_number, code)]`` of the ```python blocks not marked ``<!-- no-test -->``."""
    blocks = []
    for match in _FENCE.finditer(text):
        if match.group(1) != "python":
            continue
        before = text[:match.start()].rstrip().splitlines()
        if before and before[-1].strip() == NO_TEST:
            continue
        blocks.append((text.count("\n", 0, match.start()) + 1, match.group(2)))
    return blocks


def _pages():
    return sorted(DOCS.glob("*.md"))


def test_the_guide_pages_of_this_package_exist():
    names = {page.name for page in _pages()}
    assert {"index.md", "quantize.md", "train.md"} <= names


def test_block_parser_skips_other_languages_and_marked_blocks():
    text = ("intro\n```python\na = 1\n```\n```java\nint b;\n```\n"
            "<!-- no-test -->\n```python\nraise SystemExit\n```\n```python\nc = a\n```\n")
    assert python_blocks(text) == [(2, "a = 1\n"), (12, "c = a\n")]


@pytest.mark.parametrize("page", _pages(), ids=lambda page: page.name)
def test_python_blocks_of_the_page_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    keras.backend.clear_session()
    namespace = {"__name__": f"docs_{page.stem}"}
    for line, code in python_blocks(page.read_text(encoding="utf-8")):
        try:
            exec(compile(code, f"{page.name}:{line}", "exec"), namespace)
        except Exception as error:  # re-raised with the page and line that failed
            raise AssertionError(
                f"{page.name}, code block at line {line} failed: "
                f"{type(error).__name__}: {error}") from error
