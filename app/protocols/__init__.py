"""Wire protocols beside ``/ws`` (app/routes/ws.py), each a thin adapter over app/session.py."""
