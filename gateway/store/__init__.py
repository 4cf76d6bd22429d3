"""Storage: everything that knows the database's shape.

- db.py: engines (SQLite pragmas, psycopg 3), migrations, URL masking
- writer_lock.py: one writer at a time per SQLite file, across threads and processes
- models.py: the tables (SQLAlchemy Core) and how a value becomes an indexed key
- prepared.py: statements compiled once and run through the driver on the hot paths
- outbox.py: the delivery row, its states and the one guarded `transition`
- storage_state.py: one log line when storage fails and one when it is back
- copy.py: one database into another (`gateway copy`), resumable, verified
- upgrade.py: the pending revisions and whether older nodes survive them (`migrate --check`)
"""
