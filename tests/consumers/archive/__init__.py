"""Tests of the archive consumer (consumers/archive/) and `snoopbus query`."""
