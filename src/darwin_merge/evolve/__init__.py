"""The evolutionary search over the 14-value genome (`darwin evolve`)."""
