"""The evolutionary search over the 14-value genome (`darwin evolve`)."""

from ..progress import narrator

say = narrator("evolve")  # the search's one-line messages on stderr
