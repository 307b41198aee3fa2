"""benchmarks/run_all.py: rerunning some scripts keeps the other scripts' rows."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run_all():
    spec = importlib.util.spec_from_file_location("run_all", ROOT / "benchmarks" / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_previous_rows_keeps_only_the_scripts_not_rerun(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text(
        "# Benchmark results\n\n"
        "| script | benchmark | ours (s) | reference (s) | ratio | machine | date |\n"
        "|---|---|---|---|---|---|---|\n"
        "| kid | kid_d2048 | 0.1 | 1 | 10 | m | d1 |\n"
        "| losses | contrastive_b256 | 0.2 | 1 | 5 | m | d1 |\n"
        "| losses | contrastive_b1024 | 0.4 | 2 | 5 | m | d1 |\n"
        "\n## Notes\n\n- `x.py`: timed out\n"
    )
    kept = _run_all().previous_rows(results, {"losses"})
    assert kept == ["| kid | kid_d2048 | 0.1 | 1 | 10 | m | d1 |"]


def test_previous_rows_without_a_results_file_is_empty(tmp_path):
    assert _run_all().previous_rows(tmp_path / "missing.md", {"kid"}) == []
