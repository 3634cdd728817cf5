"""reference models."""
