"""Regulations (Segment's regulation types): suppress, unsuppress, delete and
suppress_with_delete a person, given by one key and resolved to their whole identity profile.

`service.create` does the gateway's part in one transaction (suppression rows, deleted rows,
deletion requests queued for the worker) and answers at once; a deletion's destination part
runs through the delivery worker, and `service.finish_due` (a worker tick) closes the
regulation once every destination answered: it keeps the per-destination result and erases the
keys. What remains is the record that the regulation happened — its id, type, times and counts
— never the data.

Modules: `service` (create, read, close, wait), `keys` (subject, profile, key hashes),
`suppression` (ingest's check, suppress and unsuppress), `deletion` (rows, deletion
deliveries, the adapter call).
"""
