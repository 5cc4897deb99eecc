"""Network definitions (TF-slim)."""
