"""Tests of the command and `up` (app/): cli, stack, packaging, extras, compose, docs."""
