"""The README's usage example runs as written, and its two commands are the Makefile's."""

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_opens_with_the_two_commands():
    first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)


@pytest.mark.slow
def test_usage_example_runs(tmp_path):
    code = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    assert len(code.strip().splitlines()) <= 20
    script = tmp_path / "example.py"
    script.write_text(code)
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=900, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "frechet_distance" in proc.stdout


@pytest.mark.slow
def test_eval_loop_example_runs_without_x64(tmp_path):
    """The README's eval-loop block: fixed-shape jitted step, padded last batch, one collection,
    no process-wide x64 (neither example touches it)."""
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert not any("enable_x64" in block for block in blocks[:2])
    code = next(b for b in blocks if "GenerativeMetrics" in b)
    script = tmp_path / "eval_loop.py"
    script.write_text(code)
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=900, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for key in ("frechet_distance", "kid_mean", "inception_score_mean", "coverage"):
        assert key in proc.stdout
    assert "nan" not in proc.stdout.lower()
