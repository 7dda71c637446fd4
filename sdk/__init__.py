"""The browser SDK, ``abacus.js``, shipped as package data: ingest serves the file from here, so a
built wheel serves the same bytes as a checkout (``ingest/sdk_routes.py``)."""
