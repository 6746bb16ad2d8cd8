"""Fewer garbage collections for a consumer working through a backlog.

A fetched batch makes thousands of short-lived objects; with the default
gen-0 threshold (700) each full pass also walks everything alive for good
(modules, the alerter's compiled rules, the archiver's open window): a third
of the archive's write path at 10M events, measured. Events hold no cycles,
so collecting less often only delays cycle garbage. Process-wide: consumers
embedded in another program (tests) leave it off.
"""

from __future__ import annotations

import gc


def tune_gc() -> None:
    gc.freeze()  # what exists now (modules, rules): never garbage, never walked again
    low, mid, high = gc.get_threshold()
    gc.set_threshold(max(low, 10_000), max(mid, 10), max(high, 10))


def refreeze() -> None:
    """After replacing long-lived objects (the alerter's rules on reload): the old
    ones were frozen, so their cycles would never be collected; collect them,
    then freeze what lives now."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
