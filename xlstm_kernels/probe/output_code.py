"""Collect the output code Inductor generates, without resetting Dynamo."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


_CAPTURE_LOCK = threading.Lock()


@contextlib.contextmanager
def capture_output_code() -> Iterator[list[str]]:
    """Collect the output code of every graph Inductor compiles (or loads from its cache) meanwhile.

    Unlike ``torch._inductor.utils.run_and_get_code`` this does not reset Dynamo, so compiled kernels
    elsewhere in the process stay compiled.
    """
    from torch._inductor.graph import GraphLowering

    codes: list[str] = []
    with _CAPTURE_LOCK:
        previous = GraphLowering.save_output_code

        def save(code: str) -> None:
            codes.append(code)
            if previous is not None:
                previous(code)

        GraphLowering.save_output_code = save  # type: ignore[assignment]
        try:
            yield codes
        finally:
            GraphLowering.save_output_code = previous  # type: ignore[assignment]
