"""The store: one transaction function per user action, run with retries on a Backend."""
