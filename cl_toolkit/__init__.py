"""cltk: a contrastive-learning toolkit. Library first; ``cltk`` is a thin CLI over it."""

__version__ = "0.1.0"
