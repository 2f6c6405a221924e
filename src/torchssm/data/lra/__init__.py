"""lra package."""
