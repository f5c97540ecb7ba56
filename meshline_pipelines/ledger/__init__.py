from meshline_pipelines.ledger.store import Ledger, StoreOutcome, Watermark

__all__ = ["Ledger", "StoreOutcome", "Watermark"]
