"""Switchboard: real-time WebSocket fan-out for FastAPI, scaled out over Redis."""

__version__ = "0.1.0"
