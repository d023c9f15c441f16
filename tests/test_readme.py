"""The README's Python API example must run as written."""
import doctest
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def python_api_blocks(text: str) -> list[str]:
    """The ```python blocks under the first heading that mentions "Python API", up to the next
    heading of the same or a higher level."""
    lines = text.splitlines()
    start = level = None
    for i, line in enumerate(lines):
        m = re.match(r"(#+)\s", line)
        if m and start is None and "python api" in line.lower():
            start, level = i + 1, len(m.group(1))
        elif m and start is not None and len(m.group(1)) <= level:
            lines = lines[start:i]
            break
    else:
        if start is None:
            return []
        lines = lines[start:]
    return re.findall(r"^```python[^\n]*\n(.*?)^```", "\n".join(lines) + "\n", flags=re.S | re.M)


def as_source(block: str) -> str:
    """Plain code as is; a ``>>>`` session becomes the code it types."""
    if not re.search(r"^\s*>>> ", block, flags=re.M):
        return block
    return "".join(example.source for example in doctest.DocTestParser().get_examples(block))


def test_block_finder_reads_only_the_python_api_section():
    text = "# x\n```python\nskip\n```\n## Python API\n```python\na = 1\n```\ntext\n```python\nb = 2\n```\n## Next\n```python\nno\n```\n"
    assert python_api_blocks(text) == ["a = 1\n", "b = 2\n"]
    assert as_source(">>> c = 3\n>>> c\n3\n") == "c = 3\nc\n"


def test_readme_python_api_example_runs(tmp_path, monkeypatch):
    if not README.exists():
        pytest.skip("README.md does not exist yet")
    blocks = python_api_blocks(README.read_text())
    if not blocks:
        pytest.skip('README.md has no ```python block under a "Python API" heading yet')
    monkeypatch.chdir(tmp_path)  # whatever the example writes lands in a temporary folder
    namespace = {"__name__": "readme_example"}
    exec(compile("\n".join(as_source(b) for b in blocks), str(README), "exec"), namespace)
