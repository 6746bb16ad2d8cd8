"""Tests of the consumers (consumers/): runtime, rename pairer, tail, fuzzing, bus trust."""
