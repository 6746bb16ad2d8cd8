"""The fsnotify deep-hook program: signature from BTF, compile and load without attach.

On the development machine kprobes are compiled out and fentry is refused
with EPERM: the kprobe variant must still compile and pass the verifier
(BPF_PROG_TYPE_KPROBE loads without CONFIG_KPROBES; only attaching needs
it), and the fentry refusal is recorded as the kernel worded it.
"""

from __future__ import annotations

import pytest

from snoopbus.collector import fsnotify
from snoopbus.collector.capabilities import Check, choose_hooks

pytestmark = pytest.mark.kernel


def test_cookie_is_the_seventh_argument() -> None:
    assert fsnotify.params() == fsnotify.EXPECTED_PARAMS


def test_kprobe_variant_compiles_and_verifies_without_attaching() -> None:
    result = fsnotify.trial_load("kprobe")
    assert result.compiled and result.loaded, result.detail
    assert "not attached" in result.detail


def test_fentry_variant_compiles_and_its_load_is_what_the_kernel_allows() -> None:
    result = fsnotify.trial_load("fentry")
    assert result.compiled, result.detail
    if not result.loaded:  # measured here: EPERM for every BPF_PROG_TYPE_TRACING load
        assert "Operation not permitted" in result.detail


def test_doctor_shows_the_choice_and_the_program() -> None:
    program = Check("fsnotify_program", True, "kprobe: compiled and verified")
    plan = choose_hooks([Check("kprobe", False, "no kprobes"), Check("fentry", False, "EPERM"),
                         program])
    assert plan.fsnotify.hook is None
    assert "program: kprobe: compiled and verified" in plan.fsnotify.reason
    plan = choose_hooks([Check("kprobe", True, "ok"), program])
    assert plan.fsnotify.hook == "kprobe:fsnotify"
