"""snoopbus's application layer: the `snoopbus` command itself and `snoopbus up`."""
