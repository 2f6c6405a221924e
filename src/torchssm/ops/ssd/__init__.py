"""ssd package."""
