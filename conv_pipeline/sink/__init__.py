"""sink stage."""
