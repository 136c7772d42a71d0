"""``hybridize.models`` is part of the public API: reachable as an attribute, imported lazily."""

from __future__ import annotations

import subprocess
import sys


def test_models_is_a_lazy_attribute_of_hybridize():
    code = (
        "import sys, hybridize\n"
        "assert 'hybridize.models' not in sys.modules, 'imported eagerly'\n"
        "m = hybridize.models\n"
        "import hybridize.models as direct\n"
        "assert m is direct and 'models' in hybridize.__all__\n"
        "assert m.create is hybridize.create_model\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
