"""Tests of the collector (collector/): probes, records, events, publisher, spill, doctor."""
