"""The read-only analyst role of a ClickHouse server deployment, applied by `abacus migrate`.

chDB has no users (one process, one engine), so there analysts go through `POST /api/v1/sql`;
on a server they may also connect directly, as the user ``abacus_analyst``: SELECT on
``abacus.*`` only, ``readonly = 1`` and the same time, row and memory limits as the API, fixed
by a settings profile that the user cannot change.
"""

from __future__ import annotations

import hashlib
import logging

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

log = logging.getLogger(__name__)
ROLE = "abacus_readonly"
USER = "abacus_analyst"
PROFILE = "abacus_readonly_limits"


def analyst_role_sql(password: str | None, max_execution_s: int, max_result_rows: int, max_memory_bytes: int) -> list[str]:
    """Idempotent statements: a rerun updates the limits (and the password, when given)."""
    statements = [
        f"CREATE ROLE IF NOT EXISTS {ROLE}",
        f"REVOKE ALL ON *.* FROM {ROLE}",
        f"GRANT SELECT ON abacus.* TO {ROLE}",
        f"CREATE SETTINGS PROFILE OR REPLACE {PROFILE} SETTINGS "
        f"readonly = 1 READONLY, max_execution_time = {int(max_execution_s)} READONLY, "
        f"max_result_rows = {int(max_result_rows)} READONLY, result_overflow_mode = 'throw' READONLY, "
        f"max_memory_usage = {int(max_memory_bytes)} READONLY TO {ROLE}",
    ]
    if password:
        # The hash, not the password, goes over the wire and into the server's query log.
        digest = hashlib.sha256(password.encode()).hexdigest()
        statements += [
            f"CREATE USER IF NOT EXISTS {USER} IDENTIFIED WITH sha256_hash BY '{digest}'",
            f"ALTER USER {USER} IDENTIFIED WITH sha256_hash BY '{digest}'",
            f"GRANT {ROLE} TO {USER}",
            f"ALTER USER {USER} DEFAULT ROLE {ROLE}",
        ]
    return statements


def apply_analyst_role(client: Client, statements: list[str]) -> bool:
    """Apply them; a server whose migrating user may not manage access (``access_management``
    off) keeps its schema migrated and gets a warning naming what to run by hand."""
    try:
        for statement in statements:
            client.command(statement)
    except ClickHouseError as exc:
        log.warning(
            "could not create the read-only analyst role (%s); the migrating user needs access_management, "
            "or run these as an administrator: %s",
            str(exc).strip().split("\n", 1)[0],
            "; ".join(s if "IDENTIFIED" not in s else s.split(" IDENTIFIED")[0] + " IDENTIFIED …" for s in statements),
        )
        return False
    return True
