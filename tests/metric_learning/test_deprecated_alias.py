"""``calibrax.learning`` stays importable for one release, as a warning alias of tier 3."""

import importlib
import subprocess
import sys

import calibrax.metric_learning as ml


def test_old_name_warns_and_gives_the_same_objects():
    code = (
        "import warnings\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import calibrax.learning as old\n"
        "    from calibrax.learning.losses import TripletMarginLoss\n"
        "    from calibrax.learning.miners.batch_hard_miner import BatchHardMiner\n"
        "import calibrax.metric_learning as new\n"
        "assert old.TripletMarginLoss is new.TripletMarginLoss is TripletMarginLoss\n"
        "assert BatchHardMiner is new.BatchHardMiner\n"
        "assert sorted(old.__all__) == sorted(new.__all__)\n"
        "messages = [str(w.message) for w in caught if w.category is DeprecationWarning]\n"
        "assert any('import calibrax.metric_learning instead' in m for m in messages), messages\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_top_level_package_exposes_the_new_name_only():
    calibrax = importlib.import_module("calibrax")
    assert calibrax.metric_learning is ml
    assert "metric_learning" in calibrax.__all__
    assert "learning" not in calibrax.__all__
