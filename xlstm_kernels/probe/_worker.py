"""Child process of an isolated probe: reads one JSON request per line, compiles, answers on stdout.

Once its imports are done it says ``@@ready``; each answer is one line ``@@probe {json}``; anything
else the compiler prints is ignored by the parent. The parent bounds start-up by
``probe_startup_timeout_s`` and every request by ``compile_timeout_s`` (counted from the request, so
importing torch never eats a compile's budget) and kills this process (group) on a hang.
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    """Serve compile attempts until stdin closes."""
    from xlstm_kernels.probe.attempt import compile_and_scan
    from xlstm_kernels.probe.runners import key_from_dict

    sys.stdout.write("@@ready\n")
    sys.stdout.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        attempt = compile_and_scan(key_from_dict(req["key"]), req.get("max_buffers"))
        sys.stdout.write("@@probe " + json.dumps(attempt.to_dict()) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
