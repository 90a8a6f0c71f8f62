"""Process-level CPU tuning: glibc's malloc thresholds."""

import ctypes.util
import platform

import pytest

from sdegen.runtime import tune_allocator


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_tune_allocator_takes_effect_on_glibc_and_is_idempotent():
    assert ctypes.util.find_library("c")
    assert tune_allocator() is True
    assert tune_allocator() is True


def test_tune_allocator_without_mallopt_reports_false(monkeypatch):
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: "/nonexistent/libc.so")
    assert tune_allocator() is False
