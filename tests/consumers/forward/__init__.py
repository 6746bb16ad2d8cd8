"""Tests of the forward consumer (consumers/forward/): sinks and their receivers."""
