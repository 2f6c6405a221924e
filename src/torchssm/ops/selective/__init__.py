"""selective package."""
