"""Transformations: the operator's own Python functions reshaping events, per source (before
storing) and per destination (in the delivery worker). `config` loads and checks them, `run`
calls a chain with timing, `source` applies a source's chain at ingest, `preview` is the dry run
(`gateway transform test`, `POST /admin/v1/preview`, the console's event page)."""
