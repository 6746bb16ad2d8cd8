"""The archive: every event and alert in Parquet, and `snoopbus query` over it.

- `archiver.Archiver`: the consumer (`snoopbus consume archive --dir PATH`).
- `columns`: the table schemas (the wire contract flattened) and non-UTF-8 text.
- `layout`: folders, file names, durable writes, temporaries.
- `writer`: the open window, commits, duplicate suppression.
- `retention`: age and size limits.
- `query`, `tree`, `render`, `query_cli`: reading it back.

pyarrow is imported by these modules: import them, not this package, where
start-up time matters.
"""
