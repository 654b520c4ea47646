"""The device runner imported in-process, for host-side evaluation of artifacts.

Accuracy on thousands of images is run on the host through the very loader the device
uses (runtimes/runner.py), so the host never has a second way of opening an artifact.
"""
from __future__ import annotations

import functools
import importlib.util
from types import ModuleType

from edgevit import resources


@functools.lru_cache(maxsize=1)
def runner_module() -> ModuleType:
    path = resources.runner_script()
    spec = importlib.util.spec_from_file_location("edgevit_device_runner", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    module.load_session_modules()  # runtimes that are not built in (session_<runtime>.py beside it)
    return module
