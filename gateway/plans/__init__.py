"""Tracking plans: Segment's plan formats read from a file (`load`), each rule compiled once
(`validate`), applied to a source's accepted messages before they are stored (`enforce`), and
every violation kept in a bounded, aggregated record (`record`)."""
