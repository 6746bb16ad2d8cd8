"""Tests of the alert consumer (consumers/alert/): Sigma rules, matching, correlation, reload."""
