"""The routes of the analyst and admin tools: SQL, exports and the dashboard, in one list so the
query API (and so `abacus serve`) mounts them with one line."""

from __future__ import annotations

from query_api.definition_routes import DEFINITION_ROUTES
from query_api.export_routes import EXPORT_ROUTES
from query_api.sql_routes import SQL_ROUTES
from query_api.ui import UI_ROUTES

ANALYST_TOOL_ROUTES = [*DEFINITION_ROUTES, *SQL_ROUTES, *EXPORT_ROUTES, *UI_ROUTES]
