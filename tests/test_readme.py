"""The README's Python API example must run as written."""
import doctest
import re
import shlex
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def section(text: str, title: str) -> str:
    """The text under the first heading that mentions ``title``, up to the next heading of the
    same or a higher level ("" when there is no such heading)."""
    lines = text.splitlines()
    start = level = None
    for i, line in enumerate(lines):
        m = re.match(r"(#+)\s", line)
        if m and start is None and title.lower() in line.lower():
            start, level = i + 1, len(m.group(1))
        elif m and start is not None and len(m.group(1)) <= level:
            return "\n".join(lines[start:i]) + "\n"
    return "" if start is None else "\n".join(lines[start:]) + "\n"


def blocks(text: str, lang: str = "python") -> list[str]:
    return re.findall(rf"^```{lang}[^\n]*\n(.*?)^```", text, flags=re.S | re.M)


def python_api_blocks(text: str) -> list[str]:
    """The ```python blocks under the first heading that mentions "Python API", up to the next
    heading of the same or a higher level."""
    return blocks(section(text, "python api"))


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


def _shell(block: str) -> list[list[str]]:
    """The ``ckptkd ...`` commands of a ```bash block, as argument lists (comments dropped)."""
    return [shlex.split(line, comments=True)[1:] for line in block.splitlines() if line.startswith("ckptkd ")]


def test_readme_own_training_loop_and_export_run_as_written(tmp_path, monkeypatch, capsys):
    """The plain loop (under 15 lines), the commands after it, the Lightning version and the
    export command: each as the README writes it."""
    from ckptkd import Run
    from ckptkd.cli import main

    text = README.read_text()
    own, lightning = section(text, "use your own training loop"), section(text, "with pytorch lightning")
    plain = blocks(own.split(lightning)[0])
    assert len(plain) == 1 and len(plain[0].strip().splitlines()) < 15, "the plain loop must stay under 15 lines"
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme_example"}
    exec(compile(plain[0], str(README), "exec"), namespace)
    assert [c.epoch for c in Run("runs/my-teacher").checkpoints()] == list(range(1, 7))
    assert "val_acc" in Run("runs/my-teacher").checkpoints()[-1].meta
    commands = [argv for b in blocks(own, "bash") for argv in _shell(b)]
    assert [argv[0] for argv in commands] == ["select", "distill"]
    for argv in commands:
        assert main(argv + ["--quiet"]) == 0, argv
    export = [argv for b in blocks(section(text, "deploy the student"), "bash") for argv in _shell(b)]
    assert [argv[0] for argv in export] == ["export"]
    pytest.importorskip("onnxruntime")
    capsys.readouterr()
    assert main(export[0]) == 0
    assert "compression:" in capsys.readouterr().out
    pytest.importorskip("lightning")
    exec(compile("\n".join(blocks(lightning)), str(README), "exec"), namespace)
    assert [c.epoch for c in Run("runs/my-lightning-teacher").checkpoints()] == [2, 4, 6]
