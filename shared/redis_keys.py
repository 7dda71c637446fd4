"""Names of every Redis key Abacus uses, in one place."""

REGISTRY_SNAPSHOT = "abacus:registry:snapshot"
REGISTRY_GENERATION = "abacus:registry:generation"
REGISTRY_LOCK = "abacus:registry:lock"


def inflight_batch(consumer: str) -> str:
    """Size of the batch a consumer was inserting, so after a restart it re-forms the same batch."""
    return f"abacus:worker:inflight:{consumer}"
