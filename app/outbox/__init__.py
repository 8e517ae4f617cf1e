"""The transactional outbox's relay: committed ``switchboard_outbox`` rows, published exactly once.

``queries`` holds the SQL (the table's DDL ships with switchboard-client and as
deploy/outbox/0001_switchboard_outbox.sql), ``claim`` one claiming transaction, ``relay`` the
background loop the lifespan starts when SWITCHBOARD_OUTBOX_URL is set. docs/outbox.md.
"""
