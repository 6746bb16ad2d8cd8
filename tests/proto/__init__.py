"""Tests of the wire contract (proto/): schema, codec, subjects, ids, auth, stream limits."""
