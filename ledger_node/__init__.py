"""micromine."""
