from meshline_pipelines.ledger.store import Ledger, StoreOutcome

__all__ = ["Ledger", "StoreOutcome"]
