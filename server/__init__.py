"""Partitur's HTTP server, command line and web UI (everything that speaks to users)."""
