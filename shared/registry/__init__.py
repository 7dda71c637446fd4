"""The experiment registry: definitions and site settings, durable in ClickHouse, cached in Redis."""
