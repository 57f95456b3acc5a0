"""``python -m aggregator``: the same as the ``aggregator`` console script."""

import os
import sys
from pathlib import Path

# `python -m` puts the working directory first on sys.path. There, the default data
# directory `storage/` (database_url: sqlite:///storage/...) would shadow the storage
# package, in this process and in the web processes it spawns.
if sys.path and sys.path[0] in ("", os.getcwd()):
    here = Path(sys.path[0] or ".")
    if not (here / "storage" / "__init__.py").exists():
        sys.path.pop(0)

from aggregator.cli import main  # noqa: E402

main()
