"""Paper tables rebuilt from stored per-run results only (no model runs)."""
