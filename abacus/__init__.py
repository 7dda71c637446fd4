"""The composition above the services: the `abacus` command, `abacus serve`'s one-process
assembly of ingest, worker and query API, and the embedded Valkey it runs beside chDB.

Layering (checked by the import-linter contract in pyproject.toml): `abacus` may import every
service and `jobs`; `jobs` may import the services; `ingest`, `worker` and `query_api` never import
each other; `shared` imports none of them.
"""
