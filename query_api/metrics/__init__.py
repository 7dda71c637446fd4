"""Metric definitions beyond the conversion rate: the SQL for their sufficient statistics and its rows."""
