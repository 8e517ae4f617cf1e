"""HTTP and WebSocket routes; each module is a thin adapter over the Hub."""
