"""Feature extractor plugins (see base.py for the contract)."""
