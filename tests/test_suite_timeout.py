"""A hung test fails on its own instead of running the whole CI job into its limit: the suite
runs under pytest-timeout (``timeout`` in pyproject.toml), a safety net, not a speed test."""
import subprocess
import sys
import textwrap


def test_the_suite_has_a_per_test_timeout(pytestconfig):
    assert float(pytestconfig.getini("timeout")) >= 300  # generous: slow CI machines must not trip it


def test_a_test_that_hangs_in_a_subprocess_is_failed_and_the_next_one_still_runs(tmp_path):
    (tmp_path / "test_hang.py").write_text(textwrap.dedent("""
        import subprocess, sys
        def test_hangs():
            subprocess.run([sys.executable, "-c", "import time; time.sleep(600)"])
        def test_after():
            pass
    """))
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "timeout=2",
                          str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert "1 failed, 1 passed" in out.stdout, out.stdout[-2000:]
    assert "Timeout" in out.stdout
