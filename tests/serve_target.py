"""A trivial flow for ``serve`` tests that never reach a scheduled run (``test_cli.py``'s unreachable-server
case); the real deployment is served end to end in ``test_serve.py``."""

from __future__ import annotations

import os
from pathlib import Path

from prefect import flow


@flow(name="touch")
def touch_flow() -> str:
    """Append this process's pid to the file named by XLSTM_TEST_TOUCH_FILE."""
    path = Path(os.environ["XLSTM_TEST_TOUCH_FILE"])
    with path.open("a") as fh:
        fh.write(f"{os.getpid()}\n")
    return str(path)
