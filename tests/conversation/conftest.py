"""Fixtures for running one conversation through every adapter: their replay helpers on the path.

DSPy is imported here before any DSPy test folder's conftest may have run, so its disk cache goes
to a temporary folder and LiteLLM reads its bundled model cost map (no network).
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
if "DSPY_CACHEDIR" not in os.environ:
    os.environ["DSPY_CACHEDIR"] = tempfile.mkdtemp(prefix="convotel-conversation-dspy-")
    atexit.register(shutil.rmtree, os.environ["DSPY_CACHEDIR"], ignore_errors=True)

_TESTS = Path(__file__).resolve().parents[1]
for _folder in ("openai", "mistralai", "dspy"):  # openai_cassettes, mistral_cassettes, loopback
    if str(_TESTS / _folder) not in sys.path:
        sys.path.insert(0, str(_TESTS / _folder))
