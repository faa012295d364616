"""``python -m held_decoding_support ARGS``: the predictor (``python -m kubeloop.serving
ARGS``) with the JSON decoding of large bodies held at a barrier, for tests only.

Every ``json.loads`` / ``orjson.loads`` of more than ``KUBELOOP_TEST_HOLD_BYTES``
bytes (KServe's decoding of a v1 body, FastAPI's of a v2 one) touches
``$KUBELOOP_TEST_BARRIER/decoding`` and waits until ``.../release`` exists (at
most a minute). While one is held, a test can see whether the server still
answers anything else: it does only if decoding runs off its event loop.
"""

from __future__ import annotations

import json
import os
import runpy
import time
from pathlib import Path

import orjson

BARRIER = Path(os.environ["KUBELOOP_TEST_BARRIER"])
HOLD_BYTES = int(os.environ.get("KUBELOOP_TEST_HOLD_BYTES", "1000000"))


def _held(real):
    def loads(data, *args, **kwargs):
        if isinstance(data, (bytes, bytearray, memoryview, str)) and len(data) > HOLD_BYTES:
            (BARRIER / "decoding").touch()
            deadline = time.monotonic() + 60
            while not (BARRIER / "release").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        return real(data, *args, **kwargs)

    return loads


orjson.loads = _held(orjson.loads)
json.loads = _held(json.loads)
runpy.run_module("kubeloop.serving", run_name="__main__", alter_sys=True)
