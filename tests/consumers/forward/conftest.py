"""Fixtures of the forward tests."""

from __future__ import annotations

import os

import pytest

from tests.support.syslog import RSYSLOGD


@pytest.fixture
def rsyslogd_installed() -> None:
    """What tests/support/syslog.needs_rsyslog asks for."""
    assert os.path.exists(RSYSLOGD), "rsyslogd not installed: apt-get install rsyslog"
