"""Every filter configuration changes the compiled program (-D switches), and
each must pass the verifier: a walk plus a name scan in one program once
exceeded its budget in just one combination."""

from __future__ import annotations

import itertools

import pytest

from snoopbus.collector import probes
from snoopbus.collector.filters import FilterConfig

pytestmark = pytest.mark.kernel

PATHS = {
    "no paths": {},
    "exclude": {"exclude_paths": ("/tmp/x",)},
    "include+exclude": {"include_paths": ("/tmp",), "exclude_paths": ("/tmp/x",)},
}


@pytest.mark.parametrize(
    ("paths", "failed", "opens"),
    list(itertools.product(PATHS, (False, True), (False, True))),
)
def test_probes_load_in_every_configuration(paths: str, failed: bool, opens: bool) -> None:
    task = {"exclude_comms": ("x",), "exclude_uids": (4242,), "exclude_cgroups": (1,)}
    cfg = FilterConfig(include_failed=failed, open_events=opens, **PATHS[paths],  # type: ignore[arg-type]
                       **(task if failed else {}))  # type: ignore[arg-type]
    loaded = probes.load(probes.ProbeLimits(), cfg)
    loaded.close()
