"""One-way streams over plain HTTP: Server-Sent Events (``/sse``) and NDJSON (``/stream``)."""
