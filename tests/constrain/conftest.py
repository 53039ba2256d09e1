"""Fixtures of the ``constrain`` tests; makes the shared helpers (``constrain_testing``) importable.

The project runs pytest with ``--import-mode=importlib``, which does not put test folders on
``sys.path``; the helpers live next to the tests they serve.
"""

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
