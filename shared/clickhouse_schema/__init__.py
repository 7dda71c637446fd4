"""The ClickHouse schema as numbered SQL migrations (``NNNN_name.sql``), shipped inside the
package and read through ``importlib.resources`` (shared/clickhouse.py), so an installed wheel
migrates like a checkout does. Files are never edited once released: a change is a new file."""
